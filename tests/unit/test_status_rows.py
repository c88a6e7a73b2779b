"""Which tasks `node status WORKFLOW` lists: all of a small workflow, and of a large one
those needing attention first, up to a cap, with what was left out counted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cli.workflows import TASK_ROWS, _print_outcome, _status_json, task_rows
from daemon.models import TaskStatusRow, WorkflowCounts, WorkflowStatus


def workflow(state: str, *tasks: tuple[str, str]) -> WorkflowStatus:
    return WorkflowStatus(
        workflow_id="wf",
        name="wf",
        type="tasks",
        state=state,
        created_at=0.0,
        updated_at=0.0,
        tasks=tuple(
            TaskStatusRow(task_id=f"wf.{name}", name=name, state=task_state)
            for name, task_state in tasks
        ),
    )


def test_a_small_workflow_lists_every_task_as_listed() -> None:
    status = workflow("running", ("a", "queued"), ("b", "failed"), ("c", "completed"))
    rows, left_out = task_rows(status, everything=False)
    assert [row[0] for row in rows] == ["a", "b", "c"]
    assert not left_out


def test_a_large_workflow_lists_what_needs_attention_first_up_to_the_cap() -> None:
    tasks = [(f"q{i:03d}", "queued") for i in range(100)]
    tasks += [("r", "running"), ("f", "failed"), ("c", "completed")]
    rows, left_out = task_rows(workflow("running", *tasks), everything=False)
    assert len(rows) == TASK_ROWS
    assert [row[0] for row in rows[:3]] == ["f", "r", "q000"]
    assert left_out == {"queued": 100 - (TASK_ROWS - 2), "completed": 1}
    every, none_left = task_rows(workflow("running", *tasks), everything=True)
    assert len(every) == 103
    assert not none_left


def test_an_ended_workflow_lists_only_what_did_not_complete() -> None:
    status = workflow("failed", ("a", "completed"), ("b", "failed"), ("c", "skipped"))
    rows, _ = task_rows(status, everything=True)
    assert [(row[0], row[1]) for row in rows] == [("b", "failed"), ("c", "skipped")]


def test_status_says_fetching_tasks_apart_from_running_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = replace(
        workflow("running", ("a", "running"), ("b", "fetching"), ("c", "queued")),
        counts=WorkflowCounts(queued=1, running=1, fetching=1, total=3),
    )
    _print_outcome(status)
    shown = capsys.readouterr().out
    assert "tasks     0 completed, 1 running, 1 fetching, 0 failed, 0 skipped, 1 queued" in shown
    assert [line.split()[:2] for line in shown.splitlines() if line.startswith("b ")] == [
        ["b", "fetching"]
    ]
    as_json = _status_json(status)
    assert as_json["counts"]["fetching"] == 1
    assert as_json["counts"]["running"] == 1
    assert [t["state"] for t in as_json["tasks"]] == ["running", "fetching", "queued"]


def test_a_large_workflow_lists_fetching_tasks_after_running_ones() -> None:
    tasks = [(f"q{i:03d}", "queued") for i in range(100)]
    tasks += [("g", "fetching"), ("r", "running"), ("f", "failed")]
    rows, _ = task_rows(workflow("running", *tasks), everything=False)
    assert [row[0] for row in rows[:4]] == ["f", "r", "g", "q000"]
