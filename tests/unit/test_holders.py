"""Who holds a task, for the manager's transfer rules: the volunteer it runs on, only."""

from __future__ import annotations

import asyncio

from daemon.models import EventKind, TaskEvent
from manager_node.holders import Holders, holder_of
from manager_node.workflow import WorkflowRun, WorkflowTask


def event(kind: EventKind, volunteer_id: str = "v1") -> TaskEvent:
    return TaskEvent(
        task_id="wf.t", workflow_id="wf", kind=kind, at=0.0, attempt=1, volunteer_id=volunteer_id
    )


def test_a_task_is_held_while_it_runs_and_by_nobody_once_declined_or_handed_back() -> None:
    run = WorkflowRun.of("wf", [WorkflowTask("wf.t", "t")])
    task = run.tasks["wf.t"]
    run.take_ready()
    seen = []
    for kind in (
        EventKind.OFFERED,
        EventKind.RUNNING,  # an older volunteer: no `fetching` first
        EventKind.PROGRESS,
        EventKind.DECLINED,
        EventKind.OFFERED,
        EventKind.RUNNING,
        EventKind.REQUEUED,
    ):
        run.apply(event(kind))
        seen.append(holder_of(task))
    # Offered is not held (it fetches once it accepted); a decliner keeps nothing.
    assert seen == ["", "v1", "v1", "", "", "v1", ""]


def test_a_task_is_held_while_its_volunteer_fetches_its_inputs() -> None:
    run = WorkflowRun.of("wf", [WorkflowTask("wf.t", "t")])
    task = run.tasks["wf.t"]
    run.take_ready()
    seen = []
    for kind in (
        EventKind.OFFERED,
        EventKind.FETCHING,
        EventKind.RUNNING,
        EventKind.REQUEUED,
        EventKind.OFFERED,
        EventKind.FETCHING,
        EventKind.CANCELLED,
    ):
        run.apply(event(kind))
        seen.append(holder_of(task))
    assert seen == ["", "v1", "v1", "", "", "v1", ""]


async def test_a_question_about_a_holder_waits_for_the_event_that_makes_it_one() -> None:
    holders = Holders(patience=5.0)
    asked = asyncio.create_task(holders.wait_for("v1", lambda held: "wf.t" in held))
    await asyncio.sleep(0)
    assert not asked.done()
    holders.set("wf.t", "v1")
    assert await asyncio.wait_for(asked, 1.0)
    holders.set("wf.t", "")
    assert not await Holders(patience=0.05).wait_for("v1", lambda held: "wf.t" in held)
    assert holders.held_by("v1") == set()
