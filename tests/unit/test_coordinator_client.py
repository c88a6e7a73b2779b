"""The manager's sender to the coordinator: a cancel overtakes the submissions still queued,
and the cancelled workflow's queued tasks are never sent."""

from __future__ import annotations

import asyncio
from typing import Any

from daemon.models import ResourceRequest, TaskSpec
from daemon.rpc.v1 import coordinator_pb2
from daemon.trust.credentials import LiveCredential
from manager_node.coordinator_client import SUBMIT_BATCH, CoordinatorClient
from tests.trust import credential


def spec(workflow_id: str, index: int) -> TaskSpec:
    return TaskSpec(
        task_id=f"{workflow_id}.t{index}",
        workflow_id=workflow_id,
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
    )


class RecordingStub:
    """Records calls; the first SubmitTasks waits until `release` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.first_call = asyncio.Event()
        self.release = asyncio.Event()

    async def SubmitTasks(self, request: coordinator_pb2.SubmitTasksRequest, **_: Any) -> None:
        workflows = {task.workflow_id for task in request.tasks}
        self.calls.append(("submit", ",".join(sorted(workflows)), len(request.tasks)))
        self.first_call.set()
        await self.release.wait()

    async def CancelTasks(self, request: coordinator_pb2.CancelTasksRequest, **_: Any) -> None:
        self.calls.append(("cancel", request.workflow_id, 0))


async def no_sequence() -> int:
    return 0


async def ignore(event: object) -> None:
    pass


async def test_a_cancel_overtakes_queued_submissions_and_drops_its_own() -> None:
    client = CoordinatorClient(
        manager_id="m",
        explicit_address="127.0.0.1:9",
        directory=None,
        credential=LiveCredential(credential(["manager"], node_id="m")),
        on_event=ignore,
        after_sequence=no_sequence,
    )
    stub = RecordingStub()
    client._stub = stub  # type: ignore[assignment]
    client.submit([spec("big", i) for i in range(4 * SUBMIT_BATCH)])
    client.submit([spec("small", i) for i in range(3)])
    sending = asyncio.create_task(client._send_queued())
    await stub.first_call.wait()
    client.cancel("big")
    stub.release.set()
    await sending
    assert stub.calls == [
        ("submit", "big", SUBMIT_BATCH),  # in flight when the cancel came
        ("cancel", "big", 0),
        ("submit", "small", 3),
    ]
