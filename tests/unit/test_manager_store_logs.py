"""Every attempt's logs in the manager's real SQLite: kept per attempt (and found in what an
older store kept), referenced while their workflow lives (never collected as orphans), and
freed with it unless something else refers to the same blob, even one that comes to refer to
it while the workflow is being deleted; a log whose blob is gone reads as empty, saying so."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from daemon.models import EventKind, FileRef, ResourceRequest, TaskEvent, TaskResult, TaskSpec
from daemon.store import Database
from daemon.supervision import Supervisor
from daemon.transfer.blobstore import BlobStore
from manager_node import manager as manager_module
from manager_node.images import ImageArchives
from manager_node.live_logs import AttemptStarted, Ended, LiveLogs, Note, Unit
from manager_node.manager import WorkflowManager
from manager_node.store import MIGRATIONS, ManagerStore, NewTask
from manager_node.task_logs import TaskLogs
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


# --- logs whose blobs are gone, and a delete racing an event ----------------------------------


async def blob_store(tmp_path: Path) -> BlobStore:
    blobs = BlobStore(tmp_path / "blobs", max_blob_bytes=2**30, quota_bytes=2**32)
    await blobs.open()
    return blobs


async def test_a_log_whose_blob_is_gone_reads_as_empty_and_says_so(tmp_path: Path) -> None:
    # An attempt a store before 0009 kept: its log blob was collected as an orphan since.
    store = await new_store(tmp_path, "wf")
    await store.save_attempt("wf", "wf.t", "v1", logged("wf.t", 1, "a", error="exit 3"))
    blobs = await blob_store(tmp_path)
    logs = TaskLogs(store, blobs, LiveLogs(), lambda unit: None)

    shown = await logs.task_log("wf", "t", "stdout", 1)
    assert shown.content == b""
    assert shown.note == (
        "attempt 1 failed: exit 3; the log of attempt 1 is no longer kept on this manager"
    )
    assert (await logs.task_log("wf", "t", "stdout", 0)).note == shown.note
    # Following the ended task says the same, and ends.
    pieces = [piece async for piece in logs.follow("wf", "t", "stdout")]
    assert pieces == [
        AttemptStarted("wf.t", 1, ""),
        Note(shown.note),
        Ended("wf.t", "t", "waiting", ""),
    ]
    await blobs.close()
    await store.close()


async def test_a_followed_attempt_whose_log_is_gone_ends_with_a_note(tmp_path: Path) -> None:
    store = await new_store(tmp_path, "wf")
    blobs = await blob_store(tmp_path)
    live = LiveLogs()
    now: list[Unit | None] = [Unit(1, "v1", False, "running", "")]
    logs = TaskLogs(store, blobs, live, lambda unit: now[0])
    follower = aiter(logs.follow("wf", "t", "stdout"))
    async with asyncio.timeout(DEADLINE_SECONDS):
        assert await anext(follower) == AttemptStarted("wf.t", 1, "v1")
    # It ends; its log was recorded, and its blob is gone.
    await store.save_attempt("wf", "wf.t", "v1", logged("wf.t", 1, "a"))
    now[0] = Unit(0, "", True, "completed", "")
    live.held("wf.t", "")
    async with asyncio.timeout(DEADLINE_SECONDS):
        rest = [piece async for piece in follower]
    # (First, maybe, when live output would have started.)
    rest = [p for p in rest if not (isinstance(p, Note) and p.text.startswith("live output"))]
    assert rest == [
        Note("the log of attempt 1 is no longer kept on this manager"),
        Ended("wf.t", "t", "completed", ""),
    ]
    await blobs.close()
    await store.close()


DEADLINE_SECONDS = 10.0


class EventMeanwhile(BlobStore):
    """A blob store whose first deletion lets an event in, as one arriving then would:
    it runs to its end unless the manager holds it back."""

    def __init__(self, root: Path, manager: Callable[[], WorkflowManager]) -> None:
        super().__init__(root, max_blob_bytes=2**30, quota_bytes=2**32)
        self._manager = manager
        self.event: asyncio.Task[None] | None = None

    async def delete_many(self, sha256s: Collection[str]) -> list[str]:
        if self.event is None:
            manager = self._manager()
            # Its log is the same bytes as a blob being deleted: one not in this deletion
            # if there is one, else the last.
            doomed = [c for c in CONTENTS if sha(c) not in sha256s] or [CONTENTS[-1]]
            self.event = asyncio.get_running_loop().create_task(
                manager.on_event(failed_with_log("other", doomed[0]))
            )
            if manager._lock.locked():
                await asyncio.sleep(0)  # it gets as far as it may: to the manager's lock
            else:
                await self.event
        return await super().delete_many(sha256s)


CONTENTS = (b"same line, one\n", b"same line, two\n")


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def failed_with_log(workflow_id: str, content: bytes) -> TaskEvent:
    log = (FileRef("stdout", sha(content), len(content)),)
    result = TaskResult(f"{workflow_id}.t", 1, 3, "exit 3", logs=log)
    return TaskEvent(
        f"{workflow_id}.t", workflow_id, EventKind.FAILED, time.time(), 1, "v1", "exit 3", 0, result
    )


async def test_a_log_arriving_while_a_workflow_is_deleted_keeps_its_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blob by blob: the event can come between two of them.
    monkeypatch.setattr(manager_module, "FREE_BATCH", 1, raising=False)
    store = await new_store(tmp_path, "gone", "other")
    await store.save_tasks(
        [WorkflowTask("other.t", "t", status=TaskStatus.RUNNING, attempts=1, volunteer_id="v1")]
    )
    await store.set_workflow_state("other", "running")
    await store.set_workflow_state("gone", "failed")
    manager: WorkflowManager | None = None
    blobs = EventMeanwhile(tmp_path / "blobs", lambda: manager)  # type: ignore[arg-type,return-value]
    await blobs.open()
    for number, content in enumerate(CONTENTS, 1):
        await blobs.put_bytes(content)
        log = (FileRef("stdout", sha(content), len(content)),)
        await store.save_attempt(
            "gone", "gone.t", "v1", TaskResult("gone.t", number, 0, "", logs=log)
        )
    supervisor = Supervisor(lambda error: None)
    manager = WorkflowManager(
        store,
        blobs,
        tmp_path / "workflows",
        ImageArchives(blobs, store, tmp_path / "images"),
        supervisor,
    )
    await manager.open()

    async with asyncio.timeout(DEADLINE_SECONDS):
        deleted = await manager.delete("gone")
        assert blobs.event is not None
        await blobs.event
    # Whatever the other workflow's attempt refers to is here.
    [attempt] = await store.attempts("other.t")
    for ref in attempt.logs:
        assert await blobs.has(ref.sha256), "a log of another workflow was deleted"
    shown = await manager.task_log("other", "t", "stdout", 1)
    assert shown.content in CONTENTS
    # The rest went, and the count says what did.
    assert [await blobs.has(sha(c)) for c in CONTENTS].count(False) == deleted.blobs == 1
    await supervisor.stop()
    await manager.stop()
    await blobs.close()
    await store.close()
