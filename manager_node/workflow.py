"""One workflow's progress as a pure state machine: coordinator events in, task states out.

Tasks wait until every task they depend on completed; only then are they handed to the
coordinator. A task that fails for good makes everything downstream of it `skipped`. The
workflow is finished when no task can still change, and its state says how it ended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.models import FileRef, TaskEvent, TaskResult


class TaskStatus(StrEnum):
    WAITING = "waiting"  # for its dependencies
    QUEUED = "queued"  # handed to the coordinator, not running yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a dependency failed or was cancelled

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}


class WorkflowState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    MERGING = "merging"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class UpstreamInput:
    """An input that is the output of a task this one depends on: known by name at submit,
    by content only once that task completed."""

    name: str  # under /input
    task: str  # the producing task's name
    output: str  # one of its declared outputs


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


class OnFailure(StrEnum):
    """What a task that fails for good does to the tasks downstream of it (`[workflow]
    on_failure`); independent branches go on either way."""

    SKIP = "skip"  # they are skipped: `--resume` runs them once their inputs exist
    FAIL = "fail"  # they fail too, naming the task that did not complete


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

    def __post_init__(self) -> None:
        self.by_name = {task.name: task for task in self.tasks.values()}

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
        by_name = self.by_name
        ready = [
            task
            for task in self.tasks.values()
            if task.status is TaskStatus.WAITING
            and all(by_name[dep].status is TaskStatus.COMPLETED for dep in task.depends_on)
        ]
        for task in ready:
            task.status = TaskStatus.QUEUED
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
                raise ValueError(f"{task.name}: {wanted.task} has no output {wanted.output}")
            files.append(FileRef(wanted.name, found[0].sha256, found[0].size))
        return tuple(files)

    def apply(self, event: TaskEvent, outputs_verified: bool = True) -> Applied | None:
        """Updates the task the event is about; None if the event is not ours or changes
        nothing. A `completed` event counts only once its outputs are verified."""
        task = self.tasks.get(event.task_id)
        if task is None or task.status.finished:
            return None
        task.attempts = max(task.attempts, event.attempt)
        if event.volunteer_id:
            task.volunteer_id = event.volunteer_id
        kind = event.kind
        ended: list[WorkflowTask] = []
        if kind in ("queued", "offered", "declined", "requeued", "unschedulable"):
            task.status = TaskStatus.QUEUED
            task.percent = 0.0
            if kind in ("requeued", "unschedulable", "declined"):
                task.message = f"{kind}: {event.message}"
        elif kind == "running":
            task.status = TaskStatus.RUNNING
            task.message = ""
        elif kind == "progress":
            if task.status is TaskStatus.RUNNING:
                task.percent = event.percent
                return Applied(task, ())
            task.status = TaskStatus.RUNNING
            task.percent = event.percent
        elif kind == "completed":
            task.result = event.result
            if outputs_verified:
                task.status = TaskStatus.COMPLETED
                task.percent = 100.0
                task.outputs = event.result.outputs if event.result else ()
                task.message = ""
            else:
                task.status = TaskStatus.FAILED
                task.message = "its outputs did not arrive intact at the manager"
                ended = self._end_dependents(task)
        elif kind == "failed":
            task.status = TaskStatus.FAILED
            task.result = event.result
            task.message = event.message
            ended = self._end_dependents(task)
        elif kind == "cancelled":
            task.status = TaskStatus.CANCELLED
            ended = self._end_dependents(task)
        else:
            return None
        return Applied(task, (task, *ended))

    def cancel(self) -> list[WorkflowTask]:
        """Marks every unfinished task cancelled; returns those the coordinator holds."""
        self.cancelled = True
        held = []
        for task in self.tasks.values():
            if task.status.finished:
                continue
            if task.status is not TaskStatus.WAITING:
                held.append(task)
            task.status = TaskStatus.CANCELLED
        return held

    def resume(self) -> list[WorkflowTask]:
        """After the workflow ended: every task that did not complete waits again (its
        dependencies decide when it runs); returns them. Completed tasks keep their outputs."""
        if not self.finished:
            raise ValueError(f"workflow {self.workflow_id} has not ended")
        self.cancelled = False
        again = [task for task in self.tasks.values() if task.status is not TaskStatus.COMPLETED]
        for task in again:
            task.status = TaskStatus.WAITING
            task.percent = 0.0
            task.message = ""
            task.volunteer_id = ""
            task.result = None
        return again

    def _end_dependents(self, failed: WorkflowTask) -> list[WorkflowTask]:
        """Everything downstream of `failed` ends, skipped or failed as the workflow says;
        returns those tasks."""
        status = TaskStatus.FAILED if self.on_failure is OnFailure.FAIL else TaskStatus.SKIPPED
        blocked = {failed.name}
        ended: list[WorkflowTask] = []
        changed = True
        while changed:
            changed = False
            for task in self.tasks.values():
                if task.status is TaskStatus.WAITING and blocked & set(task.depends_on):
                    task.status = status
                    task.message = f"{status.value}: {failed.name} did not complete"
                    blocked.add(task.name)
                    ended.append(task)
                    changed = True
        return ended

    @property
    def finished(self) -> bool:
        return all(task.status.finished for task in self.tasks.values())

    def state(self) -> WorkflowState:
        """How the workflow stands, the merge step aside (the shell adds MERGING)."""
        statuses = Counter(task.status for task in self.tasks.values())
        if self.cancelled:
            return WorkflowState.CANCELLED
        if self.finished:
            if statuses[TaskStatus.COMPLETED] == len(self.tasks):
                return WorkflowState.COMPLETED
            return WorkflowState.FAILED
        if (
            statuses[TaskStatus.RUNNING]
            or statuses[TaskStatus.COMPLETED]
            or statuses[TaskStatus.FAILED]
        ):
            return WorkflowState.RUNNING
        return WorkflowState.QUEUED

    def counts(self) -> dict[str, int]:
        statuses = Counter(task.status.value for task in self.tasks.values())
        waiting = statuses.pop(TaskStatus.WAITING.value, 0)
        statuses[TaskStatus.QUEUED.value] += waiting
        return {status.value: statuses.get(status.value, 0) for status in TaskStatus} | {
            "total": len(self.tasks)
        }


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """A dependency cycle as a path of names (first = last), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for dependency in depends_on.get(name, ()):
            if state.get(dependency) == 1:
                return [*path[path.index(dependency) :], dependency]
            if dependency not in state and (found := visit(dependency)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in depends_on:
        if name not in state and (found := visit(name)):
            return found
    return []


def graph_problems(
    tasks: Sequence[WorkflowTask], outputs: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """Why these tasks cannot form a workflow, as (task name or "", problem): duplicate
    names, unknown dependencies, a cycle, or an input read from an output its producer does
    not declare. `outputs` holds each task's declared outputs by task name."""
    problems = []
    names = [task.name for task in tasks]
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append((name, f"two tasks are named {name!r}"))
    known = set(names)
    for task in tasks:
        for dependency in task.depends_on:
            if dependency not in known:
                problems.append((task.name, f"no task is named {dependency!r}"))
        for wanted in task.upstream:
            if wanted.task not in task.depends_on:
                problems.append(
                    (task.name, f"{task.name} reads from {wanted.task} but does not depend on it")
                )
            elif wanted.task in known and wanted.output not in outputs.get(wanted.task, ()):
                problems.append(
                    (
                        task.name,
                        f"{task.name} reads {wanted.output} from {wanted.task},"
                        f" which declares no such output",
                    )
                )
    cycle = find_cycle({task.name: [d for d in task.depends_on if d in known] for task in tasks})
    if cycle:
        problems.append(("", "dependency cycle: " + " -> ".join(cycle)))
    return problems
