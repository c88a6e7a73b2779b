"""Cached per-chunk CRCs (sidecars): written at publish or after a first full read, used
while they match their blob, ignored (and recomputed) as soon as they do not."""

from __future__ import annotations

import hashlib
import os
import zlib
from array import array
from pathlib import Path

from daemon.transfer import crccache
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import CHUNK_BYTES, ChunkData

MiB = 1 << 20
DATA = os.urandom(3 * CHUNK_BYTES + 12345)
SHA = hashlib.sha256(DATA).hexdigest()
TRUE_CRCS = [zlib.crc32(DATA[i : i + CHUNK_BYTES]) for i in range(0, len(DATA), CHUNK_BYTES)]


def make_store(root: Path) -> BlobStore:
    return BlobStore(root, max_blob_bytes=64 * MiB, quota_bytes=256 * MiB)


async def read_all(store: BlobStore, offset: int = 0) -> list[ChunkData]:
    return [chunk async for chunk in store.read_chunks(SHA, offset)]


def assert_true_crcs(chunks: list[ChunkData], data: bytes = DATA) -> None:
    assert b"".join(c.data for c in chunks) == data[chunks[0].offset :]
    assert all(c.crc32 == zlib.crc32(c.data) for c in chunks)


async def receive_in(store: BlobStore, piece: int, *, with_crc: bool = True) -> Path:
    async with store.receive(SHA, len(DATA)) as writer:
        for start in range(0, len(DATA), piece):
            data = DATA[start : start + piece]
            await writer.append(data, zlib.crc32(data) if with_crc else None)
        return await writer.finish()


async def test_a_received_blob_is_published_with_its_sidecar(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    path = await receive_in(store, CHUNK_BYTES)
    table = crccache.load(path, path.stat(), CHUNK_BYTES)
    assert table is not None
    assert list(table) == TRUE_CRCS
    assert (await store.usage()).complete_bytes == len(DATA), "sidecars are not charged"


async def test_sidecar_of_chunks_that_do_not_fall_on_chunk_bounds(tmp_path: Path) -> None:
    for piece, with_crc in [(700_000, True), (CHUNK_BYTES + 1, True), (CHUNK_BYTES, False)]:
        store = make_store(tmp_path / f"blobs-{piece}-{with_crc}")
        path = await receive_in(store, piece, with_crc=with_crc)
        table = crccache.load(path, path.stat(), CHUNK_BYTES)
        assert table is not None
        assert list(table) == TRUE_CRCS


async def test_served_crcs_come_from_the_sidecar(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    path = await receive_in(store, CHUNK_BYTES)
    # A sidecar that matches the blob is believed: its values are what goes out.
    fake = array("I", [c ^ 1 for c in TRUE_CRCS])
    assert crccache.write(path, fake, CHUNK_BYTES)
    assert [c.crc32 for c in await read_all(store)] == list(fake)


async def test_a_changed_blob_makes_its_sidecar_stale(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    path = await receive_in(store, CHUNK_BYTES)
    changed = DATA[::-1]
    path.write_bytes(changed)
    assert crccache.load(path, path.stat(), CHUNK_BYTES) is None
    chunks = [c async for c in store.read_chunks(SHA)]
    assert_true_crcs(chunks, changed)
    # The full read left a sidecar for the blob as it is now.
    table = crccache.load(path, path.stat(), CHUNK_BYTES)
    assert table is not None
    assert list(table) == [c.crc32 for c in chunks]


async def test_a_torn_or_foreign_sidecar_is_ignored(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    path = await receive_in(store, CHUNK_BYTES)
    sidecar = crccache.sidecar_path(path)
    good = sidecar.read_bytes()
    for damaged in [good[:-1], good[:-4] + bytes(4), good[:10], b"", bytes(len(good))]:
        sidecar.write_bytes(damaged)
        assert crccache.load(path, path.stat(), CHUNK_BYTES) is None
        sidecar.write_bytes(damaged)  # reading would repair it: damage it again each time
        chunks = await read_all(store)
        assert_true_crcs(chunks)
    assert crccache.load(path, path.stat(), CHUNK_BYTES // 2) is None, "another chunk size"


async def test_an_imported_blob_gets_its_sidecar_on_its_first_full_read(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    await store.put_bytes(DATA)
    path = await store.path(SHA)
    assert not crccache.sidecar_path(path).exists()
    # A read from an unaligned offset neither uses nor writes one.
    assert_true_crcs(await read_all(store, offset=MiB + 5))
    assert not crccache.sidecar_path(path).exists()
    assert_true_crcs(await read_all(store))
    table = crccache.load(path, path.stat(), CHUNK_BYTES)
    assert table is not None
    assert list(table) == TRUE_CRCS
    # A read from an aligned offset uses it.
    assert_true_crcs(await read_all(store, offset=2 * CHUNK_BYTES))


async def test_a_resumed_blob_is_published_without_a_sidecar(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    async with store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[:MiB], zlib.crc32(DATA[:MiB]))
    async with store.receive(SHA, len(DATA), offset=MiB) as writer:
        await writer.append(DATA[MiB:], zlib.crc32(DATA[MiB:]))
        path = await writer.finish()
    assert not crccache.sidecar_path(path).exists()
    assert_true_crcs(await read_all(store))


async def test_delete_removes_the_sidecar_and_a_restart_does_not_count_it(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "blobs")
    path = await receive_in(store, CHUNK_BYTES)
    reopened = make_store(tmp_path / "blobs")
    assert (await reopened.usage()).complete_bytes == len(DATA)
    assert await reopened.delete(SHA)
    assert not path.exists()
    assert not crccache.sidecar_path(path).exists()


def test_block_crcs_of_uneven_pieces() -> None:
    blocks = crccache.BlockCrcs(1000)
    data = os.urandom(4321)
    for start, end in [(0, 10), (10, 1000), (1000, 2500), (2500, 2500), (2500, 4321)]:
        blocks.add(memoryview(data)[start:end])
    assert list(blocks.finish()) == [zlib.crc32(data[i : i + 1000]) for i in range(0, 4321, 1000)]
