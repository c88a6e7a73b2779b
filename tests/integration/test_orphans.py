"""Blobs nothing refers to (inputs uploaded for a submission that never came, outputs of
attempts that never reported) are deleted once old; every blob a record names stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.models import FileRef, ResourceRequest, TaskSpec
from daemon.transfer.blobstore import BlobStore
from manager_node.role import BLOB_QUOTA_BYTES, MAX_BLOB_BYTES, ManagerRole
from manager_node.store import ManagerStore, NewTask
from tests.integration.test_bad_results import role_context

pytestmark = pytest.mark.integration


async def test_old_blobs_nothing_refers_to_are_deleted_and_named_ones_kept(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    blobs = BlobStore(
        data_dir / "blobs", max_blob_bytes=MAX_BLOB_BYTES, quota_bytes=BLOB_QUOTA_BYTES
    )
    named, _ = await blobs.put_bytes(b"an input a workflow names")
    orphan, _ = await blobs.put_bytes(b"uploaded, never submitted")
    await blobs.close()
    store = ManagerStore(data_dir)
    await store.open()
    spec = TaskSpec(
        "wf.t", "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60,
        inputs=(FileRef("in.txt", named, 25),),
    )  # fmt: skip
    await store.create_workflow("wf", "wf", "tasks", {}, [NewTask(spec, "t", ())], [spec.inputs[0]])
    await store.close()

    role = ManagerRole(role_context(data_dir))
    await role.open()
    try:
        assert await role.manager.collect_orphans(3600) == 0, "young orphans stay a day"
        assert await role.manager.collect_orphans(0) == 1
    finally:
        await role.close()
    held = BlobStore(
        data_dir / "blobs", max_blob_bytes=MAX_BLOB_BYTES, quota_bytes=BLOB_QUOTA_BYTES
    )
    assert await held.has(named)
    assert not await held.has(orphan)
    await held.close()
