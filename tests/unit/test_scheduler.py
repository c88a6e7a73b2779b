"""The scheduler state machine, driven stimulus by stimulus with explicit times."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator_node.scheduler import (
    Candidate,
    EndedTask,
    Instruction,
    Publish,
    SaveTask,
    ScheduledTask,
    Scheduler,
    SendCancel,
    SendOffer,
    unfit_reason,
)
from daemon.models import (
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskResult,
    TaskSpec,
    TaskState,
)
from daemon.task_files import outputs_problem

MANAGER = "manager-1"


def spec(task_id: str, memory_mb: int = 256, retries: int = 0, **overrides: object) -> TaskSpec:
    base = TaskSpec(
        task_id=task_id,
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(cpus=1, memory_mb=memory_mb),
        timeout_seconds=60,
        retries=retries,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def volunteer(vid: str, memory_mb: int = 4096, slots: int = 1, **limits: object) -> Candidate:
    return Candidate(
        vid,
        Resources(cpu_cores=4, memory_mb=memory_mb, disk_free_mb=10_000, docker_available=True),
        OwnerLimits(max_concurrent_tasks=slots, **limits),  # type: ignore[arg-type]
    )


def offers(instructions: list[Instruction]) -> list[tuple[str, str, int]]:
    return [
        (i.volunteer_id, i.task.task_id, i.task.attempt)
        for i in instructions
        if isinstance(i, SendOffer)
    ]


def events(instructions: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.event.task_id, i.event.kind) for i in instructions if isinstance(i, Publish)]


def state_of(scheduler: Scheduler, task_id: str) -> TaskState | None:
    return scheduler.state_of(task_id)


def messages(instructions: list[Instruction], kind: str) -> list[str]:
    return [
        i.event.message for i in instructions if isinstance(i, Publish) and i.event.kind == kind
    ]


def ok(task_id: str, attempt: int) -> TaskResult:
    return TaskResult(task_id=task_id, attempt=attempt, exit_code=0, error="")


def failed(task_id: str, attempt: int, error: str = "exited with code 3") -> TaskResult:
    return TaskResult(task_id=task_id, attempt=attempt, exit_code=3, error=error)


def test_task_is_queued_then_offered_when_a_volunteer_joins() -> None:
    scheduler = Scheduler()
    out = scheduler.submit(MANAGER, [spec("t1")], now=0)
    assert events(out) == [("t1", "queued")]
    assert offers(out) == []
    out = scheduler.volunteer_joined(volunteer("v1"), [], now=1)
    assert offers(out) == [("v1", "t1", 1)]
    assert scheduler.tasks["t1"].state is TaskState.OFFERED


def test_offers_fill_slots_plus_one_ahead_and_spread_over_volunteers() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1", slots=2), [], now=0)
    scheduler.volunteer_joined(volunteer("v2", slots=1), [], now=0)
    out = scheduler.submit(MANAGER, [spec(f"t{i}") for i in range(7)], now=1)
    made = offers(out)
    assert len(made) == 5, "v1 holds 2 + 1 ahead, v2 holds 1 + 1 ahead"
    assert sorted(v for v, _, _ in made) == ["v1", "v1", "v1", "v2", "v2"]
    assert [t for _, t, _ in made] == ["t0", "t1", "t2", "t3", "t4"], "FIFO"
    assert made[0][0] == "v1", "the least busy volunteer first"


def test_accept_fetch_start_complete_frees_room_for_the_next_task() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    out = scheduler.submit(MANAGER, [spec("t1"), spec("t2"), spec("t3")], now=0)
    assert offers(out) == [("v1", "t1", 1), ("v1", "t2", 1)], "one slot and one ahead"
    accepted = scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    assert events(accepted) == [("t1", "fetching")]
    assert state_of(scheduler, "t1") is TaskState.FETCHING
    assert events(scheduler.started("v1", "t1", 1, now=1.5)) == [("t1", "running")]
    assert state_of(scheduler, "t1") is TaskState.RUNNING
    out = scheduler.finished("v1", ok("t1", 1), now=2)
    assert ("t1", "completed") in events(out)
    assert offers(out) == [("v1", "t3", 1)]
    assert state_of(scheduler, "t1") is TaskState.COMPLETED


def test_decline_offers_elsewhere_and_records_the_reason() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.volunteer_joined(volunteer("v2"), [], now=0)
    [(first, _, _)] = offers(scheduler.submit(MANAGER, [spec("t1")], now=0))
    out = scheduler.declined(first, "t1", 1, "busy", now=1)
    declined = [i.event for i in out if isinstance(i, Publish) and i.event.kind == "declined"]
    assert declined[0].message == "busy"
    assert declined[0].volunteer_id == first
    [(second, _, attempt)] = offers(out)
    assert second != first
    assert attempt == 2


def test_a_decliner_is_asked_again_only_after_a_cooldown() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    assert offers(scheduler.declined("v1", "t1", 1, "outside its hours", now=1)) == []
    assert offers(scheduler.tick(now=10)) == []
    assert offers(scheduler.tick(now=32)) == [("v1", "t1", 2)]


def test_a_task_handed_back_goes_elsewhere_at_once() -> None:
    """A volunteer whose owner drains or pauses it declines a task it holds already."""
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    scheduler.started("v1", "t1", 1, now=2)
    scheduler.volunteer_joined(volunteer("v2"), [], now=3)
    out = scheduler.declined("v1", "t1", 1, "its owner is draining the volunteer", now=4)
    assert messages(out, "declined") == ["its owner is draining the volunteer"]
    assert offers(out) == [("v2", "t1", 2)]
    assert scheduler.running_on("v1") == set()


def test_declines_and_hand_backs_do_not_use_up_a_tasks_attempts() -> None:
    scheduler = Scheduler(max_attempts=2)
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    now, attempt = 0.0, 1
    for _ in range(5):  # a paused volunteer says no every time it is asked
        scheduler.declined("v1", "t1", attempt, "paused by owner", now=now)
        now += 31
        [(_, _, attempt)] = offers(scheduler.tick(now=now))
    for _ in range(2):  # then takes it, and hands it back
        scheduler.accepted("v1", "t1", attempt, now=now, says_started=True)
        scheduler.declined("v1", "t1", attempt, "paused by owner for over 10 min", now=now)
        now += 31
        [(_, _, attempt)] = offers(scheduler.tick(now=now))
    scheduler.accepted("v1", "t1", attempt, now=now)
    out = scheduler.volunteer_lost("v1", now=now)
    assert messages(out, "failed") == [], "one lost attempt of two allowed"
    assert state_of(scheduler, "t1") is TaskState.QUEUED


def test_a_volunteer_is_offered_no_more_than_its_owners_caps_let_it_run_and_one_ahead() -> None:
    """`--max-cpus 1 --max-memory-mb 300 --max-concurrent-tasks 3` bounds the machine: one
    task of 1 CPU and 256 MiB runs at a time, one more is fetched ahead."""
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1", slots=3, max_cpus=1, max_memory_mb=300), [], now=0)
    out = scheduler.submit(MANAGER, [spec("t1"), spec("t2"), spec("t3")], now=0)
    assert offers(out) == [("v1", "t1", 1), ("v1", "t2", 1)]
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.accepted("v1", "t2", 1, now=1)
    assert offers(scheduler.finished("v1", ok("t1", 1), now=2)) == [("v1", "t3", 1)]


def test_unanswered_offer_times_out_and_goes_elsewhere() -> None:
    scheduler = Scheduler(offer_timeout=5)
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.volunteer_joined(volunteer("v2"), [], now=1)
    assert offers(scheduler.tick(now=4)) == []
    out = scheduler.tick(now=5)
    assert ("t1", "declined") in events(out)
    assert offers(out) == [("v2", "t1", 2)]


def test_lost_volunteer_requeues_and_its_late_result_is_ignored() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.volunteer_lost("v1", now=10)
    assert ("t1", "requeued") in events(out)
    out = scheduler.volunteer_joined(volunteer("v2"), [], now=11)
    assert offers(out) == [("v2", "t1", 2)]
    scheduler.accepted("v2", "t1", 2, now=12)
    assert scheduler.finished("v1", ok("t1", 1), now=13) == [], "late result counted"
    completed = scheduler.finished("v2", ok("t1", 2), now=14)
    assert ("t1", "completed") in events(completed)
    assert scheduler.finished("v2", ok("t1", 2), now=15) == [], "duplicate result counted"


def test_task_fails_after_max_attempts_of_lost_volunteers() -> None:
    scheduler = Scheduler(max_attempts=2)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    for attempt, vid in enumerate(["v1", "v2"], start=1):
        scheduler.volunteer_joined(volunteer(vid), [], now=attempt)
        scheduler.accepted(vid, "t1", attempt, now=attempt)
        out = scheduler.volunteer_lost(vid, now=attempt)
    assert messages(out, "failed") == ["gave up after 2 attempts: its volunteer was lost"]


def test_task_failure_is_retried_then_final_with_its_reason() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1", retries=1)], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.finished("v1", failed("t1", 1), now=2)
    assert ("t1", "requeued") in events(out)
    assert offers(out) == [("v1", "t1", 2)]
    scheduler.accepted("v1", "t1", 2, now=3)
    out = scheduler.finished("v1", failed("t1", 2, "timed out after 5 s (killed)"), now=4)
    final = [i.event for i in out if isinstance(i, Publish) and i.event.kind == "failed"]
    assert final[0].message == "timed out after 5 s (killed)"
    assert final[0].result is not None
    assert state_of(scheduler, "t1") is TaskState.FAILED


def test_task_no_volunteer_can_hold_is_reported_unschedulable_once() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1", memory_mb=1024), [], now=0)
    out = scheduler.submit(MANAGER, [spec("big", memory_mb=8192)], now=0)
    reports = [i.event for i in out if isinstance(i, Publish) and i.event.kind == "unschedulable"]
    assert len(reports) == 1
    assert "not enough memory: needs 8192 MiB, may use 1024" in reports[0].message
    assert events(scheduler.tick(now=1)) == []
    assert offers(scheduler.volunteer_joined(volunteer("v2", memory_mb=16384), [], now=2)) == [
        ("v2", "big", 1)
    ]


def test_owner_limits_are_respected_in_matching() -> None:
    capped = volunteer("v1", memory_mb=16384, max_memory_mb=512)
    assert unfit_reason(spec("t", memory_mb=1024), capped, "m") == (
        "not enough memory: needs 1024 MiB, may use 512"
    )
    assert unfit_reason(spec("t", network=True), volunteer("v1"), "m") == (
        "network not allowed by the owner"
    )
    assert unfit_reason(spec("t", network=True), volunteer("v1", allow_network=True), "m") is None
    no_docker = Candidate(
        "v1", Resources(cpu_cores=2, memory_mb=4096, disk_free_mb=1000), OwnerLimits()
    )
    assert "no Docker engine" in (unfit_reason(spec("t"), no_docker, "m") or "")


def test_cancel_stops_running_tasks_and_drops_queued_ones() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2"), spec("t3")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.cancel(MANAGER, "wf", [], now=2)
    assert [i for i in out if isinstance(i, SendCancel)] == [
        SendCancel("v1", "t1", "cancelled"),
        SendCancel("v1", "t2", "cancelled"),
    ], "the running task and the one offered ahead; t3 was only queued"
    assert {state_of(scheduler, t) for t in ("t1", "t2", "t3")} == {TaskState.CANCELLED}
    assert offers(out) == []


def test_a_revoked_managers_tasks_are_all_cancelled_and_no_other_managers() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1", slots=2), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2", workflow_id="other")], now=0)
    scheduler.submit("manager-2", [spec("u1", workflow_id="theirs")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.cancel_all_of(MANAGER, "its manager was revoked", now=2)
    assert [i for i in out if isinstance(i, SendCancel)] == [
        SendCancel("v1", "t1", "its manager was revoked"),
        SendCancel("v1", "t2", "its manager was revoked"),
    ]
    assert state_of(scheduler, "t1") is TaskState.CANCELLED
    assert state_of(scheduler, "t2") is TaskState.CANCELLED
    assert state_of(scheduler, "u1") is not TaskState.CANCELLED


def test_stale_accept_is_answered_with_a_cancel() -> None:
    scheduler = Scheduler(offer_timeout=1)
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.tick(now=1)  # the offer expires
    assert scheduler.accepted("v1", "t1", 1, now=2) == [
        SendCancel("v1", "t1", "the offer is no longer valid")
    ]


def test_reconnect_keeps_running_tasks_the_volunteer_still_has() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.volunteer_disconnected("v1", now=2)
    out = scheduler.volunteer_joined(volunteer("v1"), ["t1"], now=3)
    assert state_of(scheduler, "t1") is TaskState.RUNNING
    assert ("t1", "requeued") not in events(out)
    out = scheduler.volunteer_joined(volunteer("v1"), [], now=4)
    assert ("t1", "requeued") in events(out), "a task the volunteer no longer has goes back"


def test_restore_requeues_offers_and_keeps_running_tasks() -> None:
    offered = ScheduledTask(spec("t1"), MANAGER, TaskState.OFFERED, attempt=1, volunteer_id="v1")
    running = ScheduledTask(spec("t2"), MANAGER, TaskState.RUNNING, attempt=1, volunteer_id="v1")
    scheduler = Scheduler()
    scheduler.restore([offered, running])
    assert state_of(scheduler, "t1") is TaskState.QUEUED
    assert scheduler.running_on("v1") == {"t2"}


def test_every_change_is_saved() -> None:
    scheduler = Scheduler()
    out = scheduler.submit(MANAGER, [spec("t1")], now=0)
    assert [(i.task.spec.task_id, i.new_spec) for i in out if isinstance(i, SaveTask)] == [
        ("t1", True)
    ], "a new task is saved with its spec"
    out = scheduler.volunteer_joined(volunteer("v1"), [], now=1)
    assert [(i.task.spec.task_id, i.new_spec) for i in out if isinstance(i, SaveTask)] == [
        ("t1", False)
    ], "an offer changes its state, not its spec"


def test_a_later_run_of_a_failed_task_starts_afresh_and_ignores_the_old_attempts() -> None:
    scheduler = Scheduler(max_attempts=2)
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.finished("v1", failed("t1", 1), now=2)
    assert state_of(scheduler, "t1") is TaskState.FAILED

    assert scheduler.submit(MANAGER, [spec("t1")], now=3) == [], "the same run: already ours"
    out = scheduler.submit(MANAGER, [spec("t1", run=1)], now=4)
    assert ("t1", "queued") in events(out)
    assert any(isinstance(i, SaveTask) and i.new_spec for i in out), "the new run's spec is saved"
    assert offers(out) == [("v1", "t1", 2)], "attempt numbers go on, never repeat"
    task = scheduler.tasks["t1"]
    assert (task.failures, task.error, task.result) == (0, "", None)
    assert scheduler.finished("v1", failed("t1", 1), now=5) == [], "the old attempt is over"

    # The new run has the whole attempt budget: two lost volunteers before it gives up.
    scheduler.volunteer_lost("v1", now=6)
    scheduler.volunteer_joined(volunteer("v2"), [], now=7)
    assert state_of(scheduler, "t1") is TaskState.OFFERED
    out = scheduler.volunteer_lost("v2", now=8)
    assert state_of(scheduler, "t1") is TaskState.FAILED
    assert messages(out, "failed")[0].startswith("gave up after 2 attempts")


def test_a_later_run_of_a_completed_task_runs_it_again() -> None:
    """The manager decides what completed: outputs that did not arrive intact fail a task
    the coordinator saw complete, and `--resume` runs it again."""
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.finished("v1", ok("t1", 1), now=2)
    assert offers(scheduler.submit(MANAGER, [spec("t1", run=1)], now=3)) == [("v1", "t1", 2)]


def test_requeued_tasks_keep_their_place_at_the_front_of_the_queue() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    out = scheduler.submit(MANAGER, [spec(f"t{i}") for i in range(1, 5)], now=0)
    assert offers(out) == [("v1", "t1", 1), ("v1", "t2", 1)]  # one slot plus one ahead
    scheduler.volunteer_lost("v1", now=1)
    out = scheduler.volunteer_joined(volunteer("v2"), [], now=2)
    assert offers(out) == [("v2", "t1", 2), ("v2", "t2", 2)]


def test_a_task_waiting_for_a_busy_volunteer_lets_later_ones_pass() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("large", memory_mb=16384), [], now=0)
    out = scheduler.submit(MANAGER, [spec("busy1"), spec("busy2")], now=0)
    assert offers(out) == [("large", "busy1", 1), ("large", "busy2", 1)]
    scheduler.accepted("large", "busy1", 1, now=1)
    scheduler.submit(MANAGER, [spec("big", memory_mb=8192), spec("small")], now=1)
    out = scheduler.volunteer_joined(volunteer("tiny", memory_mb=1024), [], now=2)
    assert offers(out) == [("tiny", "small", 1)]
    assert state_of(scheduler, "big") is TaskState.QUEUED
    out = scheduler.finished("large", ok("busy1", 1), now=3)
    assert offers(out) == [("large", "big", 1)], "the waiting task kept its turn"


def test_tick_times_out_only_unanswered_offers() -> None:
    scheduler = Scheduler(offer_timeout=5)
    scheduler.volunteer_joined(volunteer("v1", slots=2), [], now=0)
    scheduler.submit(MANAGER, [spec("answered"), spec("silent")], now=0)
    scheduler.accepted("v1", "answered", 1, now=1)
    out = scheduler.tick(now=6)
    assert ("silent", "declined") in events(out)
    assert state_of(scheduler, "answered") is TaskState.RUNNING


def test_an_ended_task_is_forgotten_but_for_its_run_and_attempt() -> None:
    """The spec and result of an ended task live in the store; memory holds the work in hand."""
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2"), spec("t3")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.finished("v1", ok("t1", 1), now=2)
    completed = [i.task for i in out if isinstance(i, SaveTask) and i.task.task_id == "t1"]
    assert completed[0].result is not None, "the instructions still carry the whole task"
    scheduler.cancel(MANAGER, "", ["t2"], now=3)
    assert set(scheduler.tasks) == {"t3"}
    assert scheduler._ended == {
        "t1": EndedTask(run=0, attempt=1, state=TaskState.COMPLETED),
        "t2": EndedTask(run=0, attempt=1, state=TaskState.CANCELLED),
    }
    assert scheduler.finished("v1", ok("t1", 1), now=4) == [], "a duplicate result is ignored"
    assert scheduler.accepted("v1", "t1", 1, now=4) == [
        SendCancel("v1", "t1", "the offer is no longer valid")
    ]
    assert events(scheduler.cancel(MANAGER, "wf", [], now=5)) == [("t3", "cancelled")], (
        "ended ones stay"
    )


def test_restored_ended_tasks_ignore_resubmission_and_take_later_runs() -> None:
    scheduler = Scheduler()
    scheduler.restore([], [("t1", EndedTask(run=2, attempt=7, state=TaskState.FAILED))])
    assert state_of(scheduler, "t1") is TaskState.FAILED
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    assert scheduler.submit(MANAGER, [spec("t1", run=2)], now=1) == [], "the run that ended"
    out = scheduler.submit(MANAGER, [spec("t1", run=3)], now=2)
    assert messages(out, "queued") == ["run 3"]
    assert offers(out) == [("v1", "t1", 8)], "attempt numbers carry on from the saved ones"


def test_a_volunteer_that_leaves_hands_its_tasks_to_others_at_once() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.volunteer_joined(volunteer("v2", slots=2), [], now=2)
    out = scheduler.volunteer_left("v1", "its owner stopped it", now=3)
    assert messages(out, "requeued") == ["its volunteer left (its owner stopped it)"] * 2
    assert sorted(offers(out)) == [("v2", "t1", 2), ("v2", "t2", 2)]
    assert scheduler.running_on("v1") == set()


def test_a_manager_that_moved_sends_the_next_offer_of_its_tasks_to_its_new_address() -> None:
    scheduler = Scheduler()
    scheduler.submit(MANAGER, [spec("t1", manager_address="10.0.0.2:7451")], now=0)
    out = scheduler.submit(MANAGER, [spec("t1", manager_address="10.0.0.9:7451")], now=1)
    saved = [i for i in out if isinstance(i, SaveTask)]
    assert [(s.task.spec.manager_address, s.new_spec) for s in saved] == [("10.0.0.9:7451", True)]
    assert events(out) == [], "the same task, not a new one"
    out = scheduler.volunteer_joined(volunteer("v1"), [], now=2)
    [offer] = [i for i in out if isinstance(i, SendOffer)]
    assert offer.task.manager_address == "10.0.0.9:7451"


def test_a_result_lacking_a_declared_output_is_refused_and_the_task_runs_elsewhere() -> None:
    scheduler = Scheduler()
    scheduler.submit(MANAGER, [spec("t1", outputs=("a.txt",))], now=0)
    scheduler.volunteer_joined(volunteer("v1", slots=4), [], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    scheduler.volunteer_joined(volunteer("v2"), [], now=1)
    out = scheduler.finished("v1", ok("t1", 1), now=2)
    assert events(out)[0] == ("t1", "requeued")
    assert offers(out) == [("v2", "t1", 2)], "never again to the volunteer that sent it"
    assert messages(out, "requeued") == [
        "volunteer v1 sent a result that lacks declared output a.txt; refused"
    ]
    assert not any(isinstance(i, SaveTask) and i.task.result for i in out), "never stored"


@pytest.mark.parametrize(
    ("declared", "produced", "problem"),
    [
        ((), ("x", "y"), None),  # nothing declared: whatever it wrote
        (("a", "b"), ("b", "a"), None),
        (("a", "b"), ("a",), "lacks declared output b"),
        (("a",), ("a", "z"), "names undeclared output z"),
        (("a",), ("a", "a"), "names output 'a' twice"),
    ],
)
def test_what_a_result_must_name(
    declared: tuple[str, ...], produced: tuple[str, ...], problem: str | None
) -> None:
    assert outputs_problem(declared, produced) == problem


def test_a_volunteer_claiming_a_thousand_slots_is_offered_at_most_sixty_four_and_one_ahead() -> (
    None
):
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("greedy", slots=1_000), [], now=0)
    out = scheduler.submit(MANAGER, [spec(f"t{i}", memory_mb=1) for i in range(200)], now=1)
    assert len(offers(out)) == 64 + 1


def test_a_task_only_a_distrusted_volunteer_could_run_is_reported_unschedulable() -> None:
    scheduler = Scheduler()
    scheduler.submit(MANAGER, [spec("t1", outputs=("a.txt",))], now=0)
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.accepted("v1", "t1", 1, now=1)
    out = scheduler.finished("v1", ok("t1", 1), now=2)
    assert offers(out) == [], "not back to the volunteer whose result was refused"
    assert messages(out, "unschedulable") == [
        "no volunteer can run it (v1: its result for it was refused)"
    ]


def test_a_manager_cannot_move_another_managers_task() -> None:
    scheduler = Scheduler()
    scheduler.submit(MANAGER, [spec("t1", manager_address="10.0.0.2:7451")], now=0)
    out = scheduler.submit("intruder", [spec("t1", manager_address="10.6.6.6:7451")], now=1)
    assert out == []
    assert scheduler.tasks["t1"].spec.manager_address == "10.0.0.2:7451"


# --- fetching: accepted, not started yet -----------------------------------------------------


def test_an_older_volunteers_accept_is_running_at_once() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    out = scheduler.accepted("v1", "t1", 1, now=1)  # no word that it will say when it starts
    assert events(out) == [("t1", "running")]
    assert state_of(scheduler, "t1") is TaskState.RUNNING
    completed = scheduler.finished("v1", ok("t1", 1), now=2)
    assert ("t1", "completed") in events(completed)


def test_fetching_tasks_take_the_room_running_ones_did_and_starting_frees_none() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec(f"t{i}") for i in range(4)], now=0)
    scheduler.accepted("v1", "t0", 1, now=1, says_started=True)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    assert scheduler.running_on("v1") == {"t0", "t1"}
    assert offers(scheduler.tick(now=2)) == [], "one slot and one ahead, both fetching"
    out = scheduler.started("v1", "t0", 1, now=3)
    assert offers(out) == [], "a task that starts held its room already"
    assert {state_of(scheduler, "t0"), state_of(scheduler, "t1")} == {
        TaskState.RUNNING,
        TaskState.FETCHING,
    }
    out = scheduler.finished("v1", ok("t0", 1), now=4)
    assert offers(out) == [("v1", "t2", 1)], "the room t0 held, and only that"


def test_word_of_a_start_counts_once_and_only_for_the_current_attempt() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.volunteer_joined(volunteer("v2"), [], now=0)
    [(first, _, _)] = offers(scheduler.submit(MANAGER, [spec("t1")], now=0))
    other = "v2" if first == "v1" else "v1"
    scheduler.accepted(first, "t1", 1, now=1, says_started=True)
    assert scheduler.started(other, "t1", 1, now=2) == [], "not its task"
    assert scheduler.started(first, "t1", 2, now=2) == [], "not this attempt"
    assert state_of(scheduler, "t1") is TaskState.FETCHING
    assert events(scheduler.started(first, "t1", 1, now=3)) == [("t1", "running")]
    assert scheduler.started(first, "t1", 1, now=4) == [], "said twice"


def test_a_task_fetching_on_a_lost_volunteer_goes_back_and_elsewhere() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    out = scheduler.volunteer_disconnected("v1", now=2)
    assert events(out) == [], "held like a running task: it may reconnect with it"
    out = scheduler.volunteer_lost("v1", now=10)
    assert messages(out, "requeued") == ["its volunteer was lost"]
    assert scheduler.running_on("v1") == set()
    out = scheduler.volunteer_joined(volunteer("v2"), [], now=11)
    assert offers(out) == [("v2", "t1", 2)]
    assert scheduler.started("v1", "t1", 1, now=12) == [], "the lost one's word is stale"
    assert scheduler.finished("v1", ok("t1", 1), now=13) == [], "and so is its result"


def test_a_fetching_volunteer_that_reconnects_without_the_task_hands_it_back() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    scheduler.volunteer_disconnected("v1", now=2)
    out = scheduler.volunteer_joined(volunteer("v1"), ["t1"], now=3)
    assert state_of(scheduler, "t1") is TaskState.FETCHING, "it still has it"
    out = scheduler.volunteer_joined(volunteer("v1"), [], now=4)
    assert ("t1", "requeued") in events(out)


def test_cancelling_a_fetching_task_calls_it_off_on_its_volunteer() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1"), spec("t2")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    scheduler.accepted("v1", "t2", 1, now=1, says_started=True)
    scheduler.started("v1", "t1", 1, now=2)
    out = scheduler.cancel(MANAGER, "wf", [], now=3)
    assert [i for i in out if isinstance(i, SendCancel)] == [
        SendCancel("v1", "t1", "cancelled"),
        SendCancel("v1", "t2", "cancelled"),
    ], "the running task and the one fetching"
    assert events(out) == [("t1", "cancelled"), ("t2", "cancelled")]
    assert scheduler.running_on("v1") == set()
    assert scheduler.started("v1", "t2", 1, now=4) == [], "a cancelled task does not start"


def test_a_task_can_fail_while_fetching_and_is_retried() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1", retries=1)], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    out = scheduler.finished("v1", failed("t1", 1, "could not fetch input a.bin: gone"), now=2)
    assert messages(out, "requeued") == ["could not fetch input a.bin: gone; retry 1 of 1"]
    assert offers(out) == [("v1", "t1", 2)]


def test_progress_of_a_fetching_task_is_passed_on() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("v1"), [], now=0)
    scheduler.submit(MANAGER, [spec("t1")], now=0)
    scheduler.accepted("v1", "t1", 1, now=1, says_started=True)
    assert events(scheduler.progressed("v1", "t1", 1, 40.0, now=2)) == [("t1", "progress")]


def test_restore_keeps_fetching_tasks_with_their_volunteer() -> None:
    fetching = ScheduledTask(spec("t1"), MANAGER, TaskState.FETCHING, attempt=1, volunteer_id="v1")
    scheduler = Scheduler()
    scheduler.restore([fetching])
    assert scheduler.running_on("v1") == {"t1"}
    assert events(scheduler.started("v1", "t1", 1, now=1)) == [("t1", "running")]
