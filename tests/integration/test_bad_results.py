"""A result without the output a later task reads can no longer brick a manager: a store
holding one (written before results were checked at the coordinator) fails that workflow
with the reason when the manager starts, and the manager serves; it used to refuse to start
from its data dir for good (`ValueError: second: first has no output a.txt`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from daemon.app import Node
from daemon.config import NodeConfig
from daemon.models import ResourceRequest, TaskSpec
from manager_node.store import ManagerStore, NewTask
from manager_node.workflow import TaskStatus, WorkflowTask
from tests.integration.harness import serving
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
