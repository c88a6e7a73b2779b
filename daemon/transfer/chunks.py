"""Reading a file as checksummed chunks, a few chunks ahead of the consumer.

The read and the CRC-32 run together on a thread (both release the GIL), so the event loop
only hands chunks on; reading ahead keeps the disk busy while the network sends.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from daemon.transfer import wire
from daemon.transfer.crc import crc32
from daemon.transfer.errors import OffsetMismatchError

# 1 MiB: 64 KiB chunks were 40-60% slower over gRPC (DESIGN.md), and the peer's 16 MiB
# message limit leaves plenty of room.
CHUNK_BYTES = 1 << 20
# Chunks read before the consumer asks for them; bounds memory to (1 + AHEAD) chunks.
READ_AHEAD = 2


@dataclass(frozen=True, slots=True)
class ChunkData:
    offset: int
    data: bytes
    crc32: int


def _read_chunk(fd: int, offset: int, length: int) -> ChunkData:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"file shrank while being read (got {len(data)} of {length} bytes)")
    return ChunkData(offset, data, crc32(data))


async def read_chunks(
    path: Path, *, offset: int = 0, size: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> AsyncGenerator[ChunkData, None]:
    """Chunks of `path` from `offset` to its end. `size`, when given, must be the file's size.

    Raises FileNotFoundError if there is no such file, OffsetMismatchError if `offset` lies
    past its end.
    """
    loop = asyncio.get_running_loop()
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    pending: deque[asyncio.Future[ChunkData]] = deque()
    try:
        actual = (await asyncio.to_thread(os.fstat, fd)).st_size
        _check_span(path, actual, offset, size)
        next_offset = offset
        while pending or next_offset < actual:
            while len(pending) <= READ_AHEAD and next_offset < actual:
                length = min(chunk_bytes, actual - next_offset)
                pending.append(loop.run_in_executor(None, _read_chunk, fd, next_offset, length))
                next_offset += length
            yield await pending.popleft()
    finally:
        # Reads still in flight use the fd: close it only once they are done, even when the
        # consumer stopped early or was cancelled.
        if pending:
            done = asyncio.gather(*pending, return_exceptions=True)
            done.add_done_callback(lambda _: os.close(fd))
        else:
            os.close(fd)


def _check_span(path: Path, actual: int, offset: int, size: int | None) -> None:
    if size is not None and actual != size:
        raise OffsetMismatchError(f"{path.name} holds {actual} bytes, not the {size} expected")
    if not 0 <= offset <= actual:
        raise OffsetMismatchError(
            f"offset {offset} is outside {path.name}, which holds {actual} bytes"
        )


def _read_encoded(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"file shrank while being read (got {len(data)} of {length} bytes)")
    return wire.encode_upload_chunk(offset, data, crc32(data))


def encoded_chunks(
    path: Path, *, offset: int = 0, size: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """`read_chunks` for a blocking sender: each chunk as a serialised UploadMessage, read
    and checksummed READ_AHEAD chunks ahead on a thread of its own. Same errors."""
    fd = os.open(path, os.O_RDONLY)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-read")
    pending: deque[Future[bytes]] = deque()
    try:
        actual = os.fstat(fd).st_size
        _check_span(path, actual, offset, size)
        next_offset = offset
        while pending or next_offset < actual:
            while len(pending) <= READ_AHEAD and next_offset < actual:
                length = min(chunk_bytes, actual - next_offset)
                pending.append(reader.submit(_read_encoded, fd, next_offset, length))
                next_offset += length
            yield pending.popleft().result()
    finally:
        for job in pending:
            job.cancel()
        reader.shutdown(wait=True)  # the reads still running use the fd
        os.close(fd)
