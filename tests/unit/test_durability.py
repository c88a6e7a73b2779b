"""Write-behind durability of the blob store: real files, with fsync observed (and, where a
test needs it, held or failed) through the one function that calls it."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from daemon.transfer import crccache, durability
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.durability import Watermark, read_watermark, write_watermark

MiB = 1024 * 1024


def make_store(root: Path) -> BlobStore:
    return BlobStore(root, max_blob_bytes=64 * MiB, quota_bytes=256 * MiB)


async def receive(store: BlobStore, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    async with store.receive(sha256, len(data)) as writer:
        await writer.append(data)
        await writer.finish()
    return sha256


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path fsynced through the durability module, in order."""
    paths: list[Path] = []
    real = durability.fsync_path

    def recording(path: Path) -> None:
        real(path)
        paths.append(path)

    monkeypatch.setattr(durability, "fsync_path", recording)
    return paths


def pretend_the_machine_crashed(root: Path, *, rebooted: bool) -> None:
    """A mark as the crash left it: behind every blob, from this boot or another one."""
    mark = read_watermark(root / "synced-mark")
    assert mark is not None
    boot_id = "another-boot" if rebooted else mark.boot_id
    write_watermark(root / "synced-mark", Watermark(boot_id, 0))


async def test_make_durable_returns_only_once_the_blob_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    happened: list[str] = []
    real = durability.fsync_path

    def held(path: Path) -> None:
        if path.parent.parent.name == "complete":
            release.wait(timeout=30)
            real(path)
            happened.append("synced")
            return
        real(path)

    monkeypatch.setattr(durability, "fsync_path", held)
    store = make_store(tmp_path / "blobs")
    sha256 = await receive(store, b"x" * 100_000)
    assert await store.has(sha256), "visible as soon as it is verified"
    waiting = asyncio.create_task(store.make_durable([sha256]))
    # Callbacks run in order: the task's first step (up to its wait) before the release.
    asyncio.get_running_loop().call_soon(release.set)
    await asyncio.wait_for(waiting, timeout=30)
    happened.append("durable")
    assert happened == ["synced", "durable"]
    await store.close()


async def test_blobs_and_their_directories_are_synced_behind_the_transfer(
    tmp_path: Path, synced: list[Path]
) -> None:
    store = make_store(tmp_path / "blobs")
    first = await receive(store, b"a" * 5000)
    second = await receive(store, b"b" * 7000)
    await store.make_durable([first, second])
    for sha256 in (first, second):
        blob = await store.path(sha256)
        assert blob in synced
        assert blob.parent in synced, "the rename into its shard"
        assert blob.parent.parent in synced, "the new shard directory"
    await store.close()


async def test_a_clean_close_leaves_nothing_to_check_at_the_next_start(
    tmp_path: Path, synced: list[Path]
) -> None:
    root = tmp_path / "blobs"
    store = make_store(root)
    sha256 = await receive(store, b"c" * 9000)
    await store.close()
    mark = read_watermark(root / "synced-mark")
    assert mark is not None
    blob = await store.path(sha256)
    assert mark.synced_before_ns > blob.stat().st_ctime_ns
    synced.clear()
    reopened = make_store(root)
    await reopened.open()
    assert blob not in synced
    await reopened.close()


async def test_after_a_reboot_blobs_that_lost_their_bytes_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = make_store(root)
    kept = await receive(store, os.urandom(3 * MiB))
    lost = await receive(store, os.urandom(2 * MiB + 5))
    lost_path = await store.path(lost)
    assert crccache.sidecar_path(lost_path).exists()
    await store.close()
    # What writeback that never happened looks like: the right size, zeros inside.
    lost_path.write_bytes(bytes(2 * MiB + 5))
    pretend_the_machine_crashed(root, rebooted=True)

    reopened = make_store(root)
    assert await reopened.has(kept)
    assert not await reopened.has(lost)
    assert not crccache.sidecar_path(lost_path).exists()
    assert (await reopened.usage()).complete_bytes == 3 * MiB
    mark = read_watermark(root / "synced-mark")
    assert mark is not None
    assert mark.boot_id == durability.current_boot_id()
    await reopened.close()


async def test_after_a_process_crash_recent_blobs_are_synced_not_hashed(
    tmp_path: Path, synced: list[Path]
) -> None:
    root = tmp_path / "blobs"
    store = make_store(root)
    sha256 = await receive(store, b"d" * 4000)
    await store.close()
    pretend_the_machine_crashed(root, rebooted=False)
    synced.clear()
    reopened = make_store(root)
    assert await reopened.has(sha256)
    assert await reopened.path(sha256) in synced
    await reopened.close()


async def test_a_store_from_before_marks_checks_nothing(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = make_store(root)
    sha256 = await receive(store, b"e" * 4000)
    await store.close()
    (root / "synced-mark").unlink()
    (await store.path(sha256)).write_bytes(b"f" * 4000)  # would fail a check
    reopened = make_store(root)
    assert await reopened.has(sha256)
    assert (root / "synced-mark").exists()
    await reopened.close()


async def test_a_blob_that_cannot_be_synced_fails_make_durable_and_holds_the_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = durability.fsync_path

    def failing(path: Path) -> None:
        if path.parent.parent.name == "complete":
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    root = tmp_path / "blobs"
    store = make_store(root)
    await store.open()
    monkeypatch.setattr(durability, "fsync_path", failing)
    sha256 = await receive(store, b"g" * 4000)
    with pytest.raises(OSError, match="Input/output"):
        await store.make_durable([sha256])
    await store.close()
    blob = await store.path(sha256)
    mark = read_watermark(root / "synced-mark")
    assert mark is not None
    assert mark.synced_before_ns < blob.stat().st_ctime_ns, "the next start re-checks it"


async def test_a_blob_whose_directory_cannot_be_synced_is_not_durable_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file reached the disk but its rename may not have: the blob counts as unsynced."""
    real = durability.fsync_path

    def failing(path: Path) -> None:
        if path.parent.name == "complete":  # a shard directory
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    root = tmp_path / "blobs"
    store = make_store(root)
    await store.open()
    monkeypatch.setattr(durability, "fsync_path", failing)
    sha256 = await receive(store, b"h" * 4000)
    with pytest.raises(OSError, match="Input/output"):
        await store.make_durable([sha256])
    await store.close()
    mark = read_watermark(root / "synced-mark")
    assert mark is not None
    assert mark.synced_before_ns < (await store.path(sha256)).stat().st_ctime_ns
