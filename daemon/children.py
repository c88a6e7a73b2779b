"""Short-lived Python children that do a memory-hungry job and give the memory back when
they exit (making the join key with `cryptography`, asking Docker with aiodocker): a
long-running process never returns to the OS what its imports took."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

# Where `daemon` is importable from, for a child started from any working directory.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


async def start_module(module: str, *arguments: str, stdin: int) -> asyncio.subprocess.Process:
    """`python -m MODULE ARGUMENTS` with this interpreter, its stdout and stderr piped;
    raises OSError when it cannot be started."""
    path = os.environ.get("PYTHONPATH")
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_SOURCE_ROOT), *([path] if path else [])]),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *arguments,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
