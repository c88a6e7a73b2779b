"""One workflow's progress as a pure state machine: coordinator events in, task states out.

Tasks wait until every task they depend on completed; only then are they handed to the
coordinator. A task that fails for good makes everything downstream of it `skipped`. The
workflow is finished when no task can still change, and its state says how it ended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from daemon.models import EventKind, FileRef, TaskEvent, TaskResult, WorkflowCounts
from manager_node.validation import Copy, CopyState, Validation
from workflows.graph import OnFailure, UpstreamInput


class TaskStatus(StrEnum):
    WAITING = "waiting"  # for its dependencies
    QUEUED = "queued"  # handed to the coordinator, not running yet
    # A volunteer holds it: its inputs and image are on their way, or it waits for a slot.
    FETCHING = "fetching"
    RUNNING = "running"  # its container runs
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a dependency failed or was cancelled

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def held(self) -> bool:
        """A volunteer has it, fetching or running: the one that may fetch its inputs."""
        return self in (TaskStatus.FETCHING, TaskStatus.RUNNING)


_FINISHED = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}
# How far a replicated task got, from the furthest of its copies that go on (see
# `copies_phase`), furthest first.
_COPY_PHASES = (
    (CopyState.RUNNING, TaskStatus.RUNNING),
    (CopyState.FETCHING, TaskStatus.FETCHING),
    (CopyState.QUEUED, TaskStatus.QUEUED),
)


def copies_phase(validation: Validation) -> tuple[TaskStatus, Copy] | None:
    """How a replicated task stands while its copies go, and the copy that says so:
    running while any copy runs, else fetching while a volunteer holds one, else queued
    while one waits for a volunteer. Copies that ended count for nothing here: one that
    completed and waits for another to check it leaves the task waiting on that other.
    None when no copy goes on (its verdict is what the task waits for)."""
    for state, status in _COPY_PHASES:
        for copy in validation.copies:
            if copy.state is state:
                return status, copy
    return None


def workflow_counts(counts: Mapping[str, int]) -> WorkflowCounts:
    """What the user is shown of tasks per status (and "total"): waiting tasks count as
    queued."""
    return WorkflowCounts(
        queued=counts.get(TaskStatus.QUEUED, 0) + counts.get(TaskStatus.WAITING, 0),
        running=counts.get(TaskStatus.RUNNING, 0),
        fetching=counts.get(TaskStatus.FETCHING, 0),
        completed=counts.get(TaskStatus.COMPLETED, 0),
        failed=counts.get(TaskStatus.FAILED, 0),
        cancelled=counts.get(TaskStatus.CANCELLED, 0),
        total=counts.get("total", 0),
        skipped=counts.get(TaskStatus.SKIPPED, 0),
    )


class MissingUpstreamError(ValueError):
    """A ready task's producer completed without the output the task reads. Results are
    checked for their declared outputs as they arrive; a store written before that was not."""


class WorkflowState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    MERGING = "merging"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class WorkflowTask:
    task_id: str
    name: str
    depends_on: tuple[str, ...] = ()  # names of tasks in the same workflow
    upstream: tuple[UpstreamInput, ...] = ()
    status: TaskStatus = TaskStatus.WAITING
    attempts: int = 0
    volunteer_id: str = ""
    percent: float = 0.0
    message: str = ""
    outputs: tuple[FileRef, ...] = ()
    result: TaskResult | None = None
    # Its copies and their verdicts, when its results are checked by replication.
    validation: Validation | None = None


@dataclass(frozen=True)
class Applied:
    """What an event did to a workflow."""

    task: WorkflowTask  # the task it was about
    # Records to save: the task, unless only its progress moved, and the tasks downstream
    # that its failure ended.
    changed: tuple[WorkflowTask, ...]


@dataclass
class WorkflowRun:
    workflow_id: str
    tasks: dict[str, WorkflowTask] = field(default_factory=dict)  # by task id
    cancelled: bool = False
    on_failure: OnFailure = OnFailure.SKIP
    # Tasks by name, built once: a workflow's tasks never change after it is made.
    by_name: dict[str, WorkflowTask] = field(init=False, repr=False)
    # Kept up to date by _set_status, so that no event walks every task:
    # tasks per status;
    _counts: Counter[TaskStatus] = field(init=False, repr=False)
    # the tasks that depend on each task (by name; one entry per dependency);
    _dependents: dict[str, list[WorkflowTask]] = field(init=False, repr=False)
    # how many of each task's dependencies have not completed;
    _missing: dict[str, int] = field(init=False, repr=False)
    # waiting tasks whose dependencies all completed, in the order they got there.
    _ready: dict[str, WorkflowTask] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {task.name: task for task in self.tasks.values()}
        self._counts = Counter(task.status for task in self.tasks.values())
        self._dependents = {name: [] for name in self.by_name}
        self._missing = {}
        for task in self.tasks.values():
            for dependency in task.depends_on:
                self._dependents[dependency].append(task)
            self._missing[task.name] = sum(
                self.by_name[dependency].status is not TaskStatus.COMPLETED
                for dependency in task.depends_on
            )
        self._ready = {
            task.name: task
            for task in self.tasks.values()
            if task.status is TaskStatus.WAITING and not self._missing[task.name]
        }

    def _set_status(self, task: WorkflowTask, status: TaskStatus) -> None:
        """Every change of a task's status goes through here, to keep the indexes true."""
        before = task.status
        if before is status:
            return
        task.status = status
        self._counts[before] -= 1
        self._counts[status] += 1
        if status is TaskStatus.WAITING and not self._missing[task.name]:
            self._ready[task.name] = task
        elif before is TaskStatus.WAITING:
            self._ready.pop(task.name, None)
        if TaskStatus.COMPLETED in (before, status):
            step = -1 if status is TaskStatus.COMPLETED else 1
            for dependent in self._dependents[task.name]:
                self._missing[dependent.name] += step
                if dependent.status is TaskStatus.WAITING:
                    if self._missing[dependent.name]:
                        self._ready.pop(dependent.name, None)
                    else:
                        self._ready[dependent.name] = dependent

    @classmethod
    def of(
        cls,
        workflow_id: str,
        tasks: Iterable[WorkflowTask],
        on_failure: OnFailure = OnFailure.SKIP,
    ) -> WorkflowRun:
        return cls(workflow_id, {task.task_id: task for task in tasks}, on_failure=on_failure)

    def take_ready(self) -> list[WorkflowTask]:
        """Waiting tasks whose dependencies all completed, now marked queued."""
        if self.cancelled:
            return []
        ready = list(self._ready.values())
        for task in ready:
            self._set_status(task, TaskStatus.QUEUED)
        return ready

    def upstream_files(self, task: WorkflowTask) -> tuple[FileRef, ...]:
        """The task's upstream inputs as files, named as the task reads them; every producer
        completed (the task is ready) and declared the output (checked at submit)."""
        by_name = self.by_name
        files = []
        for wanted in task.upstream:
            producer = by_name[wanted.task]
            found = [ref for ref in producer.outputs if ref.name == wanted.output]
            if producer.status is not TaskStatus.COMPLETED or not found:
                raise MissingUpstreamError(f"{wanted.task} has no output {wanted.output}")
            files.append(FileRef(wanted.name, found[0].sha256, found[0].size))
        return tuple(files)

    def apply(self, event: TaskEvent, outputs_verified: bool = True) -> Applied | None:
        """Updates the task the event is about; None if the event is not ours or changes
        nothing. A `completed` event counts only once its outputs are verified."""
        task = self.tasks.get(event.task_id)
        if task is None or task.status.finished:
            return None
        if event.kind == EventKind.PROGRESS:
            # Progress moves no task between phases, as at the coordinator: a volunteer says
            # a task runs only while it says no more run than it has slots (see
            # volunteer_node.worker.RunningWord), so a task started beyond them reports
            # progress while it is still `fetching` there, and is so here too.
            if not task.status.held:
                return None  # of an attempt handed back since
            task.percent = event.percent
            return Applied(task, ())
        task.attempts = max(task.attempts, event.attempt)
        if event.volunteer_id:
            task.volunteer_id = event.volunteer_id
        ended: list[WorkflowTask] = []
        # Exhaustive: a kind added to EventKind and not handled here fails the type check.
        match event.kind:
            case EventKind.QUEUED | EventKind.OFFERED:
                self._move(task, TaskStatus.QUEUED)
            case EventKind.DECLINED | EventKind.REQUEUED | EventKind.UNSCHEDULABLE:
                self._move(task, TaskStatus.QUEUED)
                task.message = f"{event.kind}: {event.message}"
            case EventKind.FETCHING:
                self._move(task, TaskStatus.FETCHING)
                task.message = ""
            case EventKind.RUNNING:
                self._move(task, TaskStatus.RUNNING)
                task.message = ""
            case EventKind.PROGRESS:
                pass  # handled before: progress moves no task between phases
            case EventKind.COMPLETED:
                task.result = event.result
                if outputs_verified:
                    self._set_status(task, TaskStatus.COMPLETED)
                    task.percent = 100.0
                    task.outputs = event.result.outputs if event.result else ()
                    task.message = ""
                else:
                    self._set_status(task, TaskStatus.FAILED)
                    task.message = "its outputs did not arrive intact at the manager"
                    ended = self._end_dependents(task)
            case EventKind.FAILED:
                self._set_status(task, TaskStatus.FAILED)
                task.result = event.result
                task.message = event.message
                ended = self._end_dependents(task)
            case EventKind.CANCELLED:
                self._set_status(task, TaskStatus.CANCELLED)
                ended = self._end_dependents(task)
            case unknown:
                assert_never(unknown)
        return Applied(task, (task, *ended))

    def reopen(self, task: WorkflowTask, message: str) -> bool:
        """A completed task runs again (its result is in doubt) if no task that depends on
        it has started; returns whether it does. It is queued: it waits for the copy that
        checks it, and its copies move it on from there (see follow_copies)."""
        if self.cancelled or task.status is not TaskStatus.COMPLETED:
            return False
        if any(d.status is not TaskStatus.WAITING for d in self._dependents[task.name]):
            return False  # its outputs were read already: too late to take them back
        self._set_status(task, TaskStatus.QUEUED)
        task.outputs = ()
        task.percent = 0.0
        task.message = message
        return True

    def follow_copies(self, task: WorkflowTask) -> bool:
        """A replicated task not decided yet stands as its copies do (see copies_phase),
        with the volunteer of the copy that says so when one holds it: the one place its
        phase is worked out, whichever copy moved and in whatever order their events came.
        Returns whether the task changed."""
        validation = task.validation
        if validation is None or task.status.finished:
            return False
        phase = copies_phase(validation)
        if phase is None:
            return False
        status, copy = phase
        before = (task.status, task.volunteer_id, task.attempts)
        if status.held and status is not task.status:
            task.message = ""  # why it waited (declined, handed back) is over
        self._set_status(task, status)
        if copy.state.held:
            task.volunteer_id = copy.volunteer_id
            task.attempts = max(task.attempts, copy.attempt)
        if status is not TaskStatus.RUNNING:
            task.percent = 0.0
        return (task.status, task.volunteer_id, task.attempts) != before

    def _move(self, task: WorkflowTask, status: TaskStatus) -> None:
        """The task is queued again, held or started, as an event says; a replicated task
        stands as its copies do instead, whichever copy the event was about."""
        if task.validation is not None:
            self.follow_copies(task)
        else:
            self._set_status(task, status)
        if task.status is not TaskStatus.RUNNING:
            task.percent = 0.0

    def fail(self, task: WorkflowTask, message: str) -> list[WorkflowTask]:
        """Ends a task that cannot run, and what its failure ends downstream; returns every
        task it changed."""
        self._set_status(task, TaskStatus.FAILED)
        task.message = message
        return [task, *self._end_dependents(task)]

    def cancel(self) -> list[WorkflowTask]:
        """Marks every unfinished task cancelled; returns those the coordinator holds."""
        self.cancelled = True
        held = []
        for task in self.tasks.values():
            if task.status.finished:
                continue
            if task.status is not TaskStatus.WAITING:
                held.append(task)
            self._set_status(task, TaskStatus.CANCELLED)
        return held

    def resume(self) -> list[WorkflowTask]:
        """After the workflow ended: every task that did not complete waits again (its
        dependencies decide when it runs); returns them. Completed tasks keep their outputs."""
        if not self.finished:
            raise ValueError(f"workflow {self.workflow_id} has not ended")
        self.cancelled = False
        again = [task for task in self.tasks.values() if task.status is not TaskStatus.COMPLETED]
        for task in again:
            self._set_status(task, TaskStatus.WAITING)
            task.percent = 0.0
            task.message = ""
            task.volunteer_id = ""
            task.result = None
            if task.validation is not None:  # copies of the new run start from none
                task.validation = Validation(task.task_id, task.validation.policy)
        return again

    def _end_dependents(self, failed: WorkflowTask) -> list[WorkflowTask]:
        """Everything downstream of `failed` ends, skipped or failed as the workflow says;
        returns those tasks."""
        status = TaskStatus.FAILED if self.on_failure is OnFailure.FAIL else TaskStatus.SKIPPED
        ended: list[WorkflowTask] = []
        blocked = [failed]
        while blocked:
            for task in self._dependents[blocked.pop().name]:
                if task.status is TaskStatus.WAITING:
                    self._set_status(task, status)
                    task.message = f"{status.value}: {failed.name} did not complete"
                    ended.append(task)
                    blocked.append(task)
        return ended

    @property
    def finished(self) -> bool:
        return sum(self._counts[status] for status in _FINISHED) == len(self.tasks)

    def state(self) -> WorkflowState:
        """How the workflow stands, the merge step aside (the shell adds MERGING)."""
        statuses = self._counts
        if self.cancelled:
            return WorkflowState.CANCELLED
        if self.finished:
            if statuses[TaskStatus.COMPLETED] == len(self.tasks):
                return WorkflowState.COMPLETED
            return WorkflowState.FAILED
        if (
            statuses[TaskStatus.RUNNING]
            or statuses[TaskStatus.FETCHING]
            or statuses[TaskStatus.COMPLETED]
            or statuses[TaskStatus.FAILED]
        ):
            return WorkflowState.RUNNING
        return WorkflowState.QUEUED

    def counts(self) -> dict[str, int]:
        """Tasks per status, waiting ones counted as queued (to the user, both wait)."""
        counts = {status.value: self._counts[status] for status in TaskStatus}
        counts[TaskStatus.QUEUED.value] += counts.pop(TaskStatus.WAITING.value)
        return counts | {"total": len(self.tasks)}
