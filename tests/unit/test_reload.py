"""What a configuration re-read applies at once and what waits for a restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from daemon.config import NodeConfig
from daemon.models import OwnerLimits
from daemon.reload import Reloaded, compare

RUNNING = NodeConfig(roles=("volunteer",), data_dir=Path("/d"), listen="0.0.0.0:0")


def test_limits_the_grace_and_the_log_level_apply_at_once() -> None:
    read = replace(
        RUNNING,
        limits=OwnerLimits(max_cpus=2, max_concurrent_tasks=3),
        pause_grace_seconds=60.0,
        log_level="DEBUG",
    )
    now, reloaded = compare(RUNNING, read)
    assert now == read
    assert reloaded == Reloaded(
        applied=(
            "pause_grace_seconds",
            "limits.max_cpus",
            "limits.max_concurrent_tasks",
            "log_level",
        )
    )
    assert reloaded.describe() == (
        "applied pause_grace_seconds, limits.max_cpus, limits.max_concurrent_tasks, log_level"
    )


def test_what_the_daemon_opened_at_its_start_waits_for_the_next_one() -> None:
    read = replace(RUNNING, listen="0.0.0.0:7000", cluster="lab", limits=OwnerLimits(max_cpus=1))
    now, reloaded = compare(RUNNING, read)
    assert now == replace(RUNNING, limits=OwnerLimits(max_cpus=1)), "only the live part"
    assert reloaded.needs_restart == ("listen", "cluster")
    assert reloaded.describe() == (
        "applied limits.max_cpus; listen, cluster changed: applied at the next start"
    )


def test_a_reread_that_changes_nothing_says_so_and_the_token_is_never_news() -> None:
    now, reloaded = compare(RUNNING, replace(RUNNING, token="used-once"))
    assert now == RUNNING
    assert reloaded.describe() == "the configuration is unchanged"


def test_allowing_the_process_runtime_waits_for_a_restart_the_rest_of_the_limits_do_not() -> None:
    read = replace(RUNNING, limits=OwnerLimits(allow_process_runtime=True, max_cpus=2))
    now, reloaded = compare(RUNNING, read)
    assert now.limits == OwnerLimits(max_cpus=2), "the runtime was chosen at the start"
    assert reloaded == Reloaded(
        applied=("limits.max_cpus",), needs_restart=("limits.allow_process_runtime",)
    )
