"""A task's life across the volunteer's worker, the coordinator's Pool and the manager, each
over its real store, joined in process (tests/inprocess/mesh.py): repeated offers, a cancel
mid-fetch, results sent again until acknowledged, a volunteer that stops, drains or pauses.
Each test checks where the tasks ended in all three stores and what crossed the link."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from coordinator_node.pool import AckResult
from coordinator_node.scheduler import SendCancel, SendOffer
from daemon.models import EventKind
from tests.inprocess.mesh import (
    CoordinatorTask,
    Decline,
    Goodbye,
    ManagerTask,
    Mesh,
    MeshVolunteer,
    OutboxRow,
    Progress,
    Result,
    Wire,
    running_mesh,
    same,
    workflow,
)

ALREADY_HELD = "already running this task"
DRAINING = "draining: its owner lets the running tasks finish and takes no new ones"
PAUSED = "paused by owner"
# Larger than an offer may carry inline (daemon/inline.py): the volunteer fetches it.
FETCHED_INPUT = bytes(range(256)) * 32


def later_attempt(offer: SendOffer) -> SendOffer:
    return replace(offer, task=replace(offer.task, attempt=offer.task.attempt + 1))


def unavailable(mesh: Mesh, volunteer_id: str) -> str:
    """Why the coordinator thinks the volunteer takes no task ("" when it takes tasks)."""
    [volunteer] = [v for v in mesh.pool.volunteers() if v.volunteer_id == volunteer_id]
    return volunteer.load.unavailable


async def queued(mesh: Mesh, task_id: str) -> bool:
    task = await mesh.coordinator_task(task_id)
    return task is not None and task.state == "queued"


def words(wire: Wire, task_id: str) -> list[str]:
    """What the volunteer told the coordinator of the task, progress aside."""
    return [type(m).__name__ for m in wire.told_about(task_id) if not isinstance(m, Progress)]


def heard(wire: Wire, task_id: str) -> list[str]:
    return [type(m).__name__ for m in wire.heard_about(task_id)]


async def event_kinds(mesh: Mesh, task_id: str) -> Counter[EventKind]:
    return Counter(event.kind for event in await mesh.coordinator_events(task_id))


async def coordinator_task(mesh: Mesh, task_id: str) -> CoordinatorTask:
    task = await mesh.coordinator_task(task_id)
    assert task is not None, f"the coordinator has no task {task_id}"
    return task


async def workflow_ends(mesh: Mesh, workflow_id: str, state: str) -> None:
    async def ended() -> bool:
        return await mesh.workflow_state(workflow_id) == state

    await mesh.until(ended, f"workflow {workflow_id} to be {state}")


async def one_running_one_ahead(mesh: Mesh, volunteer: MeshVolunteer) -> tuple[str, str, str]:
    """Submits two tasks to a one-slot volunteer; returns (workflow, the task that runs, the
    one held fetched ahead) once the first runs and the second waits for the slot."""
    workflow_id = await mesh.submit(workflow("t1", "t2"))
    both = {f"{workflow_id}.t1", f"{workflow_id}.t2"}

    async def settled() -> bool:
        running = volunteer.runtime.running()
        if len(running) != 1:
            return False
        [other] = both - set(running)
        states = {t.task_id: t.state for t in await volunteer.tasks()}
        # The coordinator heard which one started; the other is accepted, not started.
        return (
            states.get(other) == "ready"
            and (await coordinator_task(mesh, running[0])).state == "running"
            and (await coordinator_task(mesh, other)).state == "fetching"
        )

    await mesh.until(settled, "one task to run and the other to wait fetched ahead")
    [running] = volunteer.runtime.running()
    [ahead] = both - {running}
    return workflow_id, running, ahead


# --- repeated offers --------------------------------------------------------------------------


async def test_a_later_attempt_of_a_held_task_is_declined_and_the_task_completes_once(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        # The offer arrives, then again under the next attempt number (a coordinator that
        # lost track of it): one task, one container.
        volunteer.wire.duplicate_next(SendOffer, copies=(later_attempt,))
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: bool(volunteer.wire.told_about(task, Decline)), "the decline")
        assert volunteer.wire.told_about(task, Decline) == [Decline(task, 2, ALREADY_HELD)]
        held = await coordinator_task(mesh, task)
        assert (held.state, held.attempts, held.volunteer_id) in (
            ("fetching", 1, "vol-a"),
            ("running", 1, "vol-a"),
        ), "a decline of an attempt never offered changes nothing"
        await mesh.until(lambda: volunteer.runtime.running() == [task], "the task to run")
        volunteer.runtime.finish(task)
        await workflow_ends(mesh, workflow_id, "completed")

        assert [run.state for run in volunteer.runtime.runs_of(task)] == ["completed"]
        assert await volunteer.task_states(task) == [(1, "finished")]
        assert [(r.attempt, r.delivered) for r in await volunteer.outbox()] == [(1, True)]
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        kinds = await event_kinds(mesh, task)
        assert kinds[EventKind.COMPLETED] == 1
        assert kinds[EventKind.DECLINED] == 0
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-a")
        assert mesh.shown(task, "completed") == 1
        assert len(await mesh.manager_store.attempts(task)) == 1
        assert heard(volunteer.wire, task) == ["SendOffer", "SendOffer", "AckResult"]
        told = words(volunteer.wire, task)
        assert told[0] == "Accept"
        assert sorted(told[1:]) == ["Decline", "Result", "Started"]
        assert told[-1] == "Result"


async def test_the_same_offer_delivered_twice_runs_once_and_the_task_completes_once(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        volunteer.wire.duplicate_next(SendOffer, copies=(same,))
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: volunteer.runtime.running() == [task], "the task to run")
        # The copy is heard and let be: a "no" to it would hand back the attempt held.
        assert heard(volunteer.wire, task) == ["SendOffer", "SendOffer"]
        assert volunteer.wire.told_about(task, Decline) == []
        held = await coordinator_task(mesh, task)
        # The volunteer keeps the attempt: so must the coordinator.
        assert (held.state, held.volunteer_id) in (("fetching", "vol-a"), ("running", "vol-a"))
        volunteer.runtime.finish(task)
        await workflow_ends(mesh, workflow_id, "completed")

        assert [run.state for run in volunteer.runtime.runs_of(task)] == ["completed"]
        assert await volunteer.task_states(task) == [(1, "finished")]
        assert [(r.attempt, r.delivered) for r in await volunteer.outbox()] == [(1, True)]
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        assert (await event_kinds(mesh, task))[EventKind.COMPLETED] == 1
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-a")
        assert mesh.shown(task, "completed") == 1


# --- a cancel mid-fetch -----------------------------------------------------------------------


async def test_a_task_cancelled_while_its_input_is_fetched_never_starts(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        volunteer.transfers.hold()
        workflow_id = await mesh.submit(workflow("t1", inputs=1), [FETCHED_INPUT])
        task = f"{workflow_id}.t1"

        async def fetching() -> bool:
            return (
                [f.state for f in volunteer.transfers.fetches] == ["waiting"]
                and (await coordinator_task(mesh, task)).state == "fetching"
                and await mesh.manager_task(task) == ManagerTask("fetching", "vol-a")
            )

        await mesh.until(fetching, "the volunteer to fetch the input, and everyone to know")

        await mesh.cancel(workflow_id)
        await mesh.until(
            lambda: [f.state for f in volunteer.transfers.fetches] == ["called off"],
            "the fetch to be called off",
        )

        async def cancelled_here() -> bool:
            return await volunteer.task_states(task) == [(1, "cancelled")]

        await mesh.until(cancelled_here, "the volunteer to record the cancel")
        await mesh.until(lambda: not volunteer.worker.view().attempts, "the pipeline to end")
        assert volunteer.runtime.runs == [], "no container started"
        assert await volunteer.outbox() == []
        cancelled = await coordinator_task(mesh, task)
        assert (cancelled.state, cancelled.volunteer_id) == ("cancelled", "vol-a")
        assert await mesh.manager_task(task) == ManagerTask("cancelled", "vol-a")
        assert await mesh.workflow_state(workflow_id) == "cancelled"
        assert heard(volunteer.wire, task) == ["SendOffer", "SendCancel"]
        [cancel] = volunteer.wire.heard_about(task, SendCancel)
        assert cancel.reason == "cancelled"
        assert words(volunteer.wire, task) == ["Accept"], "no start, no result, no decline"


# --- results sent again until acknowledged ----------------------------------------------------


async def test_a_result_is_sent_again_until_acknowledged_across_sessions_and_restarts(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a", finish_at_once=True)
        wire = volunteer.wire
        wire.drop_next(AckResult)
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await workflow_ends(mesh, workflow_id, "completed")
        await mesh.until(lambda: bool(wire.dropped), "the acknowledgement to be lost")
        assert await volunteer.outbox() == [OutboxRow(task, 1, delivered=False)]

        # A new session: the result goes again, counts no more, and is acknowledged.
        await volunteer.link.reconnect()

        async def delivered() -> bool:
            return [r.delivered for r in await volunteer.outbox()] == [True]

        await mesh.until(delivered, "the result to be acknowledged")
        assert [r.task_id for r in await volunteer.outbox()] == [task]
        assert words(wire, task) == ["Accept", "Started", "Result", "Result"]
        assert heard(wire, task) == ["SendOffer", "AckResult"]
        assert [type(m) for m in wire.dropped] == [AckResult]
        assert await volunteer.task_states(task) == [(1, "finished")]
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        assert (await event_kinds(mesh, task))[EventKind.COMPLETED] == 1
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-a")
        assert mesh.shown(task, "completed") == 1

        # A restart with a result not acknowledged: the new worker sends it again.
        wire.drop_next(AckResult)
        second_workflow = await mesh.submit(workflow("t2"))
        second = f"{second_workflow}.t2"
        await workflow_ends(mesh, second_workflow, "completed")
        await mesh.until(lambda: len(wire.dropped) == 2, "the second acknowledgement to be lost")
        await volunteer.restart()
        # It registered with the result in flight as one of its tasks.
        [registered] = [v for v in mesh.pool.volunteers() if v.volunteer_id == "vol-a"]
        assert registered.load.running_tasks == 1

        async def both_delivered() -> bool:
            return [(r.task_id, r.delivered) for r in await volunteer.outbox()] == [
                (task, True),
                (second, True),
            ]

        await mesh.until(both_delivered, "the result to be acknowledged after the restart")
        assert volunteer.link.sessions == 1, "a new link: its first session"
        assert words(wire, second) == ["Accept", "Started", "Result", "Result"]
        assert heard(wire, second) == ["SendOffer", "AckResult"]
        assert words(wire, task) == ["Accept", "Started", "Result", "Result"], "acknowledged"
        assert [m for m in wire.told if isinstance(m, Goodbye)] == [
            Goodbye("its owner restarted it")
        ]
        assert await volunteer.task_states(second) == [(1, "finished")]
        ended = await coordinator_task(mesh, second)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        assert (await event_kinds(mesh, second))[EventKind.COMPLETED] == 1
        assert await mesh.manager_task(second) == ManagerTask("completed", "vol-a")
        assert mesh.shown(second, "completed") == 1


async def test_a_result_lost_on_the_way_counts_when_the_next_session_brings_it(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a", finish_at_once=True)
        wire = volunteer.wire
        wire.drop_next(Result)
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: bool(wire.dropped), "the result to be lost")
        assert await volunteer.outbox() == [OutboxRow(task, 1, delivered=False)]
        running = await coordinator_task(mesh, task)
        assert (running.state, running.volunteer_id) == ("running", "vol-a")

        # Its session breaks; the coordinator keeps the task with it, which the next
        # registration names (its result is in flight), and counts the result it brings.
        await volunteer.link.reconnect()
        await workflow_ends(mesh, workflow_id, "completed")

        async def delivered() -> bool:
            return await volunteer.outbox() == [OutboxRow(task, 1, delivered=True)]

        await mesh.until(delivered, "the result to be acknowledged")
        assert words(wire, task) == ["Accept", "Started", "Result"]
        assert [type(m) for m in wire.dropped] == [Result]
        assert heard(wire, task) == ["SendOffer", "AckResult"]
        assert await volunteer.task_states(task) == [(1, "finished")]
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        kinds = await event_kinds(mesh, task)
        assert (kinds[EventKind.COMPLETED], kinds[EventKind.REQUEUED]) == (1, 0)
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-a")
        assert mesh.shown(task, "completed") == 1


# --- the owner's word: stop, drain, pause -----------------------------------------------------


async def test_a_stopped_volunteers_tasks_are_called_off_and_run_elsewhere(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        stopping = await mesh.volunteer("vol-a")
        workflow_id, running, ahead = await one_running_one_ahead(mesh, stopping)

        await stopping.worker.stop()
        assert [run.state for run in stopping.runtime.runs_of(running)] == ["cancelled"]
        assert stopping.runtime.runs_of(ahead) == []
        assert await stopping.task_states(running) == [(1, "cancelled")]
        assert await stopping.task_states(ahead) == [(1, "cancelled")]
        assert not stopping.worker.view().attempts
        # Until it says goodbye, the coordinator counts them as its.
        assert (await coordinator_task(mesh, running)).volunteer_id == "vol-a"

        await stopping.link.leave("its owner stopped it")
        for task in (running, ahead):
            queued = await coordinator_task(mesh, task)
            assert (queued.state, queued.failures) == ("queued", 0)
        other = await mesh.volunteer("vol-b", finish_at_once=True)
        await workflow_ends(mesh, workflow_id, "completed")

        for task in (running, ahead):
            ended = await coordinator_task(mesh, task)
            assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 2, "vol-b")
            kinds = await event_kinds(mesh, task)
            assert kinds[EventKind.REQUEUED] == 1
            assert kinds[EventKind.COMPLETED] == 1
            assert await mesh.manager_task(task) == ManagerTask("completed", "vol-b")
            assert mesh.shown(task, "completed") == 1
            assert await other.task_states(task) == [(2, "finished")]
            assert [run.state for run in other.runtime.runs_of(task)] == ["completed"]
            # The stopped volunteer said nothing of it after accepting: no result, no decline.
            assert "Result" not in words(stopping.wire, task)
            assert "Decline" not in words(stopping.wire, task)
        [requeue] = [
            e for e in await mesh.coordinator_events(running) if e.kind is EventKind.REQUEUED
        ]
        assert requeue.message == "its volunteer left (its owner stopped it)"
        assert isinstance(stopping.wire.told[-1], Goodbye)
        assert await stopping.outbox() == []


async def test_a_draining_volunteer_hands_back_what_has_not_started_and_finishes_the_rest(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        draining = await mesh.volunteer("vol-a")
        workflow_id, running, ahead = await one_running_one_ahead(mesh, draining)

        await draining.worker.drain()
        await mesh.until(lambda: bool(draining.wire.told_about(ahead, Decline)), "a hand-back")
        assert draining.wire.told_about(ahead, Decline) == [
            Decline(ahead, 1, "its owner is draining the volunteer")
        ]
        # Queued again at once, with no failure counted against it.
        handed_back = await coordinator_task(mesh, ahead)
        assert (handed_back.state, handed_back.failures) == ("queued", 0)
        assert (await event_kinds(mesh, ahead))[EventKind.REQUEUED] == 0
        await mesh.until(
            lambda: [a.task_id for a in draining.worker.view().attempts] == [running],
            "the hand-back's pipeline to end",
        )
        assert draining.runtime.runs_of(ahead) == [], "it never started"
        assert await draining.task_states(ahead) == [(1, "handed back")]

        # The coordinator heard it takes nothing new: a task submitted meanwhile is not even
        # offered to it (no asking and refusing again and again).
        await mesh.until(lambda: unavailable(mesh, "vol-a") == DRAINING, "the coordinator to know")
        later_workflow = await mesh.submit(workflow("t3"))
        later = f"{later_workflow}.t3"
        await mesh.until(lambda: queued(mesh, later), "the new task to be queued, not offered")
        assert draining.wire.heard_about(later) == []

        other = await mesh.volunteer("vol-b", finish_at_once=True)
        await workflow_ends(mesh, later_workflow, "completed")
        assert draining.runtime.running() == [running], "the running task runs on"
        draining.runtime.finish(running)
        await workflow_ends(mesh, workflow_id, "completed")

        done_here = await coordinator_task(mesh, running)
        assert (done_here.state, done_here.attempts, done_here.volunteer_id) == (
            "completed",
            1,
            "vol-a",
        )
        assert await draining.task_states(running) == [(1, "finished")]
        assert await mesh.manager_task(running) == ManagerTask("completed", "vol-a")
        assert words(draining.wire, running) == ["Accept", "Started", "Result"]
        for task, attempt, declined in ((ahead, 2, 1), (later, 1, 0)):
            elsewhere = await coordinator_task(mesh, task)
            assert (elsewhere.state, elsewhere.failures, elsewhere.volunteer_id) == (
                "completed",
                0,
                "vol-b",
            )
            assert await other.task_states(task) == [(attempt, "finished")]
            assert await mesh.manager_task(task) == ManagerTask("completed", "vol-b")
            assert mesh.shown(task, "completed") == 1
            kinds = await event_kinds(mesh, task)
            assert (kinds[EventKind.DECLINED], kinds[EventKind.COMPLETED]) == (declined, 1)
        assert words(draining.wire, ahead) == ["Accept", "Decline"]
        assert words(draining.wire, later) == []
        assert [(r.task_id, r.delivered) for r in await draining.outbox()] == [(running, True)]


async def test_a_pause_freezes_the_running_task_declines_offers_and_resume_thaws_it(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        paused = await mesh.volunteer("vol-a")
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: paused.runtime.running() == [task], "the task to run")
        [run] = paused.runtime.runs

        await paused.worker.pause()
        assert paused.runtime.freezes == [run.run_id]
        await mesh.until(lambda: unavailable(mesh, "vol-a") == PAUSED, "the coordinator to know")
        offered_workflow = await mesh.submit(workflow("t2"))
        offered = f"{offered_workflow}.t2"
        await mesh.until(lambda: queued(mesh, offered), "the new task to wait")
        assert paused.wire.heard_about(offered) == [], "a paused volunteer is offered nothing"
        assert (await coordinator_task(mesh, task)).state == "running", "frozen, still held"

        await paused.worker.resume()
        assert paused.runtime.thaws == [run.run_id]
        paused.runtime.finish(task)
        await workflow_ends(mesh, workflow_id, "completed")
        # Resumed, it is offered the task that waited, at once (never asked, so no cooldown).
        await mesh.until(lambda: paused.runtime.running() == [offered], "the waiting task to run")
        paused.runtime.finish(offered)
        await workflow_ends(mesh, offered_workflow, "completed")

        assert run.state == "completed"
        assert await paused.task_states(task) == [(1, "finished")]
        assert await paused.task_states(offered) == [(1, "finished")]
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.attempts, ended.volunteer_id) == ("completed", 1, "vol-a")
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-a")
        assert await mesh.manager_task(offered) == ManagerTask("completed", "vol-a")
        assert words(paused.wire, task) == ["Accept", "Started", "Result"]
        assert words(paused.wire, offered) == ["Accept", "Started", "Result"]


async def test_a_pause_longer_than_the_grace_hands_the_task_back_to_run_elsewhere(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        paused = await mesh.volunteer("vol-a", hold_grace_seconds=0.2)
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: paused.runtime.running() == [task], "the task to run")
        other = await mesh.volunteer("vol-b", finish_at_once=True)

        await paused.worker.pause()
        [run] = paused.runtime.runs
        assert paused.runtime.freezes == [run.run_id]
        await workflow_ends(mesh, workflow_id, "completed")
        await mesh.until(lambda: not paused.worker.view().attempts, "the pipeline to end")

        assert paused.wire.told_about(task, Decline) == [
            Decline(task, 1, f"{PAUSED} for over 0.2 s")
        ]
        assert run.state == "cancelled", "its container was killed"
        assert await paused.task_states(task) == [(1, "handed back")]
        assert not paused.worker.view().attempts
        ended = await coordinator_task(mesh, task)
        assert (ended.state, ended.failures, ended.volunteer_id) == ("completed", 0, "vol-b")
        kinds = await event_kinds(mesh, task)
        assert (kinds[EventKind.DECLINED], kinds[EventKind.REQUEUED]) == (1, 0)
        assert await other.task_states(task) == [(2, "finished")]
        assert await mesh.manager_task(task) == ManagerTask("completed", "vol-b")
        assert mesh.shown(task, "completed") == 1
        assert words(paused.wire, task) == ["Accept", "Started", "Decline"]
        assert paused.wire.pending_faults() == 0
