"""The ETA `node submit --wait` shows: the splitter's estimate first, the measured rate
once tasks complete."""

from __future__ import annotations

import pytest

from cli.workflows import eta_seconds
from daemon.models import WorkflowCounts


def counts(total: int, completed: int = 0, running: int = 0) -> WorkflowCounts:
    return WorkflowCounts(total=total, completed=completed, running=running)


def test_before_any_task_completes_the_estimate_counts_waves_of_running_tasks() -> None:
    # 8 tasks, 2 running at a time, 10 s each: 4 waves, 3 s already gone.
    assert eta_seconds(counts(8, running=2), elapsed=3, estimated_per_task=10) == (37, True)


def test_once_tasks_complete_the_measured_rate_takes_over() -> None:
    eta = eta_seconds(counts(10, completed=5), elapsed=20, estimated_per_task=100)
    assert eta is not None
    assert eta[0] == pytest.approx(20.0)
    assert eta[1] is False


def test_without_estimate_or_completions_there_is_no_eta() -> None:
    assert eta_seconds(counts(4, running=2), elapsed=5, estimated_per_task=0) is None
    assert eta_seconds(counts(4, completed=4), elapsed=5, estimated_per_task=3) is None


def test_tasks_that_started_set_the_pace_not_those_held_for_a_slot() -> None:
    # 2 volunteers of one slot each: 2 run, 2 fetched ahead; 8 tasks of 10 s, 3 s gone.
    held = WorkflowCounts(total=8, running=2, fetching=2)
    assert eta_seconds(held, elapsed=3, estimated_per_task=10) == (37, True)


def test_before_any_task_starts_the_fetching_ones_stand_for_those_running() -> None:
    fetching = WorkflowCounts(total=8, fetching=2)
    assert eta_seconds(fetching, elapsed=3, estimated_per_task=10) == (37, True)
