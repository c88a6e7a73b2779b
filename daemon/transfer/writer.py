"""Receiving one blob: chunks checked, written and hashed off the event loop, in order.

Two threads per writer, since both jobs release the GIL and neither waits for the other:
one checks each chunk's CRC-32 and writes it (so nothing after a bad chunk reaches the
file), the other feeds the sha256. The event loop only queues work, a few chunks ahead.

A blob that fits in one chunk (most of a real workload's files) gets no threads of its own:
its data is kept until `finish` (or `close`), which checks, writes, hashes and publishes it
in one trip to the default executor. Two thread starts and a dozen handovers per blob cost
more than the work itself there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import TypeVar

from daemon.transfer import crc, crccache
from daemon.transfer.chunks import CHUNK_BYTES
from daemon.transfer.errors import (
    ContentMismatchError,
    CorruptChunkError,
    OffsetMismatchError,
    TransferError,
)
from daemon.transfer.sink import FileSink

T = TypeVar("T")

# Chunks accepted before `append` waits for the threads: bounds a writer's memory to a few
# MiB while letting receiving, writing and hashing overlap.
MAX_IN_FLIGHT = 4


class Outcome(Enum):
    """How a writer ended."""

    PARTIAL = "partial"  # kept to resume later
    COMPLETE = "complete"
    DISCARDED = "discarded"


async def await_even_if_cancelled(future: asyncio.Future[T]) -> T:
    """Waits for work on a thread to end even when our task is cancelled meanwhile: the file
    it touches must not be handed to anyone else before then."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


def _short(sha256: str) -> str:
    return sha256[:12]


class BlobWriter:
    """Receives one blob in order. Get one from `BlobStore.receive`.

    `append` queues a chunk and returns at once unless MAX_IN_FLIGHT chunks are waiting; a
    failure (bad CRC, disk error) comes out of a later `append` or of `finish`.
    """

    def __init__(
        self,
        sha256: str,
        size: int,
        offset: int,
        sink: FileSink,
        partial: Path,
        target: Path,
        publish: Callable[[Path, Path], bool],
        charge: Callable[[int], None] | None = None,
    ) -> None:
        self.sha256 = sha256
        # Called with each chunk's size before it is taken: raises when it does not fit.
        self._charge = charge
        self.size = size
        self.offset = offset
        self._sink = sink
        self._partial = partial
        self._target = target
        # Renames the verified partial into place (False if the blob was there already).
        self._publish = publish
        self._received = offset
        # Bytes in the file (or staged for it); only the write thread changes it.
        self.written = offset
        self._hasher = hashlib.sha256()
        # The sidecar of CRCs published with the blob (a resumed blob gets one when first
        # served: the CRCs of the part held before are not known here). A blob of one chunk
        # has none: computing its CRC costs less than another file.
        self._blocks = (
            crccache.BlockCrcs(CHUNK_BYTES) if offset == 0 and size > CHUNK_BYTES else None
        )
        self._failure: BaseException | None = None
        self._outcome = Outcome.PARTIAL
        self._closed = False
        # At most one chunk to come: no threads, the data waits here (see the module doc).
        self._staged: list[tuple[bytes | memoryview, int | None]] | None = None
        self._pending: deque[Future[None]] = deque()
        self._write_thread: ThreadPoolExecutor | None = None
        self._hash_thread: ThreadPoolExecutor | None = None
        if size - offset <= CHUNK_BYTES:
            self._staged = []
            return
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-write")
        self._hash_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-hash")
        if offset:
            self._pending.append(self._hash_thread.submit(self._hash_held_part))

    @property
    def received(self) -> int:
        """Where the next chunk must start: bytes held before plus bytes accepted since."""
        return self._received

    @property
    def outcome(self) -> Outcome:
        return self._outcome

    async def append(self, data: bytes | memoryview, crc32: int | None = None) -> None:
        """Queues `data` to be written at `received`; with `crc32`, it is checked first."""
        self._queue(data, crc32)
        while len(self._pending) > 2 * MAX_IN_FLIGHT:
            await asyncio.wrap_future(self._pending.popleft())

    def append_blocking(self, data: bytes | memoryview, crc32: int | None = None) -> None:
        """`append` for a loop on a worker thread (never the event loop's): waits for the
        threads by blocking. One thread appends at a time, and the event loop leaves the
        writer alone meanwhile (it awaits that thread)."""
        self._queue(data, crc32)
        while len(self._pending) > 2 * MAX_IN_FLIGHT:
            self._pending.popleft().result()

    def _queue(self, data: bytes | memoryview, crc32: int | None) -> None:
        if self._closed or self._outcome is not Outcome.PARTIAL:
            raise RuntimeError("append() on a finished or closed BlobWriter")
        if self._received + len(data) > self.size:
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: data runs past its declared size of "
                f"{self.size} bytes (chunk at {self._received}, {len(data)} bytes)"
            )
        if self._charge is not None:
            self._charge(len(data))
        self._received += len(data)
        if self._staged is not None:
            self._staged.append((data, crc32))
            return
        assert self._write_thread is not None
        assert self._hash_thread is not None
        self._pending.append(self._write_thread.submit(self._write, data, crc32))
        self._pending.append(self._hash_thread.submit(self._hasher.update, data))

    async def finish(self) -> Path:
        """Verifies size and sha256, then makes the blob visible and returns its path.

        A short blob stays partial (to resume); a wrong one is discarded. Either raises
        ContentMismatchError.
        """
        loop = asyncio.get_running_loop()
        if self._staged is not None:
            staged, self._staged = self._staged, []
            return await await_even_if_cancelled(
                loop.run_in_executor(None, self._finish_staged, staged)
            )
        assert self._write_thread is not None
        while self._pending:
            await asyncio.wrap_future(self._pending.popleft())
        self._check_complete()
        return await await_even_if_cancelled(loop.run_in_executor(self._write_thread, self._commit))

    def _check_complete(self) -> None:
        if self._received != self.size:
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: received {self._received} of its "
                f"{self.size} bytes; the part held is kept to resume"
            )

    async def close(self) -> None:
        """Ends the writer; unless finished, what was written stays as the partial."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._staged is not None:
            staged, self._staged = self._staged, []
            if self._outcome is not Outcome.PARTIAL:
                return  # finished: the commit closed the file
            # Data staged and never finished is written as the partial, as it would have
            # been by the write thread (unless it fails its CRC).
            await await_even_if_cancelled(loop.run_in_executor(None, self._close_staged, staged))
            return
        assert self._write_thread is not None
        assert self._hash_thread is not None
        # After the writes still queued (one thread, in order). Their errors were or will be
        # reported through append/finish, or do not matter any more.
        closing = loop.run_in_executor(self._write_thread, self._close_file)
        for executor in (self._write_thread, self._hash_thread):
            executor.shutdown(wait=False)
        self._pending.clear()
        await await_even_if_cancelled(closing)

    # --- on the threads ---------------------------------------------------------------------

    def _finish_staged(self, staged: list[tuple[bytes | memoryview, int | None]]) -> Path:
        """`finish` for a blob of one chunk, on a thread: what the two threads would do, in
        the same order, then the commit."""
        if self.offset:
            self._hash_held_part()
        for data, crc32 in staged:
            self._write(data, crc32)
            self._hasher.update(data)
        self._check_complete()
        return self._commit()

    def _close_staged(self, staged: list[tuple[bytes | memoryview, int | None]]) -> None:
        try:
            for data, crc32 in staged:
                self._write(data, crc32)
        except TransferError:
            pass  # reported by finish, or nobody asks any more: the file keeps the rest
        self._close_file()

    def _hash_held_part(self) -> None:
        """A resumed writer hashes what is held already: hash states cannot be saved."""
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        # Its own descriptor: the write thread may close the sink's meanwhile.
        fd = os.open(self._partial, os.O_RDONLY)
        try:
            position = 0
            while position < self.offset:
                wanted = min(CHUNK_BYTES, self.offset - position)
                count = os.preadv(fd, [view[:wanted]], position)
                if count == 0:
                    raise OffsetMismatchError(
                        f"blob {_short(self.sha256)}: the held part shrank while resuming"
                    )
                self._hasher.update(view[:count])
                position += count
        finally:
            os.close(fd)

    def _write(self, data: bytes | memoryview, crc32: int | None) -> None:
        if self._failure is not None:
            raise self._failure
        if crc32 is not None and crc.crc32(data) != crc32:
            self._failure = CorruptChunkError(
                f"blob {_short(self.sha256)}: the chunk at offset {self.written} "
                f"({len(data)} bytes) fails its CRC-32 check; nothing from it was written"
            )
            raise self._failure
        try:
            self._sink.write(data)
            if self._blocks is not None:
                self._blocks.add(data, crc32)
        except OSError as error:
            self._failure = TransferError(
                f"blob {_short(self.sha256)}: cannot write {self._partial} ({error.strerror})"
            )
            raise self._failure from error
        self.written = self._sink.position

    def _commit(self) -> Path:
        if self._failure is not None:
            raise self._failure
        try:
            self.written = self._sink.close()
        except OSError as error:
            raise TransferError(
                f"blob {_short(self.sha256)}: cannot write {self._partial} ({error.strerror})"
            ) from error
        digest = self._hasher.hexdigest()
        if digest != self.sha256:
            self._partial.unlink(missing_ok=True)
            self.written = 0
            self._outcome = Outcome.DISCARDED
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: the {self.size} bytes received hash to "
                f"{digest}, not to the blob's id; discarded"
            )
        published = self._publish(self._partial, self._target)
        self._outcome = Outcome.COMPLETE
        if published and self._blocks is not None:
            crccache.write(self._target, self._blocks.finish(), CHUNK_BYTES)
        return self._target

    def _close_file(self) -> None:
        if self._outcome is not Outcome.PARTIAL:
            return
        try:
            self.written = self._sink.close()
        except OSError:
            self.written = self._sink.position  # what did reach the file
        if self.written == 0:
            self._partial.unlink(missing_ok=True)
