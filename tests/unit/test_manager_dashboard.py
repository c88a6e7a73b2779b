"""What a workflow's dashboard page is built from, read from the manager's real SQLite: the
rows of a big workflow, its counts without its tasks, its rate and its failures."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.models import ResourceRequest, TaskSpec
from manager_node.store import ManagerStore, NewTask
from manager_node.workflow import TaskStatus, WorkflowTask

TASKS = 40


def _spec(n: int) -> TaskSpec:
    return TaskSpec(
        task_id=f"wf.t{n:03}",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
    )


async def _store(tmp_path: Path) -> ManagerStore:
    store = ManagerStore(tmp_path)
    await store.open()
    new = [NewTask(_spec(n), f"t{n:03}", ()) for n in range(TASKS)]
    await store.create_workflow("wf", "wf", "tasks", {}, new, [], owner="alice")
    return store


def _task(n: int, status: TaskStatus, message: str = "") -> WorkflowTask:
    return WorkflowTask(f"wf.t{n:03}", f"t{n:03}", status=status, message=message)


async def test_the_timeline_of_a_big_workflow_keeps_what_runs_and_failed_then_the_latest(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    # One at a time, so each change is later than the one before.
    for n in range(10, TASKS):
        await store.save_tasks([_task(n, TaskStatus.COMPLETED)])
    await store.save_tasks([_task(3, TaskStatus.RUNNING), _task(4, TaskStatus.FAILED, "boom")])
    await store.save_tasks([_task(5, TaskStatus.FETCHING)])
    rows = await store.timeline("wf", 8)
    names = [row.name for row in rows]
    assert names[:3] == ["t003", "t004", "t005"]
    assert names[3:] == ["t035", "t036", "t037", "t038", "t039"]
    assert names == sorted(names)
    await store.close()


async def test_counts_rate_and_failures_come_without_reading_every_task(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    before = time.time()
    await store.save_tasks([_task(n, TaskStatus.COMPLETED) for n in range(6)])
    await store.save_tasks([_task(n, TaskStatus.FAILED, f"bad {n}") for n in range(6, 9)])
    [summary] = await store.summaries("wf")
    assert summary.tasks == ()
    assert (summary.counts.completed, summary.counts.failed, summary.counts.total) == (6, 3, TASKS)
    assert summary.counts.queued == TASKS - 9
    assert summary.owner == "alice"
    assert await store.ended_since("wf", before) == 9
    assert await store.ended_since("wf", time.time() + 1) == 0
    failures, failed = await store.failures("wf", 2)
    assert failed == 3
    assert failures == [("wf.t006", "t006", "bad 6"), ("wf.t007", "t007", "bad 7")]
    assert [w.workflow_id for w in await store.summaries()] == ["wf"]
    assert await store.summaries("nope") == []
    await store.close()
