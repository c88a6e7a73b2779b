"""Copies of a replicated task, placed by the scheduler state machine: never two on one
volunteer, nor on two machines of one owner, and unschedulable with the reason when the pool
has no distinct volunteer left."""

from __future__ import annotations

from dataclasses import replace

from coordinator_node.scheduler import (
    PROBATION_PATIENCE_SECONDS,
    Publish,
    ScheduledTask,
    Scheduler,
    SendCancel,
    SendOffer,
    replica_problem,
)
from daemon.models import EventKind, TaskResult, TaskSpec
from tests.unit.test_scheduler import MANAGER, offers, spec, volunteer


def copies(task_id: str, count: int) -> list[TaskSpec]:
    """The first copy keeps the task's id; the others are `<id>~<n>`."""
    return [
        spec(task_id if n == 1 else f"{task_id}~{n}", replica_of=task_id)
        for n in range(1, count + 1)
    ]


def test_two_copies_go_to_two_volunteers_even_when_one_has_room_for_both() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("big", slots=4), (), now=0)
    scheduler.volunteer_joined(volunteer("small", slots=1), (), now=0)
    placed = offers(scheduler.submit(MANAGER, copies("t", 2), now=1))
    assert sorted(vid for vid, _, _ in placed) == ["big", "small"]


def test_a_second_copy_waits_while_the_only_other_volunteer_is_busy() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("b", slots=1), (), now=0)
    # b is full: one slot and one task fetched ahead.
    assert len(offers(scheduler.submit(MANAGER, [spec("other"), spec("other2")], now=1))) == 2
    scheduler.volunteer_joined(volunteer("a", slots=2), (), now=1)
    placed = offers(scheduler.submit(MANAGER, copies("t", 2), now=2))
    # a takes one copy; the other may not join it there, and is not unschedulable: b fits.
    assert [p for p in placed if p[1].startswith("t")] == [("a", "t", 1)]
    assert "t~2" in scheduler.tasks
    assert scheduler.tasks["t~2"].volunteer_id == ""


def test_one_volunteer_pool_reports_the_second_copy_unschedulable_with_the_reason() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("only", slots=4), (), now=0)
    out = scheduler.submit(MANAGER, copies("t", 2), now=1)
    assert offers(out) == [("only", "t", 1)]
    unschedulable = [
        i.event for i in out if isinstance(i, Publish) and i.event.kind is EventKind.UNSCHEDULABLE
    ]
    assert [e.task_id for e in unschedulable] == ["t~2"]
    assert "holds another copy of this task" in unschedulable[0].message
    assert "distinct volunteers" in unschedulable[0].message


def test_a_parked_copy_goes_to_a_volunteer_that_joins_later() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("only", slots=4), (), now=0)
    scheduler.submit(MANAGER, copies("t", 2), now=1)
    out = scheduler.volunteer_joined(volunteer("late"), (), now=2)
    assert offers(out) == [("late", "t~2", 1)]


def test_avoided_volunteers_never_get_the_copy() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("ran-it", slots=4), (), now=0)
    scheduler.volunteer_joined(volunteer("fresh"), (), now=0)
    copy = replace(copies("t", 2)[1], avoid_volunteers=("ran-it",))
    assert offers(scheduler.submit(MANAGER, [copy], now=1)) == [("fresh", "t~2", 1)]


def test_two_machines_of_one_owner_never_hold_two_copies() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("alice-1"), owner="alice"), (), now=0)
    scheduler.volunteer_joined(replace(volunteer("alice-2"), owner="alice"), (), now=0)
    scheduler.volunteer_joined(replace(volunteer("bob-1"), owner="bob"), (), now=0)
    placed = offers(scheduler.submit(MANAGER, copies("t", 3), now=1))
    holders = sorted(vid for vid, _, _ in placed)
    assert len(placed) == 2
    assert holders in (["alice-1", "bob-1"], ["alice-2", "bob-1"])
    third = next(t for t in scheduler.tasks.values() if t.volunteer_id == "")
    assert third.spec.replica_of == "t"


def test_an_owner_whose_machine_ran_a_copy_gets_no_other_copy_on_another_machine() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("alice-1"), owner="alice"), (), now=0)
    scheduler.volunteer_joined(replace(volunteer("alice-2"), owner="alice"), (), now=0)
    copy = replace(copies("t", 2)[1], avoid_volunteers=("alice-1",))
    out = scheduler.submit(MANAGER, [copy], now=1)
    assert offers(out) == []
    (event,) = [i.event for i in out if isinstance(i, Publish)][1:]
    assert event.kind is EventKind.UNSCHEDULABLE
    assert "its owner (alice) has another copy" in event.message


def test_volunteers_without_owners_are_not_kept_apart_by_owner() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a"), (), now=0)
    scheduler.volunteer_joined(volunteer("b"), (), now=0)
    assert len(offers(scheduler.submit(MANAGER, copies("t", 2), now=1))) == 2


def test_a_copy_that_ended_frees_its_volunteer_for_other_tasks_but_not_for_its_siblings() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a", slots=2), (), now=0)
    first, second = copies("t", 2)
    scheduler.submit(MANAGER, [first], now=1)
    scheduler.accepted("a", "t", 1, now=2)
    scheduler.finished("a", TaskResult("t", 1, 0, ""), now=3)
    # The manager names the volunteer of the ended copy; without it the sibling could go
    # there (the scheduler forgets ended tasks).
    out = scheduler.submit(MANAGER, [replace(second, avoid_volunteers=("a",))], now=4)
    assert offers(out) == []
    assert scheduler.tasks["t~2"].spec.avoid_volunteers == ("a",)
    assert "t" not in scheduler.tasks  # ended


def test_a_copy_never_goes_where_a_sibling_ended_even_with_a_stale_avoid_list() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("cheat"), (), now=0)
    first, second = copies("t", 2)  # quorum: both submitted at once, nobody to avoid yet
    scheduler.submit(MANAGER, [first, second], now=1)
    assert scheduler.tasks["t"].volunteer_id == "cheat"
    scheduler.accepted("cheat", "t", 1, now=2)
    out = scheduler.finished("cheat", TaskResult("t", 1, 0, ""), now=3)
    assert offers(out) == []  # t~2 may not go where t ran
    scheduler.volunteer_joined(volunteer("honest"), (), now=4)
    assert scheduler.tasks["t~2"].volunteer_id == "honest"


def test_another_managers_task_of_the_same_name_is_no_sibling() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a", slots=2), (), now=0)
    scheduler.submit(MANAGER, [copies("t", 2)[0]], now=1)
    decoy = spec("t~2", replica_of="t")
    assert offers(scheduler.submit("another-manager", [decoy], now=2)) == [("a", "t~2", 1)]


def test_an_offer_says_nothing_of_copies() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a"), (), now=0)
    check = replace(copies("t", 2)[1], avoid_volunteers=("b",))
    [offer] = [i for i in scheduler.submit(MANAGER, [check], now=1) if isinstance(i, SendOffer)]
    assert (offer.task.replica_of, offer.task.avoid_volunteers) == ("", ())


def test_a_copy_id_must_name_the_task_it_copies() -> None:
    assert replica_problem(spec("t~2", replica_of="t")) is None
    assert replica_problem(spec("t", replica_of="t")) is None
    assert replica_problem(spec("t")) is None
    assert replica_problem(spec("victim", replica_of="t")) == (
        "task 'victim' cannot be a copy of 't'"
    )
    assert replica_problem(spec("t~x", replica_of="t")) is not None


def test_a_barred_volunteer_loses_its_tasks_with_a_cancel_and_gets_no_more_offers() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("cheat", slots=2), (), now=0)
    scheduler.submit(MANAGER, [spec("x"), spec("y")], now=1)
    scheduler.accepted("cheat", "x", 1, now=2)
    out = scheduler.volunteer_barred("cheat", "blocklisted", now=3)
    cancels = sorted(i.task_id for i in out if isinstance(i, SendCancel))
    assert cancels == ["x", "y"]
    assert not [i for i in out if isinstance(i, SendOffer)]
    assert scheduler.running_on("cheat") == set()
    out = scheduler.submit(MANAGER, [spec("z")], now=4)
    assert offers(out) == []


def test_a_check_copy_goes_before_the_tasks_already_queued() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a"), (), now=0)
    # a holds two (one slot, one ahead); three more wait.
    scheduler.submit(MANAGER, [spec(f"q{n}") for n in range(5)], now=1)
    scheduler.volunteer_joined(volunteer("b"), (), now=1)
    scheduler.volunteer_disconnected("b", now=1)  # b ran nothing yet; it comes back below
    check = replace(copies("t", 2)[1], avoid_volunteers=("a",))
    scheduler.submit(MANAGER, [check], now=2)
    placed = offers(scheduler.volunteer_joined(volunteer("b"), (), now=3))
    assert placed[0] == ("b", "t~2", 1)


def test_a_volunteer_on_probation_holds_one_replicated_task_at_a_time() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("new", slots=3), probation=True), (), now=0)
    out = scheduler.submit(
        MANAGER,
        [spec("r1", replica_of="r1"), spec("r2", replica_of="r2"), spec("plain")],
        now=1,
    )
    # One replicated task; r2 waits, not unschedulable, and dispatch looks no further (the
    # unreplicated task behind it waits too, a dispatch or two).
    assert sorted(t for _, t, _ in offers(out)) == ["r1"]
    assert not [i for i in out if isinstance(i, Publish) and i.event.kind.value == "unschedulable"]
    # Its probation ends (a result of its agreed): the rest goes to it.
    out = scheduler.volunteer_changed(volunteer("new", slots=3), now=2)
    assert sorted(t for _, t, _ in offers(out)) == ["plain", "r2"]


def test_a_queue_held_back_by_probation_is_not_walked_at_each_dispatch() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("new", slots=2), probation=True), (), now=0)
    scheduler.submit(MANAGER, [spec(f"r{n}", replica_of=f"r{n}") for n in range(1000)], now=1)
    popped = 0
    pop = scheduler._queue.pop_front

    def counting_pop() -> object:
        nonlocal popped
        popped += 1
        return pop()

    scheduler._queue.pop_front = counting_pop  # type: ignore[method-assign,assignment]
    scheduler.tick(now=2)
    assert popped <= 2


def test_on_probation_the_next_replicated_task_waits_for_the_last_ones_verdict() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("new", slots=2), probation=True), (), now=0)
    scheduler.submit(MANAGER, [spec("r1", replica_of="r1"), spec("r2", replica_of="r2")], now=1)
    scheduler.accepted("new", "r1", 1, now=2)
    out = scheduler.finished("new", TaskResult("r1", 1, 0, ""), now=3)
    assert offers(out) == []  # r1's result awaits its verdict
    assert offers(scheduler.tick(now=4)) == []
    assert offers(scheduler.judged([("new", "r1")], now=5)) == [("new", "r2", 1)]


def test_on_probation_a_verdict_that_never_comes_holds_it_back_only_so_long() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("new"), probation=True), (), now=0)
    scheduler.submit(MANAGER, [spec("r1", replica_of="r1"), spec("r2", replica_of="r2")], now=1)
    scheduler.accepted("new", "r1", 1, now=2)
    scheduler.finished("new", TaskResult("r1", 1, 0, ""), now=3)
    assert offers(scheduler.tick(now=3 + PROBATION_PATIENCE_SECONDS - 1)) == []
    assert offers(scheduler.tick(now=3 + PROBATION_PATIENCE_SECONDS)) == [("new", "r2", 1)]


def test_after_a_restart_a_copy_still_avoids_where_its_ended_sibling_ran() -> None:
    scheduler = Scheduler()
    queued = ScheduledTask(spec=copies("t", 2)[1], manager_id=MANAGER)
    scheduler.restore([queued], ran=[(MANAGER, "t", "ran-it")])
    out = scheduler.volunteer_joined(volunteer("ran-it"), (), now=0)
    assert offers(out) == []
    assert offers(scheduler.volunteer_joined(volunteer("fresh"), (), now=1)) == [
        ("fresh", "t~2", 1)
    ]


def test_newcomers_on_probation_check_each_others_results_without_waiting() -> None:
    scheduler = Scheduler()
    for vid in ("a", "b"):
        scheduler.volunteer_joined(replace(volunteer(vid), probation=True), (), now=0)
    scheduler.submit(MANAGER, [spec("r1", replica_of="r1"), spec("r2", replica_of="r2")], now=1)
    ran = {task_id: scheduler.tasks[task_id].volunteer_id for task_id in ("r1", "r2")}
    assert sorted(ran.values()) == ["a", "b"]
    for task_id, vid in ran.items():
        scheduler.accepted(vid, task_id, 1, now=2)
        scheduler.finished(vid, TaskResult(task_id, 1, 0, ""), now=3)
    # Each awaits a verdict, which needs the other to check its result: checks go at once.
    checks = [
        replace(spec(f"{task_id}~2", replica_of=task_id), avoid_volunteers=(vid,))
        for task_id, vid in ran.items()
    ]
    out = scheduler.submit(MANAGER, checks, now=4)
    other = {"a": "b", "b": "a"}
    assert sorted(offers(out)) == sorted(
        (other[vid], f"{task_id}~2", 1) for task_id, vid in ran.items()
    )


def test_a_newcomer_awaiting_its_verdict_leaves_checks_to_a_trusted_volunteer() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(replace(volunteer("new", slots=4), probation=True), (), now=0)
    scheduler.submit(MANAGER, [spec("r1", replica_of="r1")], now=1)
    scheduler.accepted("new", "r1", 1, now=2)
    scheduler.finished("new", TaskResult("r1", 1, 0, ""), now=3)  # awaits its verdict
    scheduler.volunteer_joined(volunteer("a-trusted"), (), now=3)
    # The newcomer has the most room, yet the check goes to the trusted volunteer.
    check = replace(spec("o~2", replica_of="o"), avoid_volunteers=("elsewhere",))
    assert offers(scheduler.submit(MANAGER, [check], now=4)) == [("a-trusted", "o~2", 1)]
    # A pool of newcomers only: the newcomer checks, though its own result still awaits.
    out = scheduler.volunteer_left("a-trusted", "stopped", now=5)
    assert offers(out) == [("new", "o~2", 2)]


def test_a_copy_fetching_keeps_its_sibling_off_that_volunteer_as_a_running_one_does() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(volunteer("a", slots=4), (), now=0)
    first, second = copies("t", 2)
    assert offers(scheduler.submit(MANAGER, [first], now=1)) == [("a", "t", 1)]
    scheduler.accepted("a", "t", 1, now=2, says_started=True)
    out = scheduler.submit(MANAGER, [second], now=3)
    assert offers(out) == []
    (event,) = [i.event for i in out if isinstance(i, Publish)][1:]
    assert event.kind is EventKind.UNSCHEDULABLE
    assert "holds another copy of this task" in event.message
    scheduler.started("a", "t", 1, now=4)
    assert offers(scheduler.tick(now=5)) == [], "running: still apart"
