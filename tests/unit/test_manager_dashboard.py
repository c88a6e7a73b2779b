"""What a workflow's dashboard page is given: the rows of a huge workflow, the rate."""

from __future__ import annotations

from manager_node.dashboard import MAX_TASK_ROWS, _rate_per_minute, _shown
from manager_node.store import TimelineRow


def _row(n: int, state: str, updated_at: float) -> TimelineRow:
    return TimelineRow(f"t{n:05}", f"t{n}", state, 1, "", "", 0.0, 0.0, updated_at)


def test_a_small_workflow_shows_every_task() -> None:
    rows = [_row(n, "queued", n) for n in range(10)]
    assert _shown(rows) == rows


def test_a_huge_workflow_shows_what_runs_and_failed_then_the_latest_in_task_order() -> None:
    rows = [_row(n, "completed", float(n)) for n in range(3 * MAX_TASK_ROWS)]
    rows[7] = _row(7, "running", 0.0)
    rows[8] = _row(8, "fetching", 0.0)
    rows[9] = _row(9, "failed", 0.0)
    shown = _shown(rows)
    assert len(shown) == MAX_TASK_ROWS
    assert [row.task_id for row in shown[:3]] == ["t00007", "t00008", "t00009"]
    # The rest are the latest to change.
    assert shown[3].updated_at == 3 * MAX_TASK_ROWS - (MAX_TASK_ROWS - 3)
    assert shown == sorted(shown, key=lambda row: row.task_id)


def test_the_rate_counts_tasks_ended_in_the_last_ten_minutes_or_since_the_start() -> None:
    now = 10_000.0
    rows = [_row(n, "completed", now - 30) for n in range(6)] + [_row(9, "queued", now)]
    # Submitted a minute ago: 6 tasks in one minute.
    assert _rate_per_minute(rows, now - 60, now) == 6.0
    old = [_row(n, "completed", now - 3600) for n in range(6)]
    assert _rate_per_minute(old, now - 7200, now) == 0.0
