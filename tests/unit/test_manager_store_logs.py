"""Every attempt's logs in the manager's real SQLite: kept per attempt (and found in what an
older store kept), referenced while their workflow lives (never collected as orphans), and
freed with it unless something else refers to the same blob."""

from __future__ import annotations

from pathlib import Path

from daemon.models import FileRef, ResourceRequest, TaskResult, TaskSpec
from daemon.store import Database
from manager_node.store import MIGRATIONS, ManagerStore, NewTask
from manager_node.validation import Copy, CopyState, Validation, Verdict
from manager_node.workflow import TaskStatus, WorkflowTask
from workflows.validation_policy import Mode, ValidationPolicy

ATTEMPT_LOGS = "manager/0009_attempt_logs"


def spec(workflow_id: str, name: str) -> TaskSpec:
    return TaskSpec(
        task_id=f"{workflow_id}.{name}",
        workflow_id=workflow_id,
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
    )


def logged(task_id: str, attempt: int, stdout: str, error: str = "") -> TaskResult:
    """A result whose stdout is the blob named `stdout` (64 hex digits made of it)."""
    logs = (FileRef("stdout", stdout * 64, 10),)
    return TaskResult(task_id, attempt, 3 if error else 0, error, logs=logs, log_note="")


async def new_store(tmp_path: Path, *workflows: str) -> ManagerStore:
    store = ManagerStore(tmp_path)
    await store.open()
    for workflow_id in workflows:
        await store.create_workflow(
            workflow_id, workflow_id, "tasks", {}, [NewTask(spec(workflow_id, "t"), "t", ())], []
        )
    return store


async def test_each_attempt_keeps_its_logs_and_deleting_the_workflow_frees_them(
    tmp_path: Path,
) -> None:
    store = await new_store(tmp_path, "wf", "other")
    await store.save_attempt("wf", "wf.t", "v1", logged("wf.t", 1, "a", error="exit 3"))
    await store.save_attempt("wf", "wf.t", "v2", logged("wf.t", 2, "b"))
    await store.save_attempt("wf", "wf.t", "v2", logged("wf.t", 2, "b"))  # a replayed event
    # A copy's attempts are its own; another workflow's log is the same blob as attempt 2's.
    await store.save_attempt("wf", "wf.t~2", "v3", logged("wf.t~2", 1, "c"))
    await store.save_attempt("other", "other.t", "v1", logged("other.t", 1, "b"))

    attempts = await store.attempts("wf.t")
    assert [(a.attempt, a.volunteer_id, a.outcome) for a in attempts] == [
        (1, "v1", "failed: exit 3"),
        (2, "v2", "completed"),
    ]
    assert attempts[0].logs == (FileRef("stdout", "a" * 64, 10),)
    assert [a.attempt for a in await store.attempts("wf.t~2")] == [1]
    assert {"a" * 64, "b" * 64, "c" * 64} <= await store.referenced_blobs()

    freed = await store.blobs_only_of("wf")
    assert sorted(ref.sha256 for ref in freed) == ["a" * 64, "c" * 64]  # "b" is other's too
    await store.forget_workflow("wf")
    assert await store.attempts("wf.t") == []
    referenced = await store.referenced_blobs()
    assert "b" * 64 in referenced
    assert not {"a" * 64, "c" * 64} & referenced
    await store.close()


async def test_a_workflows_files_shared_with_anothers_logs_are_not_freed(tmp_path: Path) -> None:
    store = await new_store(tmp_path, "wf", "other")
    await store.add_results("wf", [FileRef("result.txt", "d" * 64, 10)])
    await store.save_attempt("other", "other.t", "v1", logged("other.t", 1, "d"))
    assert await store.blobs_only_of("wf") == []
    await store.close()


async def test_the_results_an_older_store_kept_become_attempts(tmp_path: Path) -> None:
    """The last result of each task, and each copy's, were all an older store kept."""
    older = ManagerStore(tmp_path)
    older.database = Database(
        tmp_path / ManagerStore.FILE_NAME, [m for m in MIGRATIONS if m.name != ATTEMPT_LOGS]
    )
    await older.open()
    policy = ValidationPolicy(Mode.QUORUM, replicas=2, quorum=2)
    await older.create_workflow(
        "wf",
        "wf",
        "tasks",
        {},
        [
            NewTask(spec("wf", "plain"), "plain", ()),
            NewTask(spec("wf", "copied"), "copied", (), validation=policy),
        ],
        [],
    )
    plain = WorkflowTask(
        "wf.plain",
        "plain",
        status=TaskStatus.FAILED,
        attempts=3,
        volunteer_id="v1",
        result=logged("wf.plain", 3, "a", error="exit 3"),
    )
    copies = [
        Copy(1, CopyState.COMPLETED, "v1", 1, logged("wf.copied", 1, "b"), 0, Verdict.AGREED),
        Copy(2, CopyState.COMPLETED, "v2", 4, logged("wf.copied~2", 4, "c"), 0, Verdict.AGREED),
    ]
    copied = WorkflowTask(
        "wf.copied",
        "copied",
        status=TaskStatus.COMPLETED,
        result=logged("wf.copied", 1, "b"),
        validation=Validation("wf.copied", policy, copies, accepted=1, outcome="2 of 2"),
    )
    await older.save_tasks([plain, copied])
    await older.close()

    store = ManagerStore(tmp_path)
    await store.open()
    [failed] = await store.attempts("wf.plain")
    assert (failed.attempt, failed.volunteer_id, failed.error) == (3, "v1", "exit 3")
    assert failed.logs == (FileRef("stdout", "a" * 64, 10),)
    [first] = await store.attempts("wf.copied")
    [second] = await store.attempts("wf.copied~2")
    assert (first.attempt, first.logs[0].sha256) == (1, "b" * 64)
    assert (second.attempt, second.volunteer_id, second.logs[0].sha256) == (4, "v2", "c" * 64)
    found = await store.find_task("wf", "copied")
    assert found is not None
    assert (found.copies, found.accepted) == (("completed", "completed"), 1)
    await store.close()
