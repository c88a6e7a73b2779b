"""idle_rss and idle_cpu: a volunteer daemon joined to a coordinator (with a join token, over
mutual TLS), doing nothing, for 30 s."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.daemons import join_token, start_daemon, stop, wait_for_address
from benchmarks.report import Figure

WINDOW_SECONDS = 30.0
SETTLE_SECONDS = 3.0


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-") as root:
        cluster = f"bench-{int(time.time())}"
        common = ["--listen", "127.0.0.1:0", "--cluster", cluster]
        coordinator = start_daemon(Path(root) / "coordinator", "--role", "coordinator", *common)
        volunteer = None
        try:
            wait_for_address(coordinator, Path(root) / "coordinator")
            token = join_token(Path(root) / "coordinator")
            volunteer = start_daemon(
                Path(root) / "volunteer", "--role", "volunteer", "--token", token, *common
            )
            wait_for_address(volunteer, Path(root) / "volunteer")
            process = psutil.Process(volunteer.pid)
            # Let start-up work (imports, registration, the Docker probe) finish first.
            time.sleep(SETTLE_SECONDS)
            before = process.cpu_times()
            started = time.monotonic()
            peak_rss = 0
            while (elapsed := time.monotonic() - started) < WINDOW_SECONDS:
                peak_rss = max(peak_rss, process.memory_info().rss)
                time.sleep(1.0)
            after = process.cpu_times()
        finally:
            if volunteer is not None:
                stop(volunteer)
            stop(coordinator)
    cpu_seconds = (after.user + after.system) - (before.user + before.system)
    return [
        Figure("idle_rss", peak_rss / 2**20, "MiB", "<=", 70),
        Figure("idle_cpu", 100 * cpu_seconds / elapsed, "%", "<=", 0.5),
    ]
