"""A content-addressed blob store on disk: a blob's name is the sha256 of its bytes.

    root/complete/ab/abcdef...   verified blobs, the only ones anybody is given
    root/partial/abcdef...       blobs being received, kept across restarts to resume
    root/partial/.import-...     local files being copied in (removed at start-up)
    root/synced-mark             how far blobs are known to be on stable storage

A blob enters complete/ only by an atomic rename after its size and sha256 matched, so a
reader never sees half a blob or a wrong one. It reaches stable storage moments later
(`make_durable` waits for that; durability.py says how a machine crash is survived). Ids
are checked before any path is built from them. The event loop never waits on the disk:
file work runs on threads (see writer.py for how a blob is received).

One BlobStore per root: it keeps the byte counts the quota is checked against in memory
(counted once, on first use), and it is the only writer of its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from daemon.errors import NotFoundError
from daemon.transfer import crccache
from daemon.transfer.blobid import check_blob_id, is_blob_id
from daemon.transfer.chunks import CHUNK_BYTES, ChunkData, read_chunks, read_messages
from daemon.transfer.durability import RecentBlob, WriteBehind
from daemon.transfer.errors import (
    BlobExistsError,
    BlobTooLargeError,
    ContentMismatchError,
    OffsetMismatchError,
    QuotaExceededError,
)
from daemon.transfer.hashing import sha256_file
from daemon.transfer.sink import FileSink
from daemon.transfer.writer import BlobWriter, Outcome

T = TypeVar("T")

IMPORT_PREFIX = ".import-"
SYNC_MARK = "synced-mark"


def _short(sha256: str) -> str:
    return sha256[:12]


def _modified_within(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


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
class HeldBlob:
    sha256: str
    size: int
    modified: float  # when it became complete here (seconds since the epoch)


@dataclass(frozen=True)
class _Scan:
    complete_bytes: int
    partial_sizes: dict[str, int]


class BlobStore:
    def __init__(self, root: Path, *, max_blob_bytes: int, quota_bytes: int) -> None:
        if max_blob_bytes <= 0 or quota_bytes <= 0:
            raise ValueError("max_blob_bytes and quota_bytes must be positive")
        self.root = root
        self.max_blob_bytes = max_blob_bytes
        self.quota_bytes = quota_bytes
        self._complete_dir = root / "complete"
        self._partial_dir = root / "partial"
        self._durability = WriteBehind(root / SYNC_MARK)
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
        mark = self._durability.mark()
        complete = 0
        recent: list[RecentBlob] = []
        for entry in self._complete_entries():
            info = entry.stat(follow_symlinks=False)
            complete += info.st_size
            if mark and info.st_ctime_ns >= mark.synced_before_ns:
                recent.append(RecentBlob(Path(entry.path), info.st_size))
        if mark is not None:  # else a new store, or one from before marks (all synced)
            for blob in self._durability.recover(mark, recent, _holds_its_name):
                complete -= blob.size
                crccache.remove(blob.path)
        self._durability.start()
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

    async def read_small(self, sha256s: Iterable[str]) -> dict[str, bytes]:
        """The bytes of each of these complete blobs that is here, all read on one thread:
        meant for small ones (inline files), whose count, not size, makes the cost."""
        paths = {sha256: self._complete_path(sha256) for sha256 in sha256s}
        await self.open()

        def read() -> dict[str, bytes]:
            found = {}
            for sha256, path in paths.items():
                with contextlib.suppress(FileNotFoundError):
                    found[sha256] = path.read_bytes()
            return found

        return await asyncio.to_thread(read)

    async def partial_size(self, sha256: str) -> int:
        """Bytes held of a blob not complete yet (0 if none): where a transfer resumes."""
        check_blob_id(sha256)
        await self.open()
        writer = self._writers.get(sha256)
        return writer.written if writer else self._partial_sizes.get(sha256, 0)

    async def held(self) -> list[HeldBlob]:
        """The complete blobs, those that arrived first first."""
        await self.open()
        return await asyncio.to_thread(self._list_complete)

    def _list_complete(self) -> list[HeldBlob]:
        found = []
        for entry in self._complete_entries():
            info = entry.stat(follow_symlinks=False)
            found.append(HeldBlob(entry.name, info.st_size, info.st_mtime))
        return sorted(found, key=lambda blob: (blob.modified, blob.sha256))

    def _complete_entries(self) -> Iterator[os.DirEntry[str]]:
        for shard in os.scandir(self._complete_dir):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    if is_blob_id(entry.name) and entry.is_file(follow_symlinks=False):
                        yield entry

    async def free_up(self, needed: int, victims: Iterable[str]) -> list[str]:
        """Makes `needed` more bytes fit under the quota: first by dropping partials no
        transfer is writing (broken transfers nobody resumed), then by deleting complete
        blobs in the order `victims` names them; returns the blobs deleted. It may not find
        enough: the transfer that follows is then refused with QuotaExceededError."""
        await self.open()
        idle = [sha for sha in self._partial_sizes if not self._busy(sha)]
        for sha256 in idle:
            if self._headroom() >= needed:
                return []
            await self._lock(sha256)  # waits out a transfer that took it up meanwhile
            try:
                await self._drop_partial(sha256)
            finally:
                self._unlock(sha256)
        deleted = []
        for sha256 in victims:
            if self._headroom() >= needed:
                break
            if await self.delete(sha256):
                deleted.append(sha256)
        return deleted

    async def expire_partials(self, idle_seconds: float) -> int:
        """Drops the partials nobody wrote to for `idle_seconds` (uploads abandoned half
        way); returns how many it dropped."""
        await self.open()
        now = time.time()
        dropped = 0
        for sha256 in [sha for sha in self._partial_sizes if not self._busy(sha)]:
            try:
                modified = (await asyncio.to_thread(self._partial_path(sha256).stat)).st_mtime
            except FileNotFoundError:
                continue
            if now - modified < idle_seconds:
                continue
            await self._lock(sha256)  # a writer holds it for as long as it writes
            try:
                # Again under the lock: a writer may have resumed it since we looked.
                path = self._partial_path(sha256)
                fresh = await asyncio.to_thread(_modified_within, path, now - idle_seconds)
                if sha256 in self._partial_sizes and not fresh:
                    await self._drop_partial(sha256)
                    dropped += 1
            finally:
                self._unlock(sha256)
        return dropped

    def _busy(self, sha256: str) -> bool:
        return sha256 in self._reserved or sha256 in self._writers

    def _headroom(self, besides: str = "") -> int:
        """Quota left, counting what is held, what writers and imports under way were
        promised (at their full size) and what unpromised writers received so far; a partial
        of `besides` is left out."""
        idle_partials = sum(
            count
            for sha, count in self._partial_sizes.items()
            if sha != besides and not self._busy(sha)
        )
        receiving = sum(
            writer.received
            for sha, writer in self._writers.items()
            if sha != besides and sha not in self._reserved
        )
        used = self._complete_bytes + idle_partials + receiving + sum(self._reserved.values())
        return self.quota_bytes - used

    def _charge_received(self, sha256: str, what: str) -> Callable[[int], None]:
        """For a writer charged by bytes received: refuses a chunk the quota has no room for."""

        def charge(count: int) -> None:
            if count > self._headroom():
                raise QuotaExceededError(
                    f"{what}: no room for {_mib(count)} more under this node's "
                    f"{_mib(self.quota_bytes)} quota"
                )

        return charge

    async def usage(self) -> StoreUsage:
        await self.open()
        idle = sum(n for sha, n in self._partial_sizes.items() if sha not in self._writers)
        partial = idle + sum(writer.written for writer in self._writers.values())
        return StoreUsage(self._complete_bytes, partial, self.quota_bytes)

    def read_chunks(self, sha256: str, offset: int = 0) -> AsyncIterator[ChunkData]:
        """The complete blob from `offset`, as checksummed chunks read ahead on threads."""
        return self._served(sha256, read_chunks, offset)

    def read_messages(self, sha256: str, offset: int = 0) -> AsyncIterator[bytes]:
        """`read_chunks` as a Download sends them: serialised Chunk messages, each built on
        the reading thread."""
        return self._served(sha256, read_messages, offset)

    async def _served(
        self,
        sha256: str,
        reader: Callable[..., AsyncGenerator[T, None]],
        offset: int,
    ) -> AsyncIterator[T]:
        path = self._complete_path(sha256)
        await self.open()
        items = reader(path, offset=offset, cached_crcs=True)
        async with contextlib.aclosing(items):
            try:
                async for item in items:
                    yield item
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
        # The blob's own partial is part of `size`.
        others = self.quota_bytes - self._headroom(key)
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
        self, sha256: str, size: int, *, offset: int = 0, reserve: bool = True
    ) -> AsyncIterator[BlobWriter]:
        """A writer for blob `sha256` of `size` bytes, starting at `offset`, which must be
        what `partial_size` reports. Waits while another writer holds the blob.

        Refuses before writing anything: InvalidBlobIdError, BlobTooLargeError,
        QuotaExceededError, OffsetMismatchError, or BlobExistsError when it is complete.
        Leaving the block without `finish()` keeps what was written, to resume.

        With `reserve`, the whole size is charged against the quota up front (this node's
        own downloads: planned, never cut off half-way); without, only the bytes received
        are, each chunk as it comes (uploads from peers: one that promises much and sends
        nothing holds nothing), and a chunk with no room left is refused.
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
            if reserve:
                self._reserve(sha256, what, size)
            elif size > self._headroom(sha256):
                raise QuotaExceededError(
                    f"{what} ({_mib(size)}) does not fit: {_mib(self._headroom())} of this "
                    f"node's {_mib(self.quota_bytes)} quota is left"
                )
            charge = None if reserve else self._charge_received(sha256, what)
            try:
                writer = await self._open_writer(sha256, size, offset, charge)
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
                self._reserved.pop(sha256, None)
        finally:
            self._unlock(sha256)

    async def _open_writer(
        self, sha256: str, size: int, offset: int, charge: Callable[[int], None] | None
    ) -> BlobWriter:
        partial = self._partial_path(sha256)
        try:
            sink = await asyncio.to_thread(FileSink, partial, offset)
        except OffsetMismatchError:
            # Our count was off (a file changed under us): believe the disk from now on.
            self._partial_sizes[sha256] = (await asyncio.to_thread(partial.stat)).st_size
            raise
        return BlobWriter(
            sha256,
            size,
            offset,
            sink,
            partial,
            self._complete_path(sha256),
            self._durability.publish,
            charge,
        )

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
                if await asyncio.to_thread(self._durability.publish, temporary, target):
                    self._complete_bytes += size
                await self._drop_partial(sha256)
            finally:
                self._unlock(sha256)
            # Whoever imports a file keeps no other copy it could fall back on.
            await self.make_durable([sha256])
        except BaseException:
            await asyncio.to_thread(temporary.unlink, True)
            raise
        finally:
            del self._reserved[key]
        return sha256, size

    async def make_durable(self, sha256s: list[str]) -> None:
        """Returns once these complete blobs are on stable storage (an OSError if one cannot
        get there). Call it before recording somewhere durable that a blob is held."""
        for sha256 in sha256s:
            sync = self._durability.pending(self._complete_path(sha256))
            if sync is not None:
                await asyncio.wrap_future(sync)

    async def close(self) -> None:
        """Waits until everything published is on stable storage."""
        await asyncio.to_thread(self._durability.close)

    async def _drop_partial(self, sha256: str) -> None:
        """Removes the partial of a blob (made useless by the complete one, or dropped to make
        room); the caller holds its lock."""
        if self._partial_sizes.pop(sha256, None) is not None:
            await asyncio.to_thread(_remove, self._partial_path(sha256))

    async def delete(self, sha256: str) -> bool:
        """Removes the blob and any partial of it (waiting for a writer of it to end);
        False if neither was here."""
        return bool(await self.delete_many([sha256]))

    async def delete_many(self, sha256s: Collection[str]) -> list[str]:
        """`delete` for many blobs, their files removed in one trip to a thread (a workflow
        leaves thousands); returns those that were here."""
        unique = list(dict.fromkeys(map(check_blob_id, sha256s)))  # a lock is taken once
        await self.open()
        locked: list[str] = []
        try:
            # Only here is more than one blob locked at a time, so this cannot deadlock.
            for sha256 in unique:
                await self._lock(sha256)
                locked.append(sha256)
            removed = await asyncio.to_thread(self._remove_files, locked)
        finally:
            for sha256 in locked:
                self._unlock(sha256)
        for sha256, complete_bytes in removed.items():
            self._complete_bytes -= complete_bytes
            self._partial_sizes.pop(sha256, None)
        return list(removed)

    def _remove_files(self, sha256s: list[str]) -> dict[str, int]:
        """On a thread: each blob's file, sidecar and partial; the bytes of complete blobs
        removed (0 for a partial alone), by sha256, for those that were here."""
        removed = {}
        for sha256 in sha256s:
            target = self._complete_path(sha256)
            complete_bytes = _remove(target)
            crccache.remove(target)
            partial = _remove(self._partial_path(sha256))
            if complete_bytes is not None or partial is not None:
                removed[sha256] = complete_bytes or 0
        return removed


def _remove(path: Path) -> int | None:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def _holds_its_name(path: Path) -> bool:
    """Whether a complete blob's bytes still hash to its name."""
    try:
        return sha256_file(path)[0] == path.name
    except OSError:
        return False


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
    return hasher.hexdigest(), copied


def _write_bytes(data: bytes, out: Path) -> tuple[str, int]:
    with out.open("xb") as writer:
        writer.write(data)
    return hashlib.sha256(data).hexdigest(), len(data)
