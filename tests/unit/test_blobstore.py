"""The content-addressed blob store on real files: what becomes visible, what is refused, and
that nothing is written for a refusal."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import zlib
from pathlib import Path

import pytest

from daemon.errors import NodeError, NotFoundError
from daemon.transfer import sink
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.errors import (
    BlobExistsError,
    BlobTooLargeError,
    ContentMismatchError,
    CorruptChunkError,
    InvalidBlobIdError,
    OffsetMismatchError,
    QuotaExceededError,
)
from tests.blob_files import files_under

MiB = 1 << 20
DATA = os.urandom(3 * MiB + 12345)
SHA = hashlib.sha256(DATA).hexdigest()

BAD_IDS = [
    "../../x",
    "",
    "x",
    SHA.upper(),
    SHA[:63],
    SHA + "0",
    SHA + "\n",
    "../" + SHA[3:],
    "g" * 64,
]


def make_store(root: Path, *, max_blob: int = 64 * MiB, quota: int = 256 * MiB) -> BlobStore:
    return BlobStore(root, max_blob_bytes=max_blob, quota_bytes=quota)


def pieces(data: bytes, size: int = MiB) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def receive(
    store: BlobStore,
    sha256: str,
    size: int,
    chunks: list[tuple[bytes, int | None]],
    *,
    finish: bool = True,
) -> None:
    """Writes `chunks` (data, crc32 or None) through a writer, then finishes it."""
    async with store.receive(sha256, size) as writer:
        for data, crc32 in chunks:
            await writer.append(data, crc32)
        if finish:
            await writer.finish()


async def test_put_bytes_makes_the_blob_visible_under_its_sha(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    assert await store.put_bytes(DATA) == (SHA, len(DATA))
    path = await store.path(SHA)
    assert path == tmp_path / "blobs" / "complete" / SHA[:2] / SHA
    assert path.read_bytes() == DATA
    assert await store.has(SHA)
    assert await store.size(SHA) == len(DATA)
    assert (await store.usage()).used_bytes == len(DATA)


async def test_put_file_copies_in_and_hashes_once(tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(DATA)
    store = make_store(tmp_path / "blobs")
    assert await store.put_file(source) == (SHA, len(DATA))
    assert await store.put_file(source) == (SHA, len(DATA)), "a second copy is a no-op"
    assert (await store.path(SHA)).read_bytes() == DATA
    assert source.exists(), "the source is copied, not moved"
    assert (await store.usage()).complete_bytes == len(DATA)
    assert files_under(tmp_path / "blobs" / "partial") == []


async def test_writer_verifies_then_renames_into_complete(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    async with store.receive(SHA, len(DATA)) as writer:
        for piece in pieces(DATA):
            await writer.append(piece, zlib.crc32(piece))
        assert not await store.has(SHA), "not visible before finish()"
        path = await writer.finish()
    assert path.read_bytes() == DATA
    assert files_under(tmp_path / "blobs" / "partial") == []
    assert await store.partial_size(SHA) == 0


async def test_writer_resumes_at_the_partial_size(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    parts = pieces(DATA)
    async with store.receive(SHA, len(DATA)) as writer:
        for piece in parts[:2]:
            await writer.append(piece)
    assert await store.partial_size(SHA) == 2 * MiB
    assert not await store.has(SHA)
    # A new store on the same root (a restart) finds the partial and resumes from it.
    store = make_store(tmp_path / "blobs")
    assert await store.partial_size(SHA) == 2 * MiB
    async with store.receive(SHA, len(DATA), offset=2 * MiB) as writer:
        for piece in parts[2:]:
            await writer.append(piece)
        await writer.finish()
    assert (await store.path(SHA)).read_bytes() == DATA


async def test_resume_at_another_offset_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    async with store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[:MiB])
    for offset in (0, MiB - 1, MiB + 1):
        with pytest.raises(OffsetMismatchError, match="holds 1048576 bytes"):
            async with store.receive(SHA, len(DATA), offset=offset):
                pass
    assert await store.partial_size(SHA) == MiB


async def test_bad_crc_writes_nothing_from_that_chunk_on(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    parts = pieces(DATA)
    chunks: list[tuple[bytes, int | None]] = [
        (parts[0], zlib.crc32(parts[0])),
        (parts[1], zlib.crc32(parts[1]) ^ 1),
        (parts[2], zlib.crc32(parts[2])),
    ]
    with pytest.raises(CorruptChunkError, match="CRC-32"):
        await receive(store, SHA, len(DATA), chunks)
    assert await store.partial_size(SHA) == MiB
    assert (tmp_path / "blobs" / "partial" / SHA).read_bytes() == parts[0]
    assert not await store.has(SHA)


async def test_wrong_sha256_is_discarded_and_never_visible(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ContentMismatchError, match="discarded"):
        await receive(store, other, len(DATA), [(DATA, None)])
    assert not await store.has(other)
    assert files_under(tmp_path / "blobs") == []
    assert (await store.usage()).used_bytes == 0


async def test_short_blob_stays_partial(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    with pytest.raises(ContentMismatchError, match="received 1048576 of"):
        await receive(store, SHA, len(DATA), [(DATA[:MiB], None)])
    assert await store.partial_size(SHA) == MiB
    assert not await store.has(SHA)


async def test_data_past_the_declared_size_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    with pytest.raises(ContentMismatchError, match="past its declared size"):
        await receive(store, SHA, MiB, [(DATA[:MiB], None), (b"x", None)], finish=False)
    assert await store.partial_size(SHA) == MiB


@pytest.mark.parametrize("blob_id", BAD_IDS)
async def test_invalid_ids_are_refused_before_any_file_is_touched(
    tmp_path: Path, blob_id: str
) -> None:
    root = tmp_path / "a" / "b" / "blobs"
    store = make_store(root)
    await store.open()
    # Where '../../x' would land from partial/ and from complete/<shard>/.
    decoys = [root.parent / "x", root.parent.parent / "x"]
    for decoy in decoys:
        decoy.write_bytes(b"keep me")
    calls = [
        store.has(blob_id),
        store.size(blob_id),
        store.path(blob_id),
        store.partial_size(blob_id),
        store.delete(blob_id),
    ]
    for call in calls:
        with pytest.raises(InvalidBlobIdError, match="not a blob id"):
            await call
    with pytest.raises(InvalidBlobIdError):
        async with store.receive(blob_id, 10):
            pass
    with pytest.raises(InvalidBlobIdError):
        async for _ in store.read_chunks(blob_id):
            pass
    assert all(d.read_bytes() == b"keep me" for d in decoys)
    assert files_under(root) == []


def test_invalid_id_is_a_value_error_and_a_node_error() -> None:
    assert issubclass(InvalidBlobIdError, ValueError)
    assert issubclass(InvalidBlobIdError, NodeError)


async def test_blob_over_the_size_limit_is_refused_before_writing(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs", max_blob=MiB)
    with pytest.raises(BlobTooLargeError, match="over this node's limit"):
        async with store.receive(SHA, len(DATA)):
            pass
    with pytest.raises(BlobTooLargeError):
        await store.put_bytes(DATA)
    assert files_under(tmp_path / "blobs") == []


async def test_quota_counts_held_blobs_and_writers_under_way(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs", quota=len(DATA) + 2 * MiB)
    await store.put_bytes(DATA)
    small = os.urandom(MiB)
    small_sha = hashlib.sha256(small).hexdigest()
    other = os.urandom(2 * MiB)
    other_sha = hashlib.sha256(other).hexdigest()
    async with store.receive(small_sha, MiB) as writer:
        # The running writer holds its full declared size, written or not.
        with pytest.raises(QuotaExceededError, match="does not fit"):
            async with store.receive(other_sha, 2 * MiB):
                pass
        await writer.append(small)
        await writer.finish()
    with pytest.raises(QuotaExceededError):
        await store.put_bytes(other)
    assert not await store.has(other_sha)
    assert (await store.usage()).used_bytes == len(DATA) + MiB
    await store.delete(small_sha)
    assert await store.put_bytes(other) == (other_sha, 2 * MiB)


async def test_an_upload_charged_as_received_holds_only_what_arrived(tmp_path: Path) -> None:
    """A peer that declares a blob as large as the quota and sends nothing holds nothing:
    another upload still fits. A chunk past what is left is refused when it comes."""
    store = make_store(tmp_path / "blobs", quota=4 * MiB)
    promised = hashlib.sha256(b"never sent").hexdigest()
    small = os.urandom(MiB)
    async with store.receive(promised, 4 * MiB, reserve=False) as idle:
        async with store.receive(hashlib.sha256(small).hexdigest(), MiB, reserve=False) as other:
            await other.append(small)
            await other.finish()
        big = os.urandom(4 * MiB)
        with pytest.raises(QuotaExceededError, match=r"3\.0 MiB of this node's 4\.0 MiB quota"):
            async with store.receive(hashlib.sha256(big).hexdigest(), 4 * MiB, reserve=False):
                pass  # refused at once: 4 MiB cannot fit beside the 1 MiB held
        await idle.append(os.urandom(2 * MiB))
        with pytest.raises(QuotaExceededError, match=r"no room for 2\.0 MiB more"):
            await idle.append(os.urandom(2 * MiB))
    assert (await store.usage()).used_bytes == 3 * MiB


async def test_abandoned_partials_expire_and_fresh_ones_stay(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    async with store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[:MiB])
    fresh = os.urandom(2 * MiB)
    fresh_sha = hashlib.sha256(fresh).hexdigest()
    async with store.receive(fresh_sha, len(fresh)) as writer:
        await writer.append(fresh[:MiB])
    abandoned = tmp_path / "blobs" / "partial" / SHA
    hour_ago = abandoned.stat().st_mtime - 3601
    os.utime(abandoned, (hour_ago, hour_ago))
    assert await store.expire_partials(3600) == 1
    assert await store.partial_size(SHA) == 0
    assert await store.partial_size(fresh_sha) == MiB
    assert not abandoned.exists()
    assert (await store.usage()).used_bytes == MiB


async def test_a_resumed_blob_is_charged_once(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs", quota=len(DATA))
    async with store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[: 2 * MiB])
    async with store.receive(SHA, len(DATA), offset=2 * MiB) as writer:
        await writer.append(DATA[2 * MiB :])
        await writer.finish()
    assert (await store.usage()).used_bytes == len(DATA)


async def test_second_writer_waits_then_finds_the_blob_complete(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    first_open = asyncio.Event()

    async def second() -> None:
        await first_open.wait()
        async with store.receive(SHA, len(DATA)):
            pass

    waiting = asyncio.create_task(second())
    async with store.receive(SHA, len(DATA)) as writer:
        first_open.set()
        await writer.append(DATA)
        await writer.finish()
    with pytest.raises(BlobExistsError):
        await waiting


async def test_delete_removes_blob_and_partial(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    await store.put_bytes(DATA)
    other = hashlib.sha256(b"other").hexdigest()
    async with store.receive(other, 5) as writer:
        await writer.append(b"oth")
    assert await store.delete(SHA)
    assert await store.delete(other)
    assert not await store.delete(SHA)
    assert files_under(tmp_path / "blobs") == []
    assert (await store.usage()).used_bytes == 0
    with pytest.raises(NotFoundError):
        await store.path(SHA)


async def test_delete_many_removes_what_is_here_and_names_it(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    kept = (await store.put_bytes(b"kept"))[0]
    gone = [(await store.put_bytes(bytes([n]) * 3000))[0] for n in range(3)]
    never_held = hashlib.sha256(b"never").hexdigest()
    removed = await store.delete_many([*gone, gone[0], never_held])  # a repeat is harmless
    assert removed == gone
    assert await store.has(kept)
    assert [await store.has(sha) for sha in gone] == [False] * 3
    assert (await store.usage()).complete_bytes == len(b"kept")
    with pytest.raises(InvalidBlobIdError):
        await store.delete_many(["../../x"])


async def test_unknown_blob_is_not_found(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    assert not await store.has(SHA)
    with pytest.raises(NotFoundError):
        await store.size(SHA)
    with pytest.raises(NotFoundError):
        async for _ in store.read_chunks(SHA):
            pass


async def test_read_chunks_from_an_offset_carry_their_crc(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    await store.put_bytes(DATA)
    chunks = [c async for c in store.read_chunks(SHA, offset=MiB + 5)]
    assert [c.offset for c in chunks] == [MiB + 5, 2 * MiB + 5, 3 * MiB + 5]
    assert b"".join(c.data for c in chunks) == DATA[MiB + 5 :]
    assert all(zlib.crc32(c.data) == c.crc32 for c in chunks)
    with pytest.raises(OffsetMismatchError):
        async for _ in store.read_chunks(SHA, offset=len(DATA) + 1):
            pass


async def test_restart_counts_usage_and_drops_unfinished_imports(tmp_path: Path) -> None:
    store = make_store(tmp_path / "blobs")
    await store.put_bytes(DATA)
    async with store.receive(hashlib.sha256(b"p").hexdigest(), 10) as writer:
        await writer.append(b"pp")
    leftover = tmp_path / "blobs" / "partial" / ".import-crashed"
    leftover.write_bytes(b"half a copy")
    usage = await make_store(tmp_path / "blobs").usage()
    assert (usage.complete_bytes, usage.partial_bytes) == (len(DATA), 2)
    assert not leftover.exists()


# --- the file sink under the writer ---------------------------------------------------------


def write_through_sinks(path: Path, data: bytes, cuts: list[int]) -> None:
    """Writes `data` in odd-sized pieces, closing and reopening the sink at each cut."""
    rng = random.Random(7)
    bounds = [0, *cuts, len(data)]
    for start, end in itertools.pairwise(bounds):
        out = sink.FileSink(path, start)
        position = start
        while position < end:
            step = min(end - position, rng.choice([1, 100, 4095, 4096, 5000, 40_000]))
            out.write(data[position : position + step])
            position += step
        assert out.position == end
        assert out.close() == end


def test_sink_writes_every_byte_in_place(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    write_through_sinks(tmp_path / "blob", data, [])
    assert (tmp_path / "blob").read_bytes() == data


def test_sink_resumes_at_unaligned_offsets(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    write_through_sinks(tmp_path / "blob", data, [5, 4096, 70_001, 70_002, 200_000])
    assert (tmp_path / "blob").read_bytes() == data


def test_sink_refuses_a_file_holding_another_count(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"12345")
    with pytest.raises(OffsetMismatchError, match="5 bytes are held"):
        sink.FileSink(tmp_path / "blob", 3)
