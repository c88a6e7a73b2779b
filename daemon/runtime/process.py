"""Tasks as plain processes, for volunteers without Docker whose owner opted in.

Unisolated: the task runs as the daemon's user and can read what that user can, so the
volunteer refuses this runtime unless its owner allows it, and says so wherever it shows
itself. Limits come from `prlimit` (util-linux) rather than a preexec hook: no Python may
run between fork and exec in a process that holds gRPC threads.

Paths: the task sees its directories as $VCNODE_INPUT and $VCNODE_OUTPUT; argv words that
start with /input or /output are rewritten to them, so one command serves both runtimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from daemon.runtime.spec import (
    ProgressCallback,
    RunResult,
    RunSpec,
    failure_for_exit,
    tail,
    watch_progress,
)

MIB = 1024 * 1024
# Memory limits an address space, which is larger than what a process touches.
ADDRESS_SPACE_HEADROOM_MB = 256


def rewrite_paths(word: str, input_dir: Path, output_dir: Path) -> str:
    for prefix, real in (("/input", input_dir), ("/output", output_dir)):
        if word == prefix or word.startswith(prefix + "/"):
            return str(real) + word[len(prefix) :]
    return word


class ProcessRuntime:
    name = "process"
    isolated = False

    def __init__(self, scratch_root: Path) -> None:
        self._scratch_root = scratch_root

    async def run(self, spec: RunSpec, on_progress: ProgressCallback) -> RunResult:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise RuntimeError("the process runtime needs prlimit (util-linux)")
        scratch = self._scratch_root / spec.run_id
        scratch.mkdir(parents=True, exist_ok=True)
        address_space = (spec.memory_mb + ADDRESS_SPACE_HEADROOM_MB) * MIB
        argv = [rewrite_paths(word, spec.input_dir, spec.output_dir) for word in spec.command]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
            "VCNODE_INPUT": str(spec.input_dir),
            "VCNODE_OUTPUT": str(spec.output_dir),
            **spec.env,
        }
        started_at = time.time()
        process = await asyncio.create_subprocess_exec(
            prlimit,
            f"--as={address_space}",
            f"--nproc={spec.pids_limit}",
            f"--cpu={int(spec.timeout_seconds) + 1}",
            "--",
            *argv,
            cwd=scratch,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills the tree
        )
        progress = asyncio.get_running_loop().create_task(
            watch_progress(spec.output_dir, on_progress)
        )
        failure = ""
        try:
            try:
                async with asyncio.timeout(spec.timeout_seconds):
                    stdout, stderr = await process.communicate()
            except TimeoutError:
                self._kill_group(process)
                stdout, stderr = await process.communicate()
                failure = f"timed out after {spec.timeout_seconds:g} s (killed)"
        except asyncio.CancelledError:
            self._kill_group(process)
            await asyncio.shield(process.wait())
            raise
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            shutil.rmtree(scratch, ignore_errors=True)
        exit_code = process.returncode
        if not failure and exit_code is not None and exit_code < 0:
            failure = f"killed by signal {signal.Signals(-exit_code).name}"
        if not failure and b"MemoryError" in stderr:
            failure = f"out of memory: needed more than its {spec.memory_mb} MiB limit"
        return RunResult(
            exit_code=exit_code,
            failure=failure or failure_for_exit(exit_code, stderr),
            stdout_tail=tail(stdout),
            stderr_tail=tail(stderr),
            started_at=started_at,
            finished_at=time.time(),
        )

    @staticmethod
    def _kill_group(process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
