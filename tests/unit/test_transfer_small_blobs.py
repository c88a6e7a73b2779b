"""Blobs of one chunk or less: received and served without threads of their own and without a
CRC sidecar, with the same results and refusals as longer blobs."""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from pathlib import Path

import pytest

from daemon.transfer import crccache, wire
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import CHUNK_BYTES
from daemon.transfer.errors import ContentMismatchError, CorruptChunkError
from daemon.transfer.writer import Outcome
from tests.blob_files import files_under

MiB = 1 << 20
SMALL = os.urandom(5000)
SMALL_SHA = hashlib.sha256(SMALL).hexdigest()
ONE_CHUNK = os.urandom(CHUNK_BYTES)
ONE_CHUNK_SHA = hashlib.sha256(ONE_CHUNK).hexdigest()


def make_store(root: Path) -> BlobStore:
    return BlobStore(root, max_blob_bytes=64 * MiB, quota_bytes=256 * MiB)


async def receive(
    store: BlobStore,
    sha256: str,
    size: int,
    chunks: list[tuple[bytes, int | None]],
    *,
    offset: int = 0,
) -> Path:
    """Writes `chunks` (data, crc32 or None) through a writer from `offset`, then finishes."""
    async with store.receive(sha256, size, offset=offset) as writer:
        for data, crc32 in chunks:
            await writer.append(data, crc32)
        return await writer.finish()


def transfer_threads() -> list[str]:
    names = ("blob-write", "blob-hash", "blob-read")
    return [t.name for t in threading.enumerate() if t.name.startswith(names)]


@pytest.mark.parametrize("data", [SMALL, ONE_CHUNK, b""], ids=["small", "one-chunk", "empty"])
async def test_a_blob_of_one_chunk_is_received_without_threads_or_sidecar(
    tmp_path: Path, data: bytes
) -> None:
    sha = hashlib.sha256(data).hexdigest()
    store = make_store(tmp_path)
    before = transfer_threads()
    async with store.receive(sha, len(data)) as writer:
        await writer.append(data, zlib.crc32(data))
        assert transfer_threads() == before
        assert not await store.has(sha), "not visible before finish()"
        path = await writer.finish()
    assert writer.outcome is Outcome.COMPLETE
    assert path.read_bytes() == data
    assert not crccache.sidecar_path(path).exists()
    assert files_under(tmp_path / "partial") == []
    assert (await store.usage()).complete_bytes == len(data)


async def test_a_blob_of_one_chunk_may_come_in_pieces(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    async with store.receive(SMALL_SHA, len(SMALL)) as writer:
        for start in range(0, len(SMALL), 1234):
            piece = SMALL[start : start + 1234]
            await writer.append(memoryview(piece), zlib.crc32(piece))
        path = await writer.finish()
    assert path.read_bytes() == SMALL


async def test_a_bad_crc_in_a_small_blob_writes_nothing_from_that_piece_on(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    first, second = SMALL[:3000], SMALL[3000:]
    chunks: list[tuple[bytes, int | None]] = [
        (first, zlib.crc32(first)),
        (second, zlib.crc32(second) ^ 1),
    ]
    with pytest.raises(CorruptChunkError, match="fails its CRC-32 check"):
        await receive(store, SMALL_SHA, len(SMALL), chunks)
    assert not await store.has(SMALL_SHA)
    assert await store.partial_size(SMALL_SHA) == len(first)
    assert (tmp_path / "partial" / SMALL_SHA).read_bytes() == first


async def test_a_small_blob_with_the_wrong_sha256_is_discarded(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ContentMismatchError, match="discarded"):
        await receive(store, other, len(SMALL), [(SMALL, None)])
    assert files_under(tmp_path) == []


async def test_a_small_blob_left_unfinished_keeps_what_came_and_resumes(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    async with store.receive(SMALL_SHA, len(SMALL)) as writer:
        await writer.append(SMALL[:2000])
        assert await store.partial_size(SMALL_SHA) == 0, "nothing is in the file yet"
    assert await store.partial_size(SMALL_SHA) == 2000
    with pytest.raises(ContentMismatchError, match="received 3000 of its 5000 bytes"):
        await receive(store, SMALL_SHA, len(SMALL), [(SMALL[2000:3000], None)], offset=2000)
    assert await store.partial_size(SMALL_SHA) == 3000
    path = await receive(store, SMALL_SHA, len(SMALL), [(SMALL[3000:], None)], offset=3000)
    assert path.read_bytes() == SMALL
    assert files_under(tmp_path / "partial") == []


async def test_the_last_chunk_of_a_resumed_blob_takes_the_same_path(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_BYTES + 100)
    sha = hashlib.sha256(data).hexdigest()
    store = make_store(tmp_path)
    async with store.receive(sha, len(data)) as writer:
        await writer.append(data[:CHUNK_BYTES])
    async with store.receive(sha, len(data), offset=CHUNK_BYTES) as writer:
        await writer.append(data[CHUNK_BYTES:])
        path = await writer.finish()
    assert path.read_bytes() == data


@pytest.mark.parametrize("data", [SMALL, ONE_CHUNK], ids=["small", "one-chunk"])
async def test_a_blob_of_one_chunk_is_served_without_a_thread(tmp_path: Path, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    store = make_store(tmp_path)
    await store.put_bytes(data)
    before = transfer_threads()
    chunks = []
    async for chunk in store.read_chunks(sha):
        assert transfer_threads() == before
        chunks.append(chunk)
    assert [(c.offset, c.data, c.crc32) for c in chunks] == [(0, data, zlib.crc32(data))]
    messages = [wire.parse_chunk(m) async for m in store.read_messages(sha, offset=7)]
    assert [(m.offset, bytes(m.data), m.crc32) for m in messages] == [
        (7, data[7:], zlib.crc32(data[7:]))
    ]
    assert [c async for c in store.read_chunks(sha, offset=len(data))] == []
    assert not crccache.sidecar_path(await store.path(sha)).exists()


async def test_the_tail_of_a_longer_blob_is_served_in_one_read(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_BYTES + 10)
    sha = hashlib.sha256(data).hexdigest()
    store = make_store(tmp_path)
    await store.put_bytes(data)
    start = 2 * CHUNK_BYTES + 20  # one chunk and less to go
    tail = [c async for c in store.read_chunks(sha, offset=start)]
    assert [(c.offset, c.data, c.crc32) for c in tail] == [
        (start, data[start:], zlib.crc32(data[start:]))
    ]
    whole = [c async for c in store.read_chunks(sha)]
    assert b"".join(c.data for c in whole) == data
    assert all(c.crc32 == zlib.crc32(c.data) for c in whole)
