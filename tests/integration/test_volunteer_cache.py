"""The volunteer's input cache against a real TransferService on loopback: it stays within
its quota by evicting the blobs used least recently, and never one in use."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from daemon.errors import NodeError
from daemon.models import FileRef
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import CHUNK_BYTES
from daemon.transfer.errors import QuotaExceededError
from daemon.transfer.servicer import AllowAll, TransferServicer
from daemon.transport.channels import Dial
from daemon.trust.credentials import LiveCredential
from tests.integration.test_transfer import serving
from tests.trust import credential
from volunteer_node.blobs import BlobTransfers, ManagerPeer

pytestmark = pytest.mark.integration

MiB = 1 << 20


def manager_at(peer: Dial) -> ManagerPeer:
    """The test's transfer service as a task names its manager."""
    return ManagerPeer(peer.address, peer.peer.split(".")[0])  # <node id>.id.vcnode


def volunteer() -> LiveCredential:
    return LiveCredential(credential(["volunteer"]))


async def manager_blobs(root: Path, count: int) -> tuple[BlobStore, list[FileRef]]:
    store = BlobStore(root, max_blob_bytes=64 * MiB, quota_bytes=256 * MiB)
    refs = []
    for number in range(count):
        data = os.urandom(MiB + number)  # more than one chunk: the streaming path
        sha256, size = await store.put_bytes(data)
        assert sha256 == hashlib.sha256(data).hexdigest()
        refs.append(FileRef(f"input-{number}", sha256, size))
    return store, refs


async def fetch(cache: BlobTransfers, address: Dial, ref: FileRef) -> None:
    async with cache.fetched(manager_at(address), ref) as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256


async def held(cache: BlobTransfers, refs: list[FileRef]) -> list[bool]:
    return [await cache.store.has(ref.sha256) for ref in refs]


async def test_a_full_cache_evicts_the_blobs_used_least_recently(tmp_path: Path) -> None:
    manager, (a, b, c, d) = await manager_blobs(tmp_path / "manager", 4)
    cache = BlobTransfers(
        tmp_path / "volunteer",
        quota_bytes=3 * MiB + 64 * 1024,
        credential=volunteer(),
    )
    await cache.open()
    try:
        async with serving(TransferServicer(manager, AllowAll())) as address:
            for ref in (a, b, c):
                await fetch(cache, address, ref)
            await fetch(cache, address, a)  # from the cache: a is now the most recent
            await fetch(cache, address, d)
            assert await held(cache, [a, b, c, d]) == [True, False, True, True]
            usage = await cache.store.usage()
            assert usage.used_bytes <= usage.quota_bytes
    finally:
        await cache.close()
        await manager.close()


async def test_after_a_restart_the_blobs_that_arrived_first_go_first(tmp_path: Path) -> None:
    manager, (a, b, c) = await manager_blobs(tmp_path / "manager", 3)
    quota = 2 * MiB + 64 * 1024
    async with serving(TransferServicer(manager, AllowAll())) as address:
        first = BlobTransfers(
            tmp_path / "volunteer",
            quota_bytes=quota,
            credential=volunteer(),
        )
        await first.open()
        await fetch(first, address, a)
        await fetch(first, address, b)
        await first.close()
        os.utime(await first.store.path(a.sha256), (1, 1))  # a arrived long before b

        again = BlobTransfers(
            tmp_path / "volunteer",
            quota_bytes=quota,
            credential=volunteer(),
        )
        await again.open()
        try:
            await fetch(again, address, c)
            assert await held(again, [a, b, c]) == [False, True, True]
        finally:
            await again.close()
    await manager.close()


async def test_a_blob_in_use_is_never_evicted(tmp_path: Path) -> None:
    manager, (a, b, c) = await manager_blobs(tmp_path / "manager", 3)
    cache = BlobTransfers(
        tmp_path / "volunteer",
        quota_bytes=2 * MiB + 64 * 1024,
        credential=volunteer(),
    )
    await cache.open()
    try:
        async with (
            serving(TransferServicer(manager, AllowAll())) as address,
            cache.fetched(manager_at(address), a) as in_use,
        ):
            await fetch(cache, address, b)
            await fetch(cache, address, c)  # room is made from b, not from a
            assert await held(cache, [a, b, c]) == [True, False, True]
            assert hashlib.sha256(in_use.read_bytes()).hexdigest() == a.sha256

            async with cache.fetched(manager_at(address), c):
                # Both held blobs are in use: nothing may go, so b cannot come in.
                with pytest.raises(QuotaExceededError, match="quota"):
                    await fetch(cache, address, b)
                assert await held(cache, [a, b, c]) == [True, False, True]
    finally:
        await cache.close()
        await manager.close()


async def test_a_broken_fetch_nobody_resumed_is_dropped_before_any_cached_blob(
    tmp_path: Path,
) -> None:
    manager, (a, b, c) = await manager_blobs(tmp_path / "manager", 3)
    cache = BlobTransfers(
        tmp_path / "volunteer",
        quota_bytes=2 * MiB + 64 * 1024,
        credential=volunteer(),
    )
    await cache.open()
    try:
        async with serving(TransferServicer(manager, AllowAll())) as address:
            await fetch(cache, address, a)
            async with cache.store.receive(b.sha256, b.size) as writer:  # broken off
                await writer.append(os.urandom(CHUNK_BYTES // 2))
            assert await cache.store.partial_size(b.sha256) == CHUNK_BYTES // 2
            await fetch(cache, address, c)
            assert await cache.store.partial_size(b.sha256) == 0, "the idle partial went"
            assert await held(cache, [a, b, c]) == [True, False, True], "a stayed"
    finally:
        await cache.close()
        await manager.close()


async def test_inputs_come_only_from_the_manager_the_offer_names(tmp_path: Path) -> None:
    """Another manager's certificate at the task's manager address (an address taken over,
    a node that lies on mDNS) fails the handshake: nothing is fetched from it."""
    manager, [a] = await manager_blobs(tmp_path / "manager", 1)
    cache = BlobTransfers(tmp_path / "volunteer", quota_bytes=8 * MiB, credential=volunteer())
    await cache.open()
    try:
        async with serving(TransferServicer(manager, AllowAll())) as address:
            impostor = ManagerPeer(address.address, "another-manager")
            with pytest.raises(
                NodeError, match=r"of this cluster but not of the .* expected there"
            ):
                async with cache.fetched(impostor, a):
                    pass
            await fetch(cache, address, a)  # the manager the offer names: fetched
    finally:
        await cache.close()
    assert await cache.store.has(a.sha256)


async def test_clearing_the_cache_removes_all_but_what_a_task_is_using(tmp_path: Path) -> None:
    """`vcnode cache clear`, as the owner's control socket calls it."""
    manager, (a, b, c) = await manager_blobs(tmp_path / "manager", 3)
    cache = BlobTransfers(tmp_path / "volunteer", quota_bytes=64 * MiB, credential=volunteer())
    await cache.open()
    try:
        async with serving(TransferServicer(manager, AllowAll())) as address:
            await fetch(cache, address, b)
            await fetch(cache, address, c)
            async with cache.fetched(manager_at(address), a) as in_use:
                cleared = await cache.clear()
                assert (cleared.blobs, cleared.freed_bytes) == (2, b.size + c.size)
                assert cleared.left.used_bytes == a.size, "the blob a task uses stays"
                assert await held(cache, [a, b, c]) == [True, False, False]
                assert hashlib.sha256(in_use.read_bytes()).hexdigest() == a.sha256
            assert (await cache.clear()).blobs == 1, "once no task uses it, it goes too"
            await fetch(cache, address, b)  # and a later task fetches again
    finally:
        await cache.close()
        await manager.close()
