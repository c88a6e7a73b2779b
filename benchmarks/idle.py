"""idle_rss and idle_cpu: a volunteer daemon joined to a coordinator (with a join token, over
mutual TLS), doing nothing, for 30 s.

IDLE_VOLUNTEER_ARGS adds daemon flags to the volunteer alone, e.g. the owner's rules:
`IDLE_VOLUNTEER_ARGS="--schedule-hours 08:00-20:00 --schedule-idle-minutes 5
--schedule-max-other-load 50" make bench BENCH=idle_rss`."""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.daemons import join_token, start_daemon, stop, wait_for_address
from benchmarks.report import Figure

WINDOW_SECONDS = 30.0
VOLUNTEER_ARGS_VARIABLE = "IDLE_VOLUNTEER_ARGS"
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
            extra = shlex.split(os.environ.get(VOLUNTEER_ARGS_VARIABLE, ""))
            volunteer = start_daemon(
                Path(root) / "volunteer", "--role", "volunteer", "--token", token, *common, *extra
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
