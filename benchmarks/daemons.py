"""Starting real daemons for benchmarks, as child processes on loopback.

Every channel is mutual TLS: a coordinator makes the cluster's CA in its data dir, and any
other node joins with a token made through it (`join_token`, as `vcnode token create` on the
coordinator's host). A benchmark that calls a daemon itself presents the coordinator's local
admin credential (`admin_credential`), as the CLI on that host does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.datadir import read_address
from daemon.trust.credentials import ADMIN, Credential, tls_dir

# Long enough for any benchmark's run; the token is multi-use (one per cluster a run starts).
TOKEN_TTL = "2h"


def start_daemon(
    data_dir: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`node daemon` on `data_dir` with `args`; `env` adds to (or overrides) this process's
    environment."""
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    command = [sys.executable, "-m", "cli", "daemon", "--data-dir", str(data_dir), *args]
    environment = {**os.environ, **env} if env else None
    return subprocess.Popen(command, stdout=log, stderr=log, env=environment)


def wait_for_address(process: subprocess.Popen[bytes], data_dir: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon in {data_dir} exited with {process.returncode}")
        address = read_address(data_dir)
        if address:
            return address
        time.sleep(0.05)
    raise RuntimeError(f"daemon in {data_dir} did not serve within {timeout} s")


def join_token(coordinator_dir: Path, roles: str = "volunteer", vouched: bool = False) -> str:
    """A join token for `roles` (comma separated), any number of joins, made with the admin
    credential of the coordinator serving from `coordinator_dir`; `vouched`: volunteers
    joining with it are trusted with results from the start (`token create --vouched`)."""
    made = subprocess.run(
        [sys.executable, "-m", "cli", "token", "create", "--role", roles, "--ttl", TOKEN_TTL,
         "--data-dir", str(coordinator_dir), "--json", *(["--vouched"] if vouched else [])],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"could not make a join token: {made.stderr.strip()[-2000:]}")
    token: str = json.loads(made.stdout)["token"]
    return token


def admin_credential(coordinator_dir: Path) -> Credential:
    """The local admin credential the coordinator serving from `coordinator_dir` wrote."""
    credential = Credential.load(tls_dir(coordinator_dir), ADMIN)
    if credential is None:
        raise RuntimeError(f"no admin credential in {tls_dir(coordinator_dir)}")
    return credential


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`vcnode ARGS` as a person types it, with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(*args: str) -> Any:
    """`vcnode ARGS --json`, parsed; raises with its stderr when it fails."""
    result = cli(*args, "--json")
    if result.returncode != 0:
        raise RuntimeError(f"vcnode {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def completed(result: subprocess.CompletedProcess[str], expected: int) -> dict[str, Any]:
    """The reply of `vcnode submit --wait --json`; raises unless all `expected` tasks
    completed, naming a few that did not."""
    try:
        reply: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"node submit exited {result.returncode} without JSON: {result.stderr[-2000:]}"
        ) from None
    done = reply.get("counts", {}).get("completed")
    if result.returncode != 0 or reply.get("state") != "completed" or done != expected:
        bad = [t for t in reply.get("tasks", []) if t.get("state") != "completed"][:5]
        raise RuntimeError(
            f"workflow {reply.get('workflow_id')} ended {reply.get('state')!r} with "
            f"{done} of {expected} tasks completed (exit {result.returncode}); e.g. {bad}"
        )
    return reply
