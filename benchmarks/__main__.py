"""Runs every benchmark, or the one named: `python -m benchmarks [NAME]`."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import (
    dashboard,
    discovery,
    idle,
    owner_pause,
    scheduler,
    task_overhead,
    tls_handshake,
    transfer,
    validation,
)
from benchmarks.report import Figure

# figure name -> the benchmark that measures it (one run may measure several figures)
BENCHMARKS: dict[str, Callable[[], list[Figure]]] = {
    "idle_rss": idle.run,
    "idle_cpu": idle.run,
    "discovery_latency": discovery.run,
    "transfer_download_ratio": transfer.run,
    "transfer_upload_ratio": transfer.run,
    "transfer_peak_rss_server": transfer.run,
    "transfer_peak_rss_client": transfer.run,
    "task_overhead_ratio": task_overhead.run,
    "scheduler_scaling_ratio": scheduler.run,
    "scheduler_results_per_second": scheduler.run,
    "workflow_run_scaling_ratio": scheduler.run,
    "tls_handshake_ms": tls_handshake.run,
    "tls_handshake_warm_call_ms": tls_handshake.run,
    "validation_overhead_ratio": validation.run_overhead,
    "cheater_caught_tasks": validation.run_cheater,
    "cheater_vouched_tasks": validation.run_cheater,
    "cheater_vouched_forged_accepted": validation.run_cheater,
    "dashboard_update_latency": dashboard.run,
    "dashboard_update_latency_p90": dashboard.run,
    "dashboard_update_ratio": dashboard.run,
    "owner_pause_latency": owner_pause.run,
    "owner_pause_ratio": owner_pause.run,
    "owner_resume_latency": owner_pause.run,
}


def main(argv: list[str]) -> int:
    wanted = argv[0] if argv else None
    if wanted is not None and wanted not in BENCHMARKS:
        print(f"unknown benchmark {wanted!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    runs = [BENCHMARKS[wanted]] if wanted else list(dict.fromkeys(BENCHMARKS.values()))
    failed = False
    for run in runs:
        for figure in run():
            if wanted is None or figure.name == wanted:
                print(figure.line(), flush=True)
                failed |= not figure.passed
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
