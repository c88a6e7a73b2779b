"""scheduler_scaling_ratio, workflow_run_scaling_ratio: what a large workflow costs the
coordinator's scheduler and the manager's workflow state per result.

The coordinator runs every stimulus through its scheduler under one lock, so the
scheduler's cost per result bounds how many results a coordinator takes in a second. In a
steady state (every volunteer full, each result freeing a slot that dispatch fills again),
this measures the scheduler's time per result, answer included, with DEEP tasks queued
against the same pool with SHALLOW queued, in the same run. A tenth of each queue asks for a
GPU no volunteer has: tasks nobody can run wait in the queue too. Target: a deep queue costs
at most twice what a shallow one does per result.

- scheduler_scaling_ratio: seconds per result at DEEP / at SHALLOW.
- scheduler_results_per_second: at DEEP (context: the coordinator's ceiling, scheduler only).
- workflow_run_scaling_ratio: the same for the manager's WorkflowRun (a DEEP-task workflow
  against a SHALLOW-task one, each task depending on the one DEPENDENCY_STRIDE before it):
  per result, the `completed` event applied, the tasks it made ready taken, `finished` and
  the counts the manager publishes.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from collections.abc import Callable

from benchmarks.report import Figure
from coordinator_node.scheduler import Candidate, Scheduler, SendOffer
from daemon.models import (
    EventKind,
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskEvent,
    TaskResult,
    TaskSpec,
)
from manager_node.workflow import WorkflowRun, WorkflowTask

VOLUNTEERS = 50
SLOTS = 2
SHALLOW = 200
DEEP = 20_000
RESULTS = 2_000
ROUNDS = 3
DEPENDENCY_STRIDE = 100


def _spec(index: int, gpus: int) -> TaskSpec:
    return TaskSpec(
        task_id=f"wf.t{index}",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(cpus=1.0, memory_mb=256, gpus=gpus),
        timeout_seconds=600,
    )


def _seconds_per_result(queued: int) -> float:
    scheduler = Scheduler()
    running: deque[tuple[str, str, int]] = deque()

    def start(instructions: list[object]) -> None:
        for instruction in instructions:
            if isinstance(instruction, SendOffer):
                task = instruction.task
                running.append((instruction.volunteer_id, task.task_id, task.attempt))
                scheduler.accepted(instruction.volunteer_id, task.task_id, task.attempt, 0.0)

    resources = Resources(cpu_cores=8, memory_mb=16384, disk_free_mb=100_000, docker_available=True)
    for index in range(VOLUNTEERS):
        candidate = Candidate(f"v{index:03d}", resources, OwnerLimits(max_concurrent_tasks=SLOTS))
        start(list(scheduler.volunteer_joined(candidate, (), 0.0)))
    held = VOLUNTEERS * (SLOTS + 1)
    specs = [_spec(i, gpus=1 if i % 10 == 9 else 0) for i in range(queued + held + RESULTS)]
    start(list(scheduler.submit("manager", specs, 0.0)))

    began = time.perf_counter()
    for _ in range(RESULTS):
        volunteer_id, task_id, attempt = running.popleft()
        result = TaskResult(task_id=task_id, attempt=attempt, exit_code=0, error="")
        start(list(scheduler.finished(volunteer_id, result, 1.0)))
    return (time.perf_counter() - began) / RESULTS


def _workflow_seconds_per_result(size: int) -> float:
    tasks = [
        WorkflowTask(
            f"wf.t{i}",
            f"t{i}",
            (f"t{i - DEPENDENCY_STRIDE}",) if i >= DEPENDENCY_STRIDE else (),
        )
        for i in range(size + RESULTS)
    ]
    run = WorkflowRun.of("wf", tasks)
    handed: deque[WorkflowTask] = deque(run.take_ready())
    began = time.perf_counter()
    for _ in range(RESULTS):
        task = handed.popleft()
        result = TaskResult(task_id=task.task_id, attempt=1, exit_code=0, error="")
        run.apply(
            TaskEvent(task.task_id, "wf", EventKind.COMPLETED, at=1.0, attempt=1, result=result)
        )
        handed.extend(run.take_ready())
        _ = run.finished, run.counts()
    return (time.perf_counter() - began) / RESULTS


def _per_result_at_both_sizes(measure: Callable[[int], float], what: str) -> tuple[float, float]:
    """Median seconds per result with SHALLOW and with DEEP tasks, said on stderr."""
    shallow = statistics.median(measure(SHALLOW) for _ in range(ROUNDS))
    deep = statistics.median(measure(DEEP) for _ in range(ROUNDS))
    print(
        f"{what}: {1e6 * shallow:.0f} us per result with {SHALLOW} tasks, "
        f"{1e6 * deep:.0f} us with {DEEP}",
        file=sys.stderr,
    )
    return shallow, deep


def run() -> list[Figure]:
    shallow, deep = _per_result_at_both_sizes(
        _seconds_per_result, f"scheduler ({VOLUNTEERS} volunteers x {SLOTS} slots)"
    )
    small, large = _per_result_at_both_sizes(_workflow_seconds_per_result, "workflow run")
    return [
        Figure("scheduler_scaling_ratio", deep / shallow, "x", "<=", 2.0),
        Figure("scheduler_results_per_second", 1 / deep, "/s", ">=", 1000),
        Figure("workflow_run_scaling_ratio", large / small, "x", "<=", 2.0),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.line(), flush=True)
