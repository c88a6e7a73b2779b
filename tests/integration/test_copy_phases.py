"""A replicated task, as its manager shows it, stands as its copies do: running while a copy
runs, else fetching while a volunteer holds one, else queued; whichever copy the
coordinator's event is about, and in whatever order they come. Progress moves no task
between phases, replicated or not: the coordinator keeps a task that reports progress before
its volunteer says it started `fetching`, and so does the manager. A real manager (its role,
its SQLite store) fed the coordinator's events; what it stores is what `vcnode status`
shows."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.config import PROTOCOL_VERSION, NodeConfig
from daemon.errors import NodeError
from daemon.models import (
    EventKind,
    NodeIdentity,
    ResourceRequest,
    TaskEvent,
    TaskResult,
    TaskSpec,
    WorkflowUpdate,
)
from daemon.roles import RoleContext
from daemon.transport.access import AccessPolicy
from daemon.trust.bootstrap import NodeTrust
from daemon.version import VERSION
from manager_node.role import ManagerRole
from manager_node.store import ManagerStore, NewTask
from manager_node.validation import Validation, copy_id
from manager_node.workflow import TaskStatus, WorkflowTask
from tests.trust import credential
from workflows.validation_policy import NO_VALIDATION, Mode, ValidationPolicy

pytestmark = pytest.mark.integration

# An untrusted volunteer's answer is checked by a second copy; with quorum, two run at once.
ADAPTIVE = ValidationPolicy(mode=Mode.ADAPTIVE, quorum=2, max_copies=4)
QUORUM = ValidationPolicy(mode=Mode.QUORUM, replicas=2, quorum=2, max_copies=4)


def role_context(data_dir: Path) -> RoleContext:
    def fatal(error: NodeError) -> None:
        raise AssertionError(f"the manager stopped: {error}")

    config = NodeConfig(("manager",), data_dir, "127.0.0.1:0", mdns=False)
    identity = NodeIdentity(
        "m" * 32, socket.gethostname(), ("manager",), "default", VERSION, PROTOCOL_VERSION
    )
    trust = NodeTrust(credential(["manager"], node_id=identity.node_id), None)
    return RoleContext(
        config, identity, data_dir, None, fatal, trust, AccessPolicy(identity.node_id)
    )


@dataclass
class Seen:
    """How the task stands in the manager's store, and what those watching heard."""

    state: str
    volunteer_id: str
    running: int
    fetching: int


class Manager:
    """A manager holding one workflow of one task ("wf.t"), handed to the coordinator:
    each event the coordinator would send is applied, then the task read back."""

    def __init__(self, role: ManagerRole, reader: ManagerStore) -> None:
        self.role = role
        self.reader = reader
        self.updates: list[WorkflowUpdate] = []
        role.manager.listeners.append(self.updates.append)
        self._sequence = itertools.count(1)

    async def event(
        self,
        kind: EventKind,
        copy: int = 1,
        volunteer_id: str = "",
        attempt: int = 1,
        **details: object,
    ) -> Seen:
        task_id = copy_id("wf.t", copy)
        await self.role.manager.on_event(
            TaskEvent(
                task_id, "wf", kind, time.time(), attempt, volunteer_id,
                sequence=next(self._sequence), **details,  # type: ignore[arg-type]
            )
        )  # fmt: skip
        (workflow,) = await self.reader.workflows("wf")
        (task,) = workflow.tasks
        counts = workflow.counts
        return Seen(task.state, task.volunteer_id, counts.running, counts.fetching)

    async def completed(self, copy: int, volunteer_id: str) -> Seen:
        result = TaskResult(copy_id("wf.t", copy), 1, 0, "", (), 10.0, 12.0)
        return await self.event(EventKind.COMPLETED, copy, volunteer_id, result=result)


@pytest.fixture
def policy() -> ValidationPolicy:
    return ADAPTIVE


@pytest.fixture
async def manager(tmp_path: Path, policy: ValidationPolicy) -> AsyncIterator[Manager]:
    """The task as the manager stores it once handed over: queued, its first copies too."""
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    spec = TaskSpec("wf.t", "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60)
    store = ManagerStore(data_dir)
    await store.open()
    await store.create_workflow("wf", "wf", "tasks", {}, [NewTask(spec, "t", (), (), policy)], [])
    validation = None
    if policy is not NO_VALIDATION:
        validation = Validation("wf.t", policy)
        validation.start()
    await store.save_tasks(
        [WorkflowTask("wf.t", "t", status=TaskStatus.QUEUED, validation=validation)]
    )
    await store.set_workflow_state("wf", "queued")
    await store.close()
    role = ManagerRole(role_context(data_dir))
    await role.open()
    reader = ManagerStore(data_dir)
    await reader.open()
    try:
        yield Manager(role, reader)
    finally:
        await reader.close()
        await role.stop()
        await role.close()


async def test_a_task_whose_answer_waits_for_its_check_is_queued_not_running_then_fetching(
    manager: Manager,
) -> None:
    assert await manager.event(EventKind.FETCHING, 1, "v1") == Seen("fetching", "v1", 0, 1)
    assert await manager.event(EventKind.RUNNING, 1, "v1") == Seen("running", "v1", 1, 0)
    # The volunteer is not trusted: a second copy checks its answer. Nothing runs now.
    assert await manager.completed(1, "v1") == Seen("queued", "v1", 0, 0)
    assert manager.updates[-1].kind == "queued", "watchers hear where the task went"
    assert (await manager.event(EventKind.QUEUED, 2)).state == "queued"
    assert (await manager.event(EventKind.OFFERED, 2, "v2")).state == "queued"
    assert await manager.event(EventKind.FETCHING, 2, "v2") == Seen("fetching", "v2", 0, 1)
    assert await manager.event(EventKind.RUNNING, 2, "v2") == Seen("running", "v2", 1, 0)
    assert (await manager.completed(2, "v2")).state == "completed"
    kinds = [update.kind for update in manager.updates if update.task_id == "wf.t"]
    assert kinds == ["fetching", "running", "queued", "fetching", "running", "completed"]


async def test_a_second_copy_handed_back_leaves_its_task_queued_not_fetching(
    manager: Manager,
) -> None:
    await manager.event(EventKind.FETCHING, 1, "v1")
    await manager.event(EventKind.RUNNING, 1, "v1")
    await manager.completed(1, "v1")
    assert (await manager.event(EventKind.FETCHING, 2, "v2")).state == "fetching"
    lost = await manager.event(EventKind.REQUEUED, 2, "v2", message="its volunteer was lost")
    assert lost == Seen("queued", "v2", 0, 0), "nobody holds it"
    assert await manager.event(EventKind.FETCHING, 2, "v3", 2) == Seen("fetching", "v3", 0, 1)


@pytest.mark.parametrize("policy", [QUORUM])
async def test_a_copy_running_outranks_one_fetching_and_one_handed_back(
    manager: Manager,
) -> None:
    await manager.event(EventKind.FETCHING, 1, "v1")
    await manager.event(EventKind.RUNNING, 1, "v1")
    assert await manager.event(EventKind.FETCHING, 2, "v2") == Seen("running", "v1", 1, 0)
    declined = await manager.event(EventKind.REQUEUED, 1, "v1", message="its volunteer was lost")
    assert declined == Seen("fetching", "v2", 0, 1), "the first is queued, the second held"


async def test_progress_of_a_copy_still_fetching_leaves_its_task_fetching(
    manager: Manager,
) -> None:
    await manager.event(EventKind.FETCHING, 1, "v1")
    progressed = await manager.event(EventKind.PROGRESS, 1, "v1", percent=40.0)
    assert progressed == Seen("fetching", "v1", 0, 1)
    assert await manager.event(EventKind.RUNNING, 1, "v1") == Seen("running", "v1", 1, 0)


@pytest.mark.parametrize("policy", [NO_VALIDATION])
async def test_progress_of_a_task_still_fetching_leaves_it_fetching(manager: Manager) -> None:
    await manager.event(EventKind.FETCHING, 1, "v1")
    progressed = await manager.event(EventKind.PROGRESS, 1, "v1", percent=40.0)
    assert progressed == Seen("fetching", "v1", 0, 1)
    heard = manager.updates[-1]
    assert (heard.kind, heard.counts.fetching, heard.counts.running) == ("progress", 1, 0)
    assert await manager.event(EventKind.RUNNING, 1, "v1") == Seen("running", "v1", 1, 0)
