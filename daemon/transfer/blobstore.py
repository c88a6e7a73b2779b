"""A content-addressed blob store on disk: a blob's name is the sha256 of its bytes.

    root/complete/ab/abcdef...   verified blobs, the only ones anybody is given
    root/partial/abcdef...       blobs being received, kept across restarts to resume
    root/partial/.import-...     local files being copied in (removed at start-up)

A blob enters complete/ only by an atomic rename after its size and sha256 matched and the
file was fsynced, so a reader never sees half a blob or a wrong one. Ids are checked before
any path is built from them. The event loop never waits on the disk: file work runs on
threads, and a writer owns one thread so its chunks land in order while the loop receives
the next ones.

One BlobStore per root: it keeps the byte counts the quota is checked against in memory
(counted once, on first use), and it is the only writer of its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

from daemon.errors import NotFoundError
from daemon.transfer.blobid import check_blob_id, is_blob_id
from daemon.transfer.chunks import CHUNK_BYTES, ChunkData, read_chunks
from daemon.transfer.errors import (
    BlobExistsError,
    BlobTooLargeError,
    ContentMismatchError,
    CorruptChunkError,
    OffsetMismatchError,
    QuotaExceededError,
    TransferError,
)

T = TypeVar("T")

# Chunks a writer accepts before the caller waits for the disk: bounds a writer's memory to
# a few MiB while letting receiving and writing overlap.
MAX_IN_FLIGHT = 4
IMPORT_PREFIX = ".import-"


def _short(sha256: str) -> str:
    return sha256[:12]


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


@dataclass(frozen=True)
class StoreUsage:
    complete_bytes: int
    partial_bytes: int
    quota_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.complete_bytes + self.partial_bytes


@dataclass(frozen=True)
class _Scan:
    complete_bytes: int
    partial_sizes: dict[str, int]


class Outcome(Enum):
    """How a writer ended."""

    PARTIAL = "partial"  # kept to resume later
    COMPLETE = "complete"
    DISCARDED = "discarded"


async def _await_even_if_cancelled(future: asyncio.Future[T]) -> T:
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(source: Path, target: Path) -> bool:
    """Renames a verified, fsynced file into place; False if the blob was there already."""
    if target.exists():
        source.unlink()
        return False
    target.parent.mkdir(exist_ok=True)
    os.replace(source, target)
    _fsync_dir(target.parent)
    return True


class BlobWriter:
    """Receives one blob in order. Get one from `BlobStore.receive`.

    `append` queues a chunk for the writer's own thread and returns at once unless
    MAX_IN_FLIGHT chunks are waiting; a failure (bad CRC, disk error) comes out of a later
    `append` or of `finish`, and nothing after the failed chunk is written.
    """

    def __init__(
        self, sha256: str, size: int, offset: int, fd: int, partial: Path, target: Path
    ) -> None:
        self.sha256 = sha256
        self.size = size
        self.offset = offset
        self._fd = fd
        self._partial = partial
        self._target = target
        self._received = offset
        # Bytes on disk; only the writer thread changes it.
        self.written = offset
        self._hasher = hashlib.sha256()
        self._failure: BaseException | None = None
        self._pending: deque[asyncio.Future[None]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-writer")
        self._outcome = Outcome.PARTIAL
        self._closed = False
        if offset:
            self._submit(self._hash_held_part)

    @property
    def received(self) -> int:
        """Where the next chunk must start: bytes held before plus bytes accepted since."""
        return self._received

    @property
    def outcome(self) -> Outcome:
        return self._outcome

    async def append(self, data: bytes, crc32: int | None = None) -> None:
        """Queues `data` to be written at `received`; with `crc32`, it is checked first."""
        if self._closed or self._outcome is not Outcome.PARTIAL:
            raise RuntimeError("append() on a finished or closed BlobWriter")
        if self._received + len(data) > self.size:
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: data runs past its declared size of "
                f"{self.size} bytes (chunk at {self._received}, {len(data)} bytes)"
            )
        self._received += len(data)
        self._submit(self._write, data, crc32)
        while len(self._pending) > MAX_IN_FLIGHT:
            await self._pending.popleft()

    async def finish(self) -> Path:
        """Verifies size and sha256, then makes the blob visible and returns its path.

        A short blob stays partial (to resume); a wrong one is discarded. Either raises
        ContentMismatchError.
        """
        while self._pending:
            await self._pending.popleft()
        if self._received != self.size:
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: received {self._received} of its "
                f"{self.size} bytes; the part held is kept to resume"
            )
        loop = asyncio.get_running_loop()
        return await _await_even_if_cancelled(loop.run_in_executor(self._executor, self._commit))

    async def close(self) -> None:
        """Ends the writer; unless finished, what was written stays as the partial."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._executor, self._close_file)
        self._executor.shutdown(wait=False)
        # Queued writes come first (one thread, in order); their errors were or will be
        # reported through append/finish, or do not matter any more.
        for job in self._pending:
            job.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.clear()
        await _await_even_if_cancelled(closing)

    def _submit(self, work: Callable[..., None], *args: object) -> None:
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._executor, work, *args))

    # --- on the writer's thread -------------------------------------------------------------

    def _hash_held_part(self) -> None:
        """A resumed writer has to hash what it holds already: hash states are not saved."""
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        position = 0
        while position < self.offset:
            count = os.preadv(
                self._fd, [view[: min(CHUNK_BYTES, self.offset - position)]], position
            )
            if count == 0:
                self._failure = OffsetMismatchError(
                    f"blob {_short(self.sha256)}: the held part shrank while resuming"
                )
                raise self._failure
            self._hasher.update(view[:count])
            position += count

    def _write(self, data: bytes, crc32: int | None) -> None:
        if self._failure is not None:
            raise self._failure
        if crc32 is not None and zlib.crc32(data) != crc32:
            self._failure = CorruptChunkError(
                f"blob {_short(self.sha256)}: the chunk at offset {self.written} "
                f"({len(data)} bytes) fails its CRC-32 check; nothing from it was written"
            )
            raise self._failure
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as error:
            self._failure = TransferError(
                f"blob {_short(self.sha256)}: cannot write {self._partial} ({error.strerror})"
            )
            raise self._failure from error
        self._hasher.update(data)
        self.written += len(data)

    def _commit(self) -> Path:
        if self._failure is not None:
            raise self._failure
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        digest = self._hasher.hexdigest()
        if digest != self.sha256:
            self._partial.unlink(missing_ok=True)
            self.written = 0
            self._outcome = Outcome.DISCARDED
            raise ContentMismatchError(
                f"blob {_short(self.sha256)}: the {self.size} bytes received hash to "
                f"{digest}, not to the blob's id; discarded"
            )
        _publish(self._partial, self._target)
        self._outcome = Outcome.COMPLETE
        return self._target

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._outcome is Outcome.PARTIAL and self.written == 0:
            self._partial.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path, *, max_blob_bytes: int, quota_bytes: int) -> None:
        if max_blob_bytes <= 0 or quota_bytes <= 0:
            raise ValueError("max_blob_bytes and quota_bytes must be positive")
        self.root = root
        self.max_blob_bytes = max_blob_bytes
        self.quota_bytes = quota_bytes
        self._complete_dir = root / "complete"
        self._partial_dir = root / "partial"
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._complete_bytes = 0
        self._partial_sizes: dict[str, int] = {}
        # Bytes promised to writers and imports under way, charged in full against the quota.
        self._reserved: dict[str, int] = {}
        self._writers: dict[str, BlobWriter] = {}
        # One writer (or import) per blob at a time; later ones wait their turn.
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

    # --- paths: only ever built from checked ids ----------------------------------------------

    def _complete_path(self, sha256: str) -> Path:
        check_blob_id(sha256)
        return self._complete_dir / sha256[:2] / sha256

    def _partial_path(self, sha256: str) -> Path:
        check_blob_id(sha256)
        return self._partial_dir / sha256

    # --- reading ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Creates the directories and counts what is held; other calls do it when needed."""
        async with self._open_lock:
            if self._opened:
                return
            scan = await asyncio.to_thread(self._scan)
            self._complete_bytes = scan.complete_bytes
            self._partial_sizes = scan.partial_sizes
            self._opened = True

    def _scan(self) -> _Scan:
        self._complete_dir.mkdir(parents=True, exist_ok=True)
        self._partial_dir.mkdir(parents=True, exist_ok=True)
        complete = 0
        for shard in os.scandir(self._complete_dir):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    if is_blob_id(entry.name) and entry.is_file(follow_symlinks=False):
                        complete += entry.stat(follow_symlinks=False).st_size
        partial: dict[str, int] = {}
        for entry in os.scandir(self._partial_dir):
            if entry.name.startswith(IMPORT_PREFIX):
                os.unlink(entry.path)  # a copy-in cut short by a crash
            elif is_blob_id(entry.name) and entry.is_file(follow_symlinks=False):
                partial[entry.name] = entry.stat(follow_symlinks=False).st_size
        return _Scan(complete, partial)

    async def has(self, sha256: str) -> bool:
        """Whether the complete, verified blob is here."""
        path = self._complete_path(sha256)
        await self.open()
        return await asyncio.to_thread(path.is_file)

    async def size(self, sha256: str) -> int:
        path = self._complete_path(sha256)
        await self.open()
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NotFoundError(f"no blob {sha256} here") from None

    async def path(self, sha256: str) -> Path:
        """Where the complete blob is; NotFoundError if it is not (partials are never given)."""
        path = self._complete_path(sha256)
        await self.open()
        if not await asyncio.to_thread(path.is_file):
            raise NotFoundError(f"no blob {sha256} here")
        return path

    async def partial_size(self, sha256: str) -> int:
        """Bytes held of a blob not complete yet (0 if none): where a transfer resumes."""
        check_blob_id(sha256)
        await self.open()
        writer = self._writers.get(sha256)
        return writer.written if writer else self._partial_sizes.get(sha256, 0)

    async def usage(self) -> StoreUsage:
        await self.open()
        idle = sum(n for sha, n in self._partial_sizes.items() if sha not in self._writers)
        partial = idle + sum(writer.written for writer in self._writers.values())
        return StoreUsage(self._complete_bytes, partial, self.quota_bytes)

    async def read_chunks(self, sha256: str, offset: int = 0) -> AsyncIterator[ChunkData]:
        """The complete blob from `offset`, as checksummed chunks read ahead on threads."""
        path = self._complete_path(sha256)
        await self.open()
        async with contextlib.aclosing(read_chunks(path, offset=offset)) as chunks:
            try:
                async for chunk in chunks:
                    yield chunk
            except FileNotFoundError:
                raise NotFoundError(f"no blob {sha256} here") from None

    # --- writing ------------------------------------------------------------------------------

    def _check_size(self, what: str, size: int) -> None:
        if size < 0:
            raise ContentMismatchError(f"{what}: a size of {size} bytes is not a size")
        if size > self.max_blob_bytes:
            raise BlobTooLargeError(
                f"{what} is {_mib(size)}, over this node's limit of "
                f"{_mib(self.max_blob_bytes)} per blob"
            )

    def _reserve(self, key: str, what: str, size: int) -> None:
        """Charges `size` against the quota for `key`, or refuses. No await between the check
        and the charge, so two transfers cannot both take the last free bytes."""
        # The blob's own partial is part of `size`; other writers count at their full size.
        idle_partials = sum(
            count
            for sha, count in self._partial_sizes.items()
            if sha != key and sha not in self._reserved
        )
        others = self._complete_bytes + idle_partials + sum(self._reserved.values())
        if others + size > self.quota_bytes:
            raise QuotaExceededError(
                f"{what} ({_mib(size)}) does not fit: the store holds {_mib(others)} "
                f"of its {_mib(self.quota_bytes)} quota"
            )
        self._reserved[key] = size

    async def _lock(self, sha256: str) -> None:
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        self._lock_users[sha256] = self._lock_users.get(sha256, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._drop_lock_user(sha256)
            raise

    def _unlock(self, sha256: str) -> None:
        self._locks[sha256].release()
        self._drop_lock_user(sha256)

    def _drop_lock_user(self, sha256: str) -> None:
        self._lock_users[sha256] -= 1
        if not self._lock_users[sha256]:
            del self._lock_users[sha256], self._locks[sha256]

    @contextlib.asynccontextmanager
    async def receive(
        self, sha256: str, size: int, *, offset: int = 0
    ) -> AsyncIterator[BlobWriter]:
        """A writer for blob `sha256` of `size` bytes, starting at `offset`, which must be
        what `partial_size` reports. Waits while another writer holds the blob.

        Refuses before writing anything: InvalidBlobIdError, BlobTooLargeError,
        QuotaExceededError, OffsetMismatchError, or BlobExistsError when it is complete.
        Leaving the block without `finish()` keeps what was written, to resume.
        """
        what = f"blob {_short(check_blob_id(sha256))}"
        self._check_size(what, size)
        await self.open()
        await self._lock(sha256)
        try:
            if await self.has(sha256):
                await self._drop_partial(sha256)
                raise BlobExistsError(f"{what} is complete here already")
            held = self._partial_sizes.get(sha256, 0)
            if held > size:
                raise ContentMismatchError(
                    f"{what}: {held} bytes of it are held here, more than the declared "
                    f"{size}; the declared size is wrong"
                )
            if offset != held:
                raise OffsetMismatchError(
                    f"{what}: this node holds {held} bytes of it but the transfer starts at "
                    f"{offset}; ask Stat and resume from {held}"
                )
            self._reserve(sha256, what, size)
            try:
                writer = await self._open_writer(sha256, size, offset)
                self._writers[sha256] = writer
                try:
                    yield writer
                finally:
                    try:
                        await writer.close()
                    finally:
                        del self._writers[sha256]
                        self._settle(writer)
            finally:
                del self._reserved[sha256]
        finally:
            self._unlock(sha256)

    async def _open_writer(self, sha256: str, size: int, offset: int) -> BlobWriter:
        partial = self._partial_path(sha256)

        def open_partial() -> int:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            found = os.fstat(fd).st_size
            if found != offset:
                os.close(fd)
                raise OffsetMismatchError(
                    f"blob {_short(sha256)}: {found} bytes are held on disk, not {offset}; "
                    "ask Stat and resume from there"
                )
            return fd

        try:
            fd = await asyncio.to_thread(open_partial)
        except OffsetMismatchError:
            self._partial_sizes[sha256] = (await asyncio.to_thread(partial.stat)).st_size
            raise
        return BlobWriter(sha256, size, offset, fd, partial, self._complete_path(sha256))

    def _settle(self, writer: BlobWriter) -> None:
        if writer.outcome is Outcome.COMPLETE:
            self._complete_bytes += writer.size
        if writer.outcome is Outcome.PARTIAL and writer.written:
            self._partial_sizes[writer.sha256] = writer.written
        else:
            self._partial_sizes.pop(writer.sha256, None)

    async def put_file(self, source: Path) -> tuple[str, int]:
        """Copies a local file in, hashing it on the way; returns its (sha256, size)."""
        await self.open()
        size = (await asyncio.to_thread(source.stat)).st_size
        return await self._import(str(source), size, lambda out: _copy_file(source, out))

    async def put_bytes(self, data: bytes) -> tuple[str, int]:
        await self.open()
        return await self._import("data", len(data), lambda out: _write_bytes(data, out))

    async def _import(
        self, what: str, size: int, copy: Callable[[Path], tuple[str, int]]
    ) -> tuple[str, int]:
        self._check_size(what, size)
        key = f"{IMPORT_PREFIX}{uuid.uuid4().hex}"
        temporary = self._partial_dir / key
        self._reserve(key, what, size)
        try:
            sha256, copied = await asyncio.to_thread(copy, temporary)
            if copied != size:
                raise ContentMismatchError(f"{what} changed size while being copied in")
            await self._lock(sha256)
            try:
                target = self._complete_path(sha256)
                if await asyncio.to_thread(_publish, temporary, target):
                    self._complete_bytes += size
                await self._drop_partial(sha256)
            finally:
                self._unlock(sha256)
        except BaseException:
            await asyncio.to_thread(temporary.unlink, True)
            raise
        finally:
            del self._reserved[key]
        return sha256, size

    async def _drop_partial(self, sha256: str) -> None:
        """Removes a partial made useless by the complete blob; the caller holds its lock."""
        if self._partial_sizes.pop(sha256, None) is not None:
            await asyncio.to_thread(_remove, self._partial_path(sha256))

    async def delete(self, sha256: str) -> bool:
        """Removes the blob and any partial of it (waiting for a writer of it to end);
        False if neither was here."""
        target = self._complete_path(sha256)
        partial = self._partial_path(sha256)
        await self.open()
        await self._lock(sha256)
        try:
            removed_bytes = await asyncio.to_thread(_remove, target)
            if removed_bytes is not None:
                self._complete_bytes -= removed_bytes
            removed_partial = await asyncio.to_thread(_remove, partial)
            self._partial_sizes.pop(sha256, None)
        finally:
            self._unlock(sha256)
        return removed_bytes is not None or removed_partial is not None


def _remove(path: Path) -> int | None:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def _copy_file(source: Path, out: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    copied = 0
    with source.open("rb", buffering=0) as reader, out.open("xb", buffering=0) as writer:
        while count := reader.readinto(buffer):
            hasher.update(view[:count])
            written = 0
            while written < count:
                written += writer.write(view[written:count]) or 0
            copied += count
        os.fsync(writer.fileno())
    return hasher.hexdigest(), copied


def _write_bytes(data: bytes, out: Path) -> tuple[str, int]:
    with out.open("xb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)
