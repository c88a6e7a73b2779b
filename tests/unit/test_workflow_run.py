"""A workflow's progress from coordinator events, dependencies included."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from daemon.models import EventKind, FileRef, TaskEvent, TaskResult, WorkflowCounts
from manager_node.validation import Validation, copy_id
from manager_node.workflow import (
    TaskStatus,
    WorkflowRun,
    WorkflowState,
    WorkflowTask,
    workflow_counts,
)
from workflows.graph import OnFailure, UpstreamInput
from workflows.validation_policy import Mode, ValidationPolicy


def event(task_id: str, kind: str, **fields: object) -> TaskEvent:
    return TaskEvent(task_id=task_id, workflow_id="wf", kind=kind, at=0.0, **fields)  # type: ignore[arg-type]


def diamond() -> WorkflowRun:
    """a -> (b, c) -> d"""
    return WorkflowRun.of(
        "wf",
        [
            WorkflowTask("wf.a", "a"),
            WorkflowTask("wf.b", "b", depends_on=("a",)),
            WorkflowTask("wf.c", "c", depends_on=("a",)),
            WorkflowTask("wf.d", "d", depends_on=("b", "c")),
        ],
    )


def completed(task_id: str) -> TaskEvent:
    output = FileRef("out", "0" * 64, 1)
    result = TaskResult(task_id=task_id, attempt=1, exit_code=0, error="", outputs=(output,))
    return event(task_id, "completed", attempt=1, result=result)


def test_tasks_become_ready_in_dependency_order() -> None:
    run = diamond()
    assert [t.name for t in run.take_ready()] == ["a"]
    assert run.take_ready() == [], "a task is handed over once"
    run.apply(completed("wf.a"))
    assert sorted(t.name for t in run.take_ready()) == ["b", "c"]
    run.apply(completed("wf.b"))
    assert run.take_ready() == [], "d still waits for c"
    run.apply(completed("wf.c"))
    assert [t.name for t in run.take_ready()] == ["d"]
    run.apply(completed("wf.d"))
    assert run.state() is WorkflowState.COMPLETED
    assert run.tasks["wf.d"].outputs[0].name == "out"


def test_a_failure_skips_everything_downstream_and_fails_the_workflow() -> None:
    run = diamond()
    run.take_ready()
    run.apply(completed("wf.a"))
    run.take_ready()
    run.apply(event("wf.b", "failed", message="exited with code 3"))
    assert run.tasks["wf.d"].status is TaskStatus.SKIPPED
    assert run.tasks["wf.d"].message == "skipped: b did not complete"
    assert run.state() is WorkflowState.RUNNING, "c is still going"
    run.apply(completed("wf.c"))
    assert run.finished
    assert run.state() is WorkflowState.FAILED
    assert run.tasks["wf.b"].message == "exited with code 3"


def test_unverified_outputs_fail_the_task() -> None:
    run = diamond()
    run.take_ready()
    run.apply(completed("wf.a"), outputs_verified=False)
    assert run.tasks["wf.a"].status is TaskStatus.FAILED
    assert "did not arrive intact" in run.tasks["wf.a"].message


def test_progress_and_requeue_are_tracked() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    run.apply(event("wf.a", "running", attempt=1, volunteer_id="v1"))
    run.apply(event("wf.a", "progress", attempt=1, percent=42.0))
    assert run.tasks["wf.a"].percent == 42.0
    assert run.state() is WorkflowState.RUNNING
    run.apply(event("wf.a", "requeued", attempt=1, message="its volunteer was lost"))
    assert run.tasks["wf.a"].status is TaskStatus.QUEUED
    assert run.tasks["wf.a"].message == "requeued: its volunteer was lost"


def test_events_after_a_task_finished_change_nothing() -> None:
    run = diamond()
    run.take_ready()
    run.apply(completed("wf.a"))
    assert run.apply(event("wf.a", "failed", message="late")) is None
    assert run.tasks["wf.a"].status is TaskStatus.COMPLETED
    assert run.apply(event("other.x", "running")) is None


def test_cancel_returns_what_the_coordinator_holds() -> None:
    run = diamond()
    run.take_ready()
    held = run.cancel()
    assert [t.name for t in held] == ["a"]
    assert run.state() is WorkflowState.CANCELLED
    assert run.take_ready() == []


def test_counts_fold_waiting_into_queued() -> None:
    run = diamond()
    run.take_ready()
    counts = run.counts()
    assert counts["queued"] == 4
    assert counts["total"] == 4


def test_the_user_sees_waiting_tasks_as_queued_and_skipped_ones_apart() -> None:
    states = {"waiting": 2, "queued": 1, "running": 1, "failed": 1, "skipped": 3, "total": 9}
    assert workflow_counts(states) == WorkflowCounts(
        queued=3, running=1, completed=0, failed=1, cancelled=0, total=9, skipped=3
    )


def test_tasks_fetching_are_counted_apart_from_those_running() -> None:
    states = {"queued": 1, "fetching": 2, "running": 1, "total": 4}
    assert workflow_counts(states) == WorkflowCounts(queued=1, fetching=2, running=1, total=4)


def test_a_task_is_fetching_until_its_volunteer_says_it_started() -> None:
    run = diamond()
    run.take_ready()
    assert run.state() is WorkflowState.QUEUED
    run.apply(event("wf.a", "offered", attempt=1, volunteer_id="v1"))
    applied = run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    assert applied is not None
    assert applied.changed == (run.tasks["wf.a"],), "saved"
    task = run.tasks["wf.a"]
    assert (task.status, task.volunteer_id, task.attempts) == (TaskStatus.FETCHING, "v1", 1)
    assert run.counts()["fetching"] == 1
    assert run.counts()["running"] == 0
    assert run.state() is WorkflowState.RUNNING, "a workflow a volunteer holds is under way"
    run.apply(event("wf.a", "running", attempt=1, volunteer_id="v1"))
    assert task.status is TaskStatus.RUNNING
    assert (run.counts()["fetching"], run.counts()["running"]) == (0, 1)
    run.apply(completed("wf.a"))
    assert run.tasks["wf.a"].status is TaskStatus.COMPLETED


def test_an_older_volunteers_task_runs_without_fetching_first() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "offered", attempt=1, volunteer_id="v1"))
    run.apply(event("wf.a", "running", attempt=1, volunteer_id="v1"))
    assert run.tasks["wf.a"].status is TaskStatus.RUNNING
    assert run.counts()["fetching"] == 0


def test_a_task_fetching_on_a_lost_volunteer_is_queued_again() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    run.apply(event("wf.a", "requeued", attempt=1, message="its volunteer was lost"))
    task = run.tasks["wf.a"]
    assert task.status is TaskStatus.QUEUED
    assert task.message == "requeued: its volunteer was lost"
    assert run.counts()["fetching"] == 0
    run.apply(event("wf.a", "fetching", attempt=2, volunteer_id="v2"))
    assert (task.status, task.volunteer_id, task.attempts) == (TaskStatus.FETCHING, "v2", 2)
    assert task.message == "", "the reason it went back is over"


def test_cancelling_a_workflow_calls_off_its_fetching_tasks() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    held = run.cancel()
    assert [t.name for t in held] == ["a"], "the coordinator holds it: it is told"
    assert run.tasks["wf.a"].status is TaskStatus.CANCELLED
    assert run.counts()["fetching"] == 0
    assert run.apply(event("wf.a", "running", attempt=1, volunteer_id="v1")) is None


def test_a_fetching_task_cancelled_at_the_coordinator_ends_cancelled() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    run.apply(event("wf.a", "cancelled", attempt=1))
    assert run.tasks["wf.a"].status is TaskStatus.CANCELLED
    assert run.tasks["wf.d"].status is TaskStatus.SKIPPED


def test_upstream_inputs_are_the_producers_outputs_under_the_readers_names() -> None:
    run = WorkflowRun.of(
        "wf",
        [
            WorkflowTask("wf.a", "a"),
            WorkflowTask("wf.b", "b", ("a",), (UpstreamInput("model.npz", "a", "out"),)),
        ],
    )
    run.take_ready()
    run.apply(completed("wf.a"))
    [ready] = run.take_ready()
    assert run.upstream_files(ready) == (FileRef("model.npz", "0" * 64, 1),)


def test_upstream_files_of_a_task_whose_producer_did_not_complete_is_an_error() -> None:
    reader = WorkflowTask("wf.b", "b", ("a",), (UpstreamInput("x", "a", "out"),))
    run = WorkflowRun.of("wf", [WorkflowTask("wf.a", "a"), reader])
    with pytest.raises(ValueError, match="a has no output out"):
        run.upstream_files(reader)


def test_resume_puts_back_what_did_not_complete_and_keeps_what_did() -> None:
    run = diamond()
    run.take_ready()
    run.apply(completed("wf.a"))
    run.take_ready()
    run.apply(completed("wf.c"))
    run.apply(event("wf.b", "failed", message="exited with code 3"))
    assert run.state() is WorkflowState.FAILED
    again = run.resume()
    assert sorted(t.name for t in again) == ["b", "d"]
    assert run.tasks["wf.a"].status is TaskStatus.COMPLETED
    assert run.tasks["wf.b"].message == ""
    assert [t.name for t in run.take_ready()] == ["b"], "d waits for b again"
    assert run.state() is WorkflowState.RUNNING


def test_resume_of_a_workflow_still_going_is_an_error() -> None:
    run = diamond()
    run.take_ready()
    with pytest.raises(ValueError, match="has not ended"):
        run.resume()


def test_with_on_failure_fail_the_dependents_fail_naming_the_task() -> None:
    run = diamond()
    run.on_failure = OnFailure.FAIL
    run.take_ready()
    run.apply(event("wf.a", "failed", message="exited with code 1"))
    assert {t.name: t.status for t in run.tasks.values()} == {
        "a": TaskStatus.FAILED,
        "b": TaskStatus.FAILED,
        "c": TaskStatus.FAILED,
        "d": TaskStatus.FAILED,
    }
    assert run.tasks["wf.d"].message == "failed: a did not complete"


def test_an_event_says_which_records_changed() -> None:
    run = diamond()
    run.take_ready()
    started = run.apply(event("wf.a", "running", attempt=1))
    assert started is not None
    assert [t.name for t in started.changed] == ["a"]
    moved = run.apply(event("wf.a", "progress", attempt=1, percent=30.0))
    assert moved is not None
    assert moved.task.percent == 30.0
    assert moved.changed == (), "progress alone is not worth a write"
    failed = run.apply(event("wf.a", "failed", message="exited with code 1"))
    assert failed is not None
    assert sorted(t.name for t in failed.changed) == ["a", "b", "c", "d"], "and what it ended"


# --- the run's indexes against a recount from scratch ---------------------------------------


def recounted_ready(run: WorkflowRun) -> set[str]:
    return {
        task.name
        for task in run.tasks.values()
        if task.status is TaskStatus.WAITING
        and all(run.by_name[d].status is TaskStatus.COMPLETED for d in task.depends_on)
    }


@pytest.mark.parametrize("seed", range(20))
def test_ready_finished_and_counts_match_a_recount_through_random_histories(seed: int) -> None:
    """`take_ready`, `finished`, `state` and `counts` are kept incrementally (no event walks
    every task); whatever happens, they say what counting every task would."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(30)]
    tasks = [
        WorkflowTask(f"wf.{name}", name, tuple(rng.sample(names[:i], min(i, rng.randint(0, 3)))))
        for i, name in enumerate(names)
    ]
    on_failure = rng.choice(list(OnFailure))
    run = WorkflowRun.of("wf", tasks, on_failure=on_failure)
    for step in range(400):
        if rng.random() < 0.2:
            expected = recounted_ready(run)
            assert {task.name for task in run.take_ready()} == expected
        elif run.finished and rng.random() < 0.5:
            run.resume()
        else:
            held = [
                t for t in run.tasks.values() if t.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
            ]
            if held:
                task = rng.choice(held)
                kind = rng.choice(
                    [
                        EventKind.RUNNING,
                        EventKind.COMPLETED,
                        EventKind.COMPLETED,
                        EventKind.FAILED,
                        EventKind.REQUEUED,
                    ]
                )
                result = TaskResult(task.task_id, 1, 0, "") if kind is EventKind.COMPLETED else None
                run.apply(
                    TaskEvent(task.task_id, "wf", kind, at=float(step), attempt=1, result=result),
                    outputs_verified=rng.random() < 0.9,
                )
        statuses = Counter(task.status for task in run.tasks.values())
        assert run.finished == all(task.status.finished for task in run.tasks.values())
        counts = run.counts()
        assert counts["queued"] == statuses[TaskStatus.QUEUED] + statuses[TaskStatus.WAITING]
        assert counts["completed"] == statuses[TaskStatus.COMPLETED]
        assert counts["skipped"] == statuses[TaskStatus.SKIPPED]
        assert sum(v for k, v in counts.items() if k != "total") == counts["total"] == len(tasks)
    assert recounted_ready(run) == {task.name for task in run.take_ready()}


def test_a_task_that_cannot_start_fails_with_what_depends_on_it() -> None:
    run = WorkflowRun.of(
        "wf",
        [
            WorkflowTask("wf.a", "a"),
            WorkflowTask("wf.b", "b", ("a",)),
            WorkflowTask("wf.c", "c", ("b",)),
            WorkflowTask("wf.d", "d"),
        ],
    )
    [first, aside] = run.take_ready()
    changed = run.fail(first, "cannot start: its input is gone")
    assert [(t.name, t.status) for t in changed] == [
        ("a", TaskStatus.FAILED),
        ("b", TaskStatus.SKIPPED),
        ("c", TaskStatus.SKIPPED),
    ]
    assert first.message == "cannot start: its input is gone"
    assert aside.status is TaskStatus.QUEUED  # taken to run: untouched
    assert not run.finished


def test_a_completed_task_reopens_only_while_nothing_read_its_outputs() -> None:
    run = WorkflowRun.of(
        "wf",
        [WorkflowTask("wf.a", "a"), WorkflowTask("wf.b", "b", depends_on=("a",))],
    )
    a, b = run.tasks["wf.a"], run.tasks["wf.b"]
    run.take_ready()
    run.apply(
        TaskEvent("wf.a", "wf", EventKind.COMPLETED, at=1.0, result=TaskResult("wf.a", 1, 0, ""))
    )
    assert a.status is TaskStatus.COMPLETED
    assert run.reopen(a, "re-checked")
    # Nothing runs it yet: it waits for the copy that checks it.
    assert (a.status, a.message) == (TaskStatus.QUEUED, "re-checked")
    assert run.take_ready() == []  # b waits for a again
    run.apply(
        TaskEvent("wf.a", "wf", EventKind.COMPLETED, at=2.0, result=TaskResult("wf.a", 2, 0, ""))
    )
    assert [t.name for t in run.take_ready()] == ["b"]
    assert b.status is TaskStatus.QUEUED
    assert not run.reopen(a, "too late"), "b started: a's outputs were read"


def test_progress_of_a_fetching_task_leaves_it_fetching_as_the_coordinator_does() -> None:
    run = diamond()
    run.take_ready()
    run.apply(event("wf.a", "fetching", attempt=1, volunteer_id="v1"))
    applied = run.apply(event("wf.a", "progress", attempt=1, volunteer_id="v1", percent=30.0))
    assert applied is not None
    assert applied.changed == (), "only its progress moved: nothing to save"
    task = run.tasks["wf.a"]
    assert task.status is TaskStatus.FETCHING
    assert (run.counts()["fetching"], run.counts()["running"]) == (1, 0)
    run.apply(event("wf.a", "running", attempt=1, volunteer_id="v1"))
    assert (task.status, task.percent) == (TaskStatus.RUNNING, 30.0), "its progress so far"
    assert run.apply(event("wf.b", "progress", attempt=1, percent=5.0)) is None
    assert run.tasks["wf.b"].status is TaskStatus.WAITING, "progress starts nothing"


# --- a replicated task stands as its copies do --------------------------------------------

ADAPTIVE = ValidationPolicy(mode=Mode.ADAPTIVE, quorum=2, max_copies=4)
QUORUM = ValidationPolicy(mode=Mode.QUORUM, replicas=2, quorum=2, max_copies=4)


def replicated(policy: ValidationPolicy) -> tuple[WorkflowRun, WorkflowTask, Validation]:
    """A workflow of one replicated task, handed over: its first copies are queued."""
    task = WorkflowTask("wf.r", "r", validation=Validation("wf.r", policy))
    run = WorkflowRun.of("wf", [task])
    run.take_ready()
    assert task.validation is not None
    task.validation.start()
    return run, task, task.validation


def copy_result(number: int) -> TaskResult:
    return TaskResult(copy_id("wf.r", number), 1, 0, "", (), 10.0, 12.0)


def test_a_replicated_task_waits_queued_while_its_answer_waits_for_a_check() -> None:
    run, task, validation = replicated(ADAPTIVE)
    validation.fetching(1, "v1", 1)
    assert run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.FETCHING, "v1")
    validation.running(1, "v1", 1)
    assert run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.RUNNING, "v1")
    decision = validation.completed(1, "v1", copy_result(1), 0, trusted=False, spot_check=False)
    assert decision.submit == (2,), "an untrusted volunteer's answer is checked"
    assert run.follow_copies(task)
    # Nothing runs it: it waits for its check.
    assert (task.status, task.volunteer_id) == (TaskStatus.QUEUED, "v1")
    assert (run.counts()["running"], run.counts()["queued"]) == (0, 1)
    assert not run.follow_copies(task), "asked again: nothing moved"
    validation.fetching(2, "v2", 1)
    assert run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.FETCHING, "v2")
    validation.running(2, "v2", 1)
    assert run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.RUNNING, "v2")


def test_a_running_copy_outranks_a_fetching_one_whatever_order_their_events_come_in() -> None:
    run, task, validation = replicated(QUORUM)
    validation.fetching(1, "v1", 1)
    validation.running(1, "v1", 1)
    validation.fetching(2, "v2", 1)  # after the first runs
    run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.RUNNING, "v1")
    # The first copy's volunteer is lost: its event, passed on for its message, moves the
    # task no further than its copies say.
    validation.handed_back(1)
    lost = event("wf.r", "requeued", attempt=1, volunteer_id="v1", message="volunteer lost")
    assert run.apply(lost) is not None
    assert (task.status, task.volunteer_id) == (TaskStatus.FETCHING, "v2")
    assert task.message == "requeued: volunteer lost"
    validation.running(2, "v2", 1)
    assert run.follow_copies(task)
    assert task.status is TaskStatus.RUNNING
    assert task.message == "", "it runs again: why it went back is over"


def test_a_later_copy_handed_back_leaves_no_task_fetching_that_nobody_holds() -> None:
    run, task, validation = replicated(ADAPTIVE)
    validation.running(1, "v1", 1)
    validation.completed(1, "v1", copy_result(1), 0, trusted=False, spot_check=False)
    validation.fetching(2, "v2", 1)
    run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.FETCHING, "v2")
    validation.handed_back(2)  # its volunteer declined or was lost
    assert run.follow_copies(task)
    assert (task.status, task.volunteer_id) == (TaskStatus.QUEUED, "v2")
    assert run.counts()["fetching"] == 0


def test_progress_of_a_copy_moves_its_task_no_further_than_its_copies() -> None:
    run, task, validation = replicated(ADAPTIVE)
    validation.fetching(1, "v1", 1)
    run.follow_copies(task)
    progress = event("wf.r", "progress", attempt=1, volunteer_id="v1", percent=50.0)
    assert run.apply(progress) is not None
    assert task.status is TaskStatus.FETCHING


def test_a_decided_task_is_not_moved_by_a_copy_still_going() -> None:
    run, task, validation = replicated(ValidationPolicy(mode=Mode.QUORUM, replicas=3))
    for number in (1, 2, 3):
        validation.running(number, f"v{number}", 1)
    for number in (1, 2):
        decision = validation.completed(
            number, f"v{number}", copy_result(number), 0, trusted=False, spot_check=False
        )
    assert decision.accept is not None, "two of three agreed"
    run.apply(event("wf.r", "completed", attempt=1, result=copy_result(1)))
    assert not run.follow_copies(task), "the third copy runs on, judged when it ends"
    assert task.status is TaskStatus.COMPLETED
