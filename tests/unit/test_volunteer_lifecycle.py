"""The volunteer's lifecycle as a pure state machine: each rule of volunteer_node/lifecycle.py
driven by stimuli, checked on the instructions that come back (no network, no clock)."""

from __future__ import annotations

import math
from dataclasses import replace

from daemon.models import OwnerLimits, ResourceRequest, TaskResult, TaskSpec
from volunteer_node.lifecycle import (
    DRAINING,
    OWNER_HOLD,
    AttemptView,
    CallOff,
    Fetch,
    Freeze,
    Hold,
    Instruction,
    Run,
    SaveAccepted,
    SaveAcknowledged,
    SaveCalledOff,
    SaveOwnerState,
    SaveReady,
    SaveResult,
    SendAccept,
    SendAvailability,
    SendDecline,
    SendResult,
    SendStarted,
    Thaw,
    VolunteerLifecycle,
)

GRACE = 600.0


def task(task_id: str, attempt: int = 1) -> TaskSpec:
    return TaskSpec(
        task_id, "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60, attempt=attempt,
        manager_address="10.0.0.2:7451", manager_id="manager-1",
    )  # fmt: skip


def result(task_id: str, attempt: int = 1) -> TaskResult:
    return TaskResult(task_id, attempt, 0, "")


def lifecycle(slots: int = 1) -> VolunteerLifecycle:
    return VolunteerLifecycle(OwnerLimits(max_concurrent_tasks=slots), hold_grace_seconds=GRACE)


def kinds(instructions: list[Instruction]) -> list[str]:
    return [type(i).__name__ for i in instructions]


def accepted(machine: VolunteerLifecycle, *task_ids: str) -> None:
    for task_id in task_ids:
        assert kinds(machine.offered(task(task_id), None)) == [
            "SaveAccepted",
            "SendAccept",
            "Fetch",
        ]


def pause(
    machine: VolunteerLifecycle, now: float = 0.0, until: float = math.inf
) -> list[Instruction]:
    return machine.hold(Hold(OWNER_HOLD, "paused by owner", until, since=now))


def test_an_offer_that_fits_is_saved_then_accepted_then_fetched() -> None:
    machine = lifecycle()
    spec = task("a")
    assert machine.offered(spec, None) == [SaveAccepted(spec), SendAccept(("a", 1)), Fetch(spec)]
    assert machine.task_ids() == ("a",)


def test_an_offer_is_declined_with_the_first_reason_that_applies() -> None:
    machine = lifecycle(slots=1)
    assert machine.offered(task("x"), "not enough memory") == [
        SendDecline(("x", 1), "not enough memory")
    ]
    accepted(machine, "a")
    assert machine.offered(task("a"), None) == [], "the same offer twice: said yes already"
    assert machine.offered(task("a", attempt=2), None) == [
        SendDecline(("a", 2), "already running this task")
    ], "a later attempt of a task held is refused"
    accepted(machine, "b")  # the one fetched ahead
    assert machine.offered(task("c"), None) == [SendDecline(("c", 1), "busy: holding 2 of 2 tasks")]
    assert machine.held_count() == 2


def test_ready_tasks_start_in_turn_as_slots_free_and_no_more_than_the_slots_are_said_to_run() -> (
    None
):
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    assert machine.fetched(("b", 1)) == [SaveReady(("b", 1)), Run(("b", 1)), SendStarted(("b", 1))]
    assert machine.fetched(("a", 1)) == [SaveReady(("a", 1))], "the one slot is taken"
    # b's container ends: the slot frees and a starts, but b is said to run until its
    # result is sent, so a is not said to run yet.
    assert machine.run_ended(("b", 1)) == [Run(("a", 1))]
    assert machine.finished(result("b")) == [
        SaveResult(result("b"), "10.0.0.2:7451"),
        SendResult(result("b")),
        SendStarted(("a", 1)),
    ]
    assert machine.ended(("b", 1)) == [], "its pipeline ends after its result: nothing more"


def test_a_task_that_starts_while_the_slots_are_said_taken_is_said_when_one_is_given_back() -> None:
    machine = lifecycle(slots=2)
    accepted(machine, "a", "b", "c")
    for key in (("a", 1), ("b", 1), ("c", 1)):
        machine.fetched(key)
    assert machine.run_ended(("a", 1)) == [Run(("c", 1))], "c starts, not said to run"
    assert machine.cancel("c", "cancelled")[0] == CallOff(("c", 1), "cancelled")
    assert machine.run_ended(("c", 1)) == []
    assert machine.ended(("c", 1)) == [], "it ended before it was said to run: nobody hears"
    assert kinds(machine.finished(result("a"))) == ["SaveResult", "SendResult"]
    accepted(machine, "d")
    assert machine.fetched(("d", 1)) == [SaveReady(("d", 1)), Run(("d", 1)), SendStarted(("d", 1))]
    assert machine.connected() == [
        SendStarted(("b", 1)),
        SendStarted(("d", 1)),
        SendResult(result("a")),
    ]


def test_a_new_session_hears_again_what_runs_and_every_result_not_acknowledged() -> None:
    machine = lifecycle(slots=1)
    machine.restore([result("old", 3)])
    accepted(machine, "a", "b")
    machine.fetched(("a", 1))
    machine.fetched(("b", 1))
    assert machine.connected() == [SendStarted(("a", 1)), SendResult(result("old", 3))]
    machine.run_ended(("a", 1))
    machine.finished(result("a"))
    assert machine.connected() == [
        SendStarted(("b", 1)),
        SendResult(result("old", 3)),
        SendResult(result("a")),
    ], "results are sent again on every session until acknowledged"
    assert machine.acknowledged(("old", 3)) == [SaveAcknowledged(("old", 3))]
    assert machine.acknowledged(("old", 3)) == [], "a second acknowledgement changes nothing"
    assert machine.connected() == [SendStarted(("b", 1)), SendResult(result("a"))]
    assert machine.task_ids() == ("a", "b"), "a result in flight keeps its task with us"


def test_cancel_while_fetching_calls_the_attempt_off_and_its_late_steps_change_nothing() -> None:
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    machine.fetched(("b", 1))
    assert machine.cancel("a", "workflow deleted") == [
        CallOff(("a", 1), "workflow deleted"),
        SaveCalledOff(("a", 1), "workflow deleted", False),
    ]
    assert machine.cancel("a", "again") == [], "called off once"
    assert machine.fetched(("a", 1)) == [], "a fetch finishing after the cancel starts nothing"
    assert machine.finished(result("a")) == [], "nor is a result of it sent"
    assert machine.ended(("a", 1)) == []
    assert machine.task_ids() == ("b",)
    assert machine.offered(task("a", attempt=2), None)[1] == SendAccept(("a", 2))


def test_a_running_task_called_off_holds_its_slot_until_its_container_is_gone() -> None:
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    machine.fetched(("a", 1))
    machine.fetched(("b", 1))
    machine.cancel("a", "cancelled")
    assert machine.run_ended(("a", 1)) == [Run(("b", 1))], "its container is gone: b's turn"
    assert machine.ended(("a", 1)) == [SendStarted(("b", 1))]


def test_pause_freezes_running_tasks_declines_offers_and_starts_nothing_until_resumed() -> None:
    machine = lifecycle(slots=2)
    accepted(machine, "a", "b", "c")
    machine.fetched(("a", 1))
    machine.fetched(("b", 1))
    hold = Hold(OWNER_HOLD, "paused by owner", math.inf, since=0.0)
    assert pause(machine) == [
        Freeze(("a", 1)),
        Freeze(("b", 1)),
        SaveOwnerState(hold, draining=False),
        SendAvailability(),
    ]
    assert machine.availability() == ("paused by owner", 0.0)
    assert machine.offered(task("d"), None) == [SendDecline(("d", 1), "paused by owner")]
    assert machine.fetched(("c", 1)) == [SaveReady(("c", 1))], "nothing starts while paused"
    assert machine.run_ended(("a", 1)) == [], "a frozen task that ends frees its slot, still paused"
    assert machine.resume() == [
        Thaw(("b", 1)),
        Run(("c", 1)),
        SaveOwnerState(None, draining=False),
        SendAvailability(),
    ]
    assert machine.availability() == ("", 0.0)
    machine.finished(result("a"))
    assert machine.offered(task("d"), None)[1] == SendAccept(("d", 1))


def test_a_container_starting_as_the_pause_comes_is_frozen_once_it_is_up() -> None:
    machine = lifecycle()
    accepted(machine, "a")
    machine.fetched(("a", 1))  # its turn: the container is being created
    pause(machine)
    assert machine.container_started(("a", 1)) == [Freeze(("a", 1))]
    machine.resume()
    assert machine.container_started(("a", 1)) == [], "running: nothing to do"


def test_a_pause_for_a_while_ends_by_itself() -> None:
    machine = lifecycle()
    accepted(machine, "a")
    machine.fetched(("a", 1))
    pause(machine, now=100.0, until=400.0)
    assert machine.next_deadline() == 400.0, "the end comes before the grace"
    assert machine.tick(399.0) == []
    assert machine.availability() == ("paused by owner", 400.0)
    assert machine.tick(400.0) == [Thaw(("a", 1)), SaveOwnerState(None, False), SendAvailability()]
    assert machine.holds == {}
    assert machine.next_deadline() is None, "nothing to wake for"


def test_a_hold_longer_than_the_grace_hands_back_every_task_but_those_delivering() -> None:
    machine = lifecycle(slots=2)
    accepted(machine, "a", "b", "c")
    machine.fetched(("a", 1))
    machine.fetched(("b", 1))
    machine.run_ended(("b", 1))  # b delivers its outputs: it is as good as done
    pause(machine, now=0.0)
    assert machine.next_deadline() == GRACE
    assert machine.tick(GRACE - 1) == []
    reason = "paused by owner for over 10 min"
    handed = machine.tick(GRACE)
    assert handed == [
        CallOff(("a", 1), reason),
        SaveCalledOff(("a", 1), reason, True),
        SendDecline(("a", 1), reason),
        CallOff(("c", 1), reason),
        SaveCalledOff(("c", 1), reason, True),
        SendDecline(("c", 1), reason),
    ]
    assert machine.tick(GRACE + 1) == [], "handed back once"
    assert machine.next_deadline() is None, "only a delivery is left, which no hold stops"


def test_a_second_pause_keeps_the_first_ones_start_for_the_grace() -> None:
    machine = lifecycle()
    pause(machine, now=0.0, until=1000.0)
    pause(machine, now=500.0, until=2000.0)
    (hold,) = machine.holds.values()
    assert (hold.since, hold.until) == (0.0, 2000.0)


def test_drain_hands_back_what_has_not_started_and_lets_the_running_task_finish() -> None:
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    machine.fetched(("a", 1))
    reason = "its owner is draining the volunteer"
    assert machine.drain() == [
        CallOff(("b", 1), reason),
        SaveCalledOff(("b", 1), reason, True),
        SendDecline(("b", 1), reason),
        SaveOwnerState(None, draining=True),
        SendAvailability(),
    ]
    assert machine.availability() == (DRAINING, 0.0)
    declined = machine.offered(task("c"), None)
    assert kinds(declined) == ["SendDecline"]
    assert "draining" in declined[0].reason  # type: ignore[union-attr]
    machine.run_ended(("a", 1))
    assert kinds(machine.finished(result("a"))) == ["SaveResult", "SendResult"]
    assert machine.view().draining
    assert machine.held_count() == 1, "b is still being stopped"
    machine.ended(("b", 1))
    assert machine.held_count() == 0
    assert machine.resume() == [SaveOwnerState(None, draining=False), SendAvailability()]
    assert kinds(machine.offered(task("c"), None)) == ["SaveAccepted", "SendAccept", "Fetch"]


def test_stop_calls_everything_off_and_keeps_the_outbox() -> None:
    machine = lifecycle()
    accepted(machine, "a")
    machine.fetched(("a", 1))
    machine.restore([result("old")])
    assert kinds(machine.stop()) == ["CallOff", "SaveCalledOff"]
    assert machine.offered(task("b"), None) == [SendDecline(("b", 1), "this volunteer is stopping")]
    assert machine.run_ended(("a", 1)) == [], "nothing starts while stopping"
    assert machine.task_ids() == ("a", "old")


def test_the_view_shows_holds_phases_and_what_waits_for_acknowledgement() -> None:
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    machine.fetched(("a", 1))
    pause(machine, now=5.0, until=50.0)
    machine.cancel("b", "cancelled")
    view = machine.view()
    assert [h.reason for h in view.holds] == ["paused by owner"]
    assert [(a.task_id, a.phase) for a in view.attempts] == [("a", "frozen"), ("b", "stopping")]
    assert (view.slots, view.held_most, view.unacknowledged) == (1, 2, 0)


def test_a_result_of_an_attempt_called_off_is_dropped_but_its_word_and_room_go() -> None:
    """A runtime may end a run normally although it was cancelled (its clean-up took the
    cancel): the result is not sent, and the next task is still said to run."""
    machine = lifecycle(slots=1)
    accepted(machine, "a", "b")
    machine.fetched(("a", 1))
    machine.fetched(("b", 1))
    machine.cancel("a", "cancelled")
    machine.run_ended(("a", 1))  # b takes the slot, not said to run: a still is
    assert machine.finished(result("a")) == [SendStarted(("b", 1))]
    assert machine.ended(("a", 1)) == []
    assert machine.outbox == {}
    assert machine.connected() == [SendStarted(("b", 1))], "a is said to run no more"


def test_the_owners_pause_and_drain_come_back_after_a_restart_unless_the_pause_ran_out() -> None:
    machine = lifecycle()
    pause_until = Hold(OWNER_HOLD, "paused by owner until 12:00", until=500.0, since=10.0)
    machine.restore_owner_state(pause_until, draining=True, now=100.0)
    assert machine.availability() == ("paused by owner until 12:00", 500.0)
    assert machine.offered(task("a"), None) == [
        SendDecline(("a", 1), "paused by owner until 12:00")
    ]
    assert machine.next_deadline() == 500.0
    again = lifecycle()
    again.restore_owner_state(pause_until, draining=False, now=600.0)
    assert again.holds == {}, "a pause that ran out while the volunteer was down is over"
    assert again.availability() == ("", 0.0)


def test_a_rule_lifted_while_the_owner_pause_stays_thaws_nothing() -> None:
    machine = lifecycle()
    accepted(machine, "a")
    machine.fetched(("a", 1))
    pause(machine)
    machine.hold(Hold("schedule", "outside its hours", 900.0, since=1.0))
    assert machine.lift("schedule") == [SendAvailability()], "still paused by its owner"
    assert machine.frozen() == [("a", 1)]


def test_the_owners_caps_bound_all_the_tasks_running_at_once_not_each() -> None:
    """`--max-cpus 1 --max-memory-mb 300 --max-concurrent-tasks 3`: three tasks of 1 CPU
    and 256 MiB each ran at once (3 CPUs, 768 MiB); now they run one at a time, and the
    volunteer holds no more than it can run together but for one fetched ahead."""
    limits = OwnerLimits(max_cpus=1, max_memory_mb=300, max_concurrent_tasks=3)
    machine = VolunteerLifecycle(limits, hold_grace_seconds=GRACE)
    accepted(machine, "a", "b")
    assert machine.offered(task("c"), None) == [
        SendDecline(
            ("c", 1), "busy: its owner's caps (1 CPU and 300 MiB for all its tasks) are taken "
            "by the 2 tasks it holds",
        )
    ]  # fmt: skip
    assert machine.fetched(("a", 1)) == [SaveReady(("a", 1)), Run(("a", 1)), SendStarted(("a", 1))]
    assert machine.fetched(("b", 1)) == [SaveReady(("b", 1))], "no room beside a"
    assert machine.run_ended(("a", 1)) == [Run(("b", 1)), SendStarted(("b", 1))]


def test_tasks_that_fit_together_under_the_caps_run_together_in_turn() -> None:
    limits = OwnerLimits(max_cpus=4, max_memory_mb=1000, max_concurrent_tasks=3)
    machine = VolunteerLifecycle(limits, hold_grace_seconds=GRACE)
    big = replace(task("big"), resources=ResourceRequest(cpus=3, memory_mb=512))
    for spec in (task("a"), big, task("c")):
        assert kinds(machine.offered(spec, None)) == ["SaveAccepted", "SendAccept", "Fetch"]
    for key in (("a", 1), ("big", 1), ("c", 1)):
        machine.fetched(key)
    assert [i for i in machine.view().attempts if i.phase == "running"] == [
        AttemptView("a", 1, "wf", "running"),
        AttemptView("big", 1, "wf", "running"),
    ], "1 + 3 CPUs, 256 + 512 MiB: both fit; c (1 CPU more) waits, in turn"
    assert machine.run_ended(("a", 1)) == [Run(("c", 1)), SendStarted(("c", 1))]


def test_a_reload_hands_back_held_tasks_the_new_limits_no_longer_allow_and_lets_runners_run() -> (
    None
):
    limits = OwnerLimits(max_memory_mb=1024, max_concurrent_tasks=1)
    machine = VolunteerLifecycle(limits, hold_grace_seconds=GRACE)
    big = replace(task("big"), resources=ResourceRequest(memory_mb=512))
    small = replace(task("small"), resources=ResourceRequest(memory_mb=64))
    for spec in (big, small):
        machine.offered(spec, None)
    machine.fetched(("big", 1))  # it runs
    reason = "its owner's new limits: its owner's caps are now 256 MiB for all its tasks"
    lowered = OwnerLimits(max_memory_mb=256, max_concurrent_tasks=1)
    assert machine.reconfigure(lowered, GRACE) == [], "what runs finishes; small fits alone"
    assert machine.reconfigure(lowered, GRACE, {("small", 1): "image x is not allowed"}) == [
        CallOff(("small", 1), "its owner's new limits: image x is not allowed"),
        SaveCalledOff(("small", 1), "its owner's new limits: image x is not allowed", True),
        SendDecline(("small", 1), "its owner's new limits: image x is not allowed"),
    ]
    again = VolunteerLifecycle(limits, hold_grace_seconds=GRACE)
    for spec in (small, big):
        again.offered(spec, None)
    again.fetched(("small", 1))
    again.fetched(("big", 1))  # waits behind small: one slot
    out = again.reconfigure(lowered, 60.0)
    assert out == [
        CallOff(("big", 1), reason),
        SaveCalledOff(("big", 1), reason, True),
        SendDecline(("big", 1), reason),
    ], "a task that can never fit again would hold up every task behind it"
    assert again.hold_grace_seconds == 60.0
