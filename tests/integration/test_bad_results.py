"""No result or event can brick a manager. A store holding a task completed without the
output a later task reads (written before results were checked at the coordinator) fails
that workflow with the reason when the manager starts, and the manager serves; it used to
refuse to start from its data dir for good (`ValueError: second: first has no output
a.txt`). An event whose handling breaks fails its own workflow, and the manager goes on
with the others."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.app import Node
from daemon.config import PROTOCOL_VERSION, NodeConfig
from daemon.errors import NodeError
from daemon.models import EventKind, NodeIdentity, ResourceRequest, TaskEvent, TaskSpec
from daemon.roles import RoleContext
from daemon.transport.access import AccessPolicy
from daemon.trust.bootstrap import NodeTrust
from daemon.version import VERSION
from manager_node.role import ManagerRole
from manager_node.store import ManagerStore, NewTask
from manager_node.workflow import Applied, TaskStatus, WorkflowRun, WorkflowTask
from tests.integration.harness import serving
from tests.trust import credential
from workflows.graph import UpstreamInput

pytestmark = pytest.mark.integration


def spec(name: str, outputs: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(
        task_id=f"wf.{name}",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
        outputs=outputs,
    )


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


async def _store_with_a_completed_task_missing_its_output(data_dir: Path) -> None:
    store = ManagerStore(data_dir)
    await store.open()
    tasks = [
        NewTask(spec("first", ("a.txt",)), "first", ()),
        NewTask(spec("second"), "second", ("first",), (UpstreamInput("a.txt", "first", "a.txt"),)),
        NewTask(spec("aside"), "aside", ()),
    ]
    await store.create_workflow("wf", "wf", "tasks", {}, tasks, [])
    await store.save_tasks(
        [
            WorkflowTask("wf.first", "first", status=TaskStatus.COMPLETED),  # no outputs
            WorkflowTask("wf.aside", "aside", status=TaskStatus.COMPLETED),
        ]
    )
    await store.set_workflow_state("wf", "running")
    await store.close()


async def test_a_manager_starts_over_a_completed_task_without_its_declared_output(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    await _store_with_a_completed_task_missing_its_output(data_dir)
    config = NodeConfig(
        roles=("coordinator", "manager"), data_dir=data_dir, listen="127.0.0.1:0", mdns=False
    )
    async with serving(Node(config)):
        reader = ManagerStore(data_dir)
        await reader.open()
        deadline = time.monotonic() + 15
        while (workflow := (await reader.workflows("wf"))[0]).state == "running":
            assert time.monotonic() < deadline, "the workflow did not end"
            await asyncio.sleep(0.02)
        await reader.close()
    assert workflow.state == "failed"
    [second] = [task for task in workflow.tasks if task.name == "second"]
    assert (second.state, second.error) == ("failed", "cannot start: first has no output a.txt")


async def test_an_event_that_breaks_its_workflow_fails_it_and_the_manager_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    store = ManagerStore(data_dir)
    await store.open()
    for workflow_id in ("broken", "fine"):
        only = replace(spec("only"), task_id=f"{workflow_id}.only", workflow_id=workflow_id)
        await store.create_workflow(
            workflow_id, workflow_id, "tasks", {}, [NewTask(only, "only", ())], []
        )
    await store.close()

    def apply(self: WorkflowRun, event: TaskEvent, outputs_verified: bool = True) -> Applied | None:
        if self.workflow_id == "broken":
            raise KeyError("a state nobody expected")
        return original(self, event, outputs_verified)

    original = WorkflowRun.apply
    monkeypatch.setattr(WorkflowRun, "apply", apply)
    role = ManagerRole(role_context(data_dir))
    await role.open()
    try:
        for number, workflow_id in enumerate(("broken", "fine"), start=1):
            await role.manager.on_event(
                TaskEvent(f"{workflow_id}.only", workflow_id, EventKind.RUNNING, 1.0, 1,
                          sequence=number)
            )  # fmt: skip
    finally:
        await role.stop()
        await role.close()
    reader = ManagerStore(data_dir)
    await reader.open()
    broken, fine = await reader.workflows("broken"), await reader.workflows("fine")
    sequence = await reader.meta("coordinator_sequence")
    await reader.close()
    assert broken[0].state == "failed"
    assert broken[0].error == (
        "the manager could not handle task broken.only: KeyError('a state nobody expected')"
    )
    assert fine[0].state == "running", "the other workflow went on"
    assert sequence == "2", "both events are behind it: a restart does not meet them again"
