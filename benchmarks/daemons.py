"""Starting real daemons for benchmarks, as child processes on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.datadir import read_address


def start_daemon(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    command = [sys.executable, "-m", "cli", "daemon", "--data-dir", str(data_dir), *args]
    return subprocess.Popen(command, stdout=log, stderr=log)


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


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
