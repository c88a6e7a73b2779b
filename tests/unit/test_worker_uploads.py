"""A task's outputs wait for a manager nobody can reach, but not for ever: past the patience
the attempt fails saying why (a volunteer used to retry an upload for as long as it ran)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.errors import UnreachableError
from daemon.models import FileRef, OwnerLimits, ResourceRequest, Resources, TaskSpec
from volunteer_node.blobs import ManagerPeer
from volunteer_node.store import VolunteerStore
from volunteer_node.worker import TaskFailedError, TaskWorker, WorkerConfig


class ManagerAway:
    """Transfers to a manager that never answers."""

    def __init__(self) -> None:
        self.tries = 0

    @contextlib.asynccontextmanager
    async def fetched(self, manager: ManagerPeer, ref: FileRef) -> AsyncIterator[Path]:
        raise UnreachableError("no transfer service answered")
        yield Path()

    async def send(self, manager: ManagerPeer, path: Path, purpose: str) -> FileRef:
        self.tries += 1
        raise UnreachableError(f"no transfer service answered at {manager.address}")

    async def image_archive(self, manager: ManagerPeer, image: str, image_id: str) -> FileRef:
        raise UnreachableError("no transfer service answered")


async def no_image(image: str) -> str | None:
    return None


async def test_outputs_give_up_on_an_unreachable_manager_after_the_patience(
    tmp_path: Path,
) -> None:
    transfers = ManagerAway()
    worker = TaskWorker(
        WorkerConfig(tmp_path / "tasks", OwnerLimits(), upload_patience_seconds=0.0),
        VolunteerStore(tmp_path),
        transfers,
        runtime=None,
        resources=lambda: Resources(2, 2048, 10_000),
        image_id=no_image,
    )
    task = TaskSpec(
        "wf.t", "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60,
        manager_address="10.0.0.2:7451",
    )  # fmt: skip
    output = tmp_path / "out.bin"
    output.write_bytes(b"x" * 10_000)
    with pytest.raises(TaskFailedError) as failed:
        await worker._upload_until_delivered(task, output, deadline=time.monotonic())
    assert str(failed.value) == (
        "could not deliver output out.bin to the manager at 10.0.0.2:7451 within 0 s:"
        " no transfer service answered at 10.0.0.2:7451"
    )
    assert transfers.tries == 1
