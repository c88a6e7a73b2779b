"""A replicated task's validation in the manager's real SQLite: it survives a restart whole,
its copies' outputs stay referenced (never collected as orphans), and status counts them."""

from __future__ import annotations

from pathlib import Path

from daemon.models import FileRef, ResourceRequest, TaskResult, TaskSpec
from manager_node.store import ManagerStore, NewTask
from manager_node.validation import Copy, CopyState, Validation, Verdict
from manager_node.workflow import TaskStatus, WorkflowTask
from workflows.validation_policy import Mode, ValidationPolicy

POLICY = ValidationPolicy(Mode.QUORUM, replicas=2, quorum=2, spot_check_rate=0.25)


def spec(name: str) -> TaskSpec:
    return TaskSpec(
        task_id=f"wf.{name}",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
        outputs=("out.txt",),
    )


def result(task_id: str, sha256: str, started: float) -> TaskResult:
    outputs = (FileRef("out.txt", sha256, 3),)
    return TaskResult(task_id, 1, 0, "", outputs, started_at=started, finished_at=started + 2)


async def test_copies_and_verdicts_survive_a_restart_and_their_outputs_stay_referenced(
    tmp_path: Path,
) -> None:
    store = ManagerStore(tmp_path)
    await store.open()
    await store.create_workflow(
        "wf", "wf", "tasks", {}, [NewTask(spec("t"), "t", (), validation=POLICY)], []
    )
    [stored] = await store.unfinished_runs()
    assert stored.tasks[0].validation == Validation("wf.t", POLICY)
    validation = Validation(
        "wf.t",
        POLICY,
        [
            Copy(1, CopyState.COMPLETED, "v1", 1, result("wf.t", "a" * 64, 10), 0, Verdict.AGREED),
            Copy(2, CopyState.COMPLETED, "v2", 1, result("wf.t~2", "b" * 64, 10), 1),
            Copy(2 + 1, CopyState.RUNNING, "v3", 2),
        ],
        accepted=0,
        outcome="",
    )
    task = WorkflowTask("wf.t", "t", status=TaskStatus.RUNNING, validation=validation)
    await store.save_tasks([task])
    await store.set_workflow_state("wf", "running")
    await store.close()

    store = ManagerStore(tmp_path)
    await store.open()
    [stored] = await store.unfinished_runs()
    assert stored.tasks[0].validation == validation
    assert {"a" * 64, "b" * 64} <= await store.referenced_blobs()
    [status] = await store.workflows("wf", task="t")
    [row] = status.tasks
    assert (row.copies, row.agreeing) == (3, 1)
    assert [c.task_id for c in row.copy_details] == ["wf.t", "wf.t~2", "wf.t~3"]
    assert row.copy_details[1].outputs[0].sha256 == "b" * 64
    assert (status.extra_copies, status.extra_run_seconds, status.run_seconds) == (2, 2.0, 4.0)
    await store.close()
