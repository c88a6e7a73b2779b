"""Write-behind durability for the blob store: a verified blob is published (renamed into
place) at once and reaches stable storage moments later, on a thread of its own.

Why not fsync before publishing: it tied every transfer to the disk's write speed (240-420
MiB/s measured here, below what a gRPC stream delivers on loopback, see BENCHMARKS.md),
while what fsync buys is not integrity. Every blob is checked against its sha256 before it
is published and again by whoever fetches it; fsync only decides whether a published blob
survives the machine itself going down. That promise is kept differently:

- `pending` gives a future that resolves once a published file is on stable storage.
  Whoever records a blob as held in a database that outlives a crash (the manager, for a
  task's outputs) waits for it first (`BlobStore.make_durable`).
- A watermark file says "every blob changed before this time is on stable storage"
  (blobs are fsynced in publish order; the mark trails the oldest one not yet synced).
- When a store opens, the blobs changed since the mark are fsynced if the machine has not
  rebooted since (the page cache still holds them), or hashed again after a reboot, and
  dropped if their bytes no longer match their name: all an OS crash can do is lose
  them, never make a wrong blob visible.

Other processes' crashes lose nothing: written pages belong to the kernel.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# File timestamps come from the kernel's coarse clock, which may lag time.time_ns() by a
# tick; the mark stays well behind what it vouches for.
MARGIN_NS = 2_000_000_000
# The mark costs two fsyncs; under a stream of small blobs it is moved at most this often.
MARK_INTERVAL_NS = 1_000_000_000
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str:
    """This boot's id; empty where the system does not say (then every open re-hashes)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Watermark:
    boot_id: str
    # Every blob whose ctime is before this is on stable storage.
    synced_before_ns: int

    def dump(self) -> str:
        return f"{self.boot_id} {self.synced_before_ns}\n"

    @classmethod
    def parse(cls, text: str) -> Watermark | None:
        boot_id, _, stamp = text.strip().partition(" ")
        try:
            return cls(boot_id, int(stamp))
        except ValueError:
            return None


def fsync_path(path: Path) -> None:
    """fsync of a file or directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_watermark(path: Path) -> Watermark | None:
    try:
        return Watermark.parse(path.read_text())
    except FileNotFoundError:
        return None


def write_watermark(path: Path, mark: Watermark) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as out:
        out.write(mark.dump())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


@dataclass(frozen=True)
class RecentBlob:
    """A blob changed after the mark, as the start-up scan found it."""

    path: Path
    size: int


@dataclass
class _Publication:
    target: Path
    started_ns: int
    new_directory: bool
    synced: Future[None]


def _directories_of(publication: _Publication) -> list[Path]:
    """The directories its rename changed: its shard, and the store's if the shard is new."""
    shard = publication.target.parent
    return [shard, shard.parent] if publication.new_directory else [shard]


class WriteBehind:
    """Publishes files by rename and syncs them afterwards, in order, on one thread.

    `publish` may be called from any thread. Syncs are batched: the thread takes every file
    published since its last round, fsyncs each, then each directory they went into once.
    """

    def __init__(self, mark_path: Path) -> None:
        self._mark_path = mark_path
        self._boot_id = current_boot_id()
        self._lock = threading.Lock()
        # Published and not yet on stable storage, oldest first (dicts keep order).
        self._unsynced: dict[Path, _Publication] = {}
        self._queue: list[_Publication] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-sync")
        self._marked_ns = 0

    # --- start-up ------------------------------------------------------------------------

    def mark(self) -> Watermark | None:
        """The mark left by the last run (None for a store that predates marks)."""
        return read_watermark(self._mark_path)

    def recover(
        self, mark: Watermark, recent: list[RecentBlob], verify: Callable[[Path], bool]
    ) -> list[RecentBlob]:
        """Makes the blobs changed after `mark` (the last run's) durable, or, after a reboot,
        checks each with `verify` and removes those that fail. Returns the removed ones."""
        rebooted = not self._boot_id or mark.boot_id != self._boot_id
        removed: list[RecentBlob] = []
        for blob in recent:
            if rebooted and not verify(blob.path):
                log.warning(
                    "blob %s was received just before the machine went down and did not "
                    "reach the disk whole; removed (it will be fetched again if needed)",
                    blob.path.name,
                )
                blob.path.unlink(missing_ok=True)
                removed.append(blob)
                continue
            fsync_path(blob.path)
        for directory in {blob.path.parent for blob in recent}:
            fsync_path(directory)
        return removed

    def start(self) -> None:
        """Sets a fresh mark before this run publishes anything."""
        self._write_mark(time.time_ns() - MARGIN_NS)

    # --- publishing ----------------------------------------------------------------------

    def publish(self, source: Path, target: Path) -> bool:
        """Renames a verified file into place; False (and `source` removed) if the target was
        there already. The file is synced on this object's thread; see `pending`."""
        if target.exists():
            source.unlink()
            return False
        publication = _Publication(target, time.time_ns(), not target.parent.exists(), Future())
        # Registered before the rename, so the mark never passes a file not yet synced.
        with self._lock:
            self._unsynced[target] = publication
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
        except BaseException:
            with self._lock:
                del self._unsynced[target]
            raise
        with self._lock:
            self._queue.append(publication)
        self._thread.submit(self._sync_round)
        return True

    def pending(self, target: Path) -> Future[None] | None:
        """The sync of `target` if it has not reached stable storage yet."""
        with self._lock:
            publication = self._unsynced.get(target)
        return publication.synced if publication else None

    def close(self) -> None:
        """Syncs everything published and leaves a mark past it: a clean stop re-checks
        nothing at the next start. (The mark may run ahead of the clock here because nothing
        is published before the next start sets a mark of its own.)"""
        self._thread.shutdown(wait=True)
        with self._lock:
            everything_synced = not self._unsynced
        if everything_synced:
            self._write_mark(time.time_ns() + MARGIN_NS)

    # --- on the sync thread -----------------------------------------------------------------

    def _sync_round(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return  # an earlier round took these
        files_synced: list[_Publication] = []
        directories: set[Path] = set()
        for publication in batch:
            try:
                fsync_path(publication.target)
            except FileNotFoundError:
                pass  # deleted meanwhile: nothing left to keep
            except OSError as error:
                self._failed(publication, error)
                continue
            files_synced.append(publication)
            directories.update(_directories_of(publication))
        failed: dict[Path, OSError] = {}
        for directory in directories:
            try:
                fsync_path(directory)
            except OSError as error:
                failed[directory] = error
        synced: list[_Publication] = []
        for publication in files_synced:
            # Its rename is durable only once the directories it changed are.
            broken = [failed[d] for d in _directories_of(publication) if d in failed]
            if broken:
                self._failed(publication, broken[0])
            else:
                synced.append(publication)
        with self._lock:
            for publication in synced:
                del self._unsynced[publication.target]
            oldest = next(iter(self._unsynced.values()), None)
            now = time.time_ns()
        for publication in synced:
            publication.synced.set_result(None)
        if now - self._marked_ns >= MARK_INTERVAL_NS:
            self._write_mark((oldest.started_ns if oldest else now) - MARGIN_NS)

    @staticmethod
    def _failed(publication: _Publication, error: OSError) -> None:
        # Stays unsynced for good: the mark never passes it, the next start re-checks.
        log.error("cannot sync blob %s: %s", publication.target, error)
        publication.synced.set_exception(error)

    def _write_mark(self, synced_before_ns: int) -> None:
        try:
            write_watermark(self._mark_path, Watermark(self._boot_id, synced_before_ns))
        except OSError as error:
            log.error("cannot write %s: %s", self._mark_path, error)
            return
        self._marked_ns = time.time_ns()
