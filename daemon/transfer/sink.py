"""Appending a blob's bytes to its partial file, around the page cache where possible.

Received blobs are large and written once. Through the page cache, each byte is copied into
freshly allocated cache pages and written back again by fsync before the blob may become
visible; on the machines measured that took more CPU than receiving it. With O_DIRECT,
bytes staged in an aligned buffer go to the disk while the next ones arrive (two buffers,
the disk write on its own thread), and fsync has little left to do. Filesystems that refuse
O_DIRECT (tmpfs, some FUSE) get plain writes.

A FileSink is used from one thread at a time.
"""

from __future__ import annotations

import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from daemon.transfer.errors import OffsetMismatchError

# O_DIRECT wants file offsets, lengths and memory aligned to the logical block size; 4096
# covers 512-byte and 4K sectors. mmap'd memory is page aligned.
ALIGN = 4096
STAGE_BYTES = 4 << 20
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# Tests turn this off to exercise the plain path on filesystems that do take O_DIRECT.
DIRECT_IO = _O_DIRECT != 0


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        count = os.pwrite(fd, data, offset)
        data = data[count:]
        offset += count


class _Direct:
    """The O_DIRECT side of a sink: two aligned buffers, one filling while the other is
    written by the disk thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffers = [mmap.mmap(-1, STAGE_BYTES) for _ in range(2)]
        self.views = [memoryview(buffer) for buffer in self.buffers]
        self.current = 0
        self.disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-disk")
        # The buffer being written, where it goes, and the write itself.
        self.in_flight: tuple[int, int, Future[None]] | None = None

    def close(self) -> None:
        self.disk.shutdown(wait=True)
        for view in self.views:
            view.release()
        for buffer in self.buffers:
            buffer.close()
        os.close(self.fd)


class FileSink:
    """Writes bytes in order at the end of `path`, which must hold `offset` bytes already."""

    def __init__(self, path: Path, offset: int) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            found = os.fstat(self._fd).st_size
            if found != offset:
                raise OffsetMismatchError(
                    f"{path.name}: {found} bytes are held on disk, not {offset}; "
                    "ask Stat and resume from there"
                )
        except BaseException:
            os.close(self._fd)
            raise
        # Plain mode: where the next byte goes. Direct mode: where the filling buffer goes
        # (what is before it is on disk, or being written there).
        self._start = offset
        self._staged = 0
        self._direct: _Direct | None = None
        if DIRECT_IO:
            self._go_direct(path, offset)

    @property
    def position(self) -> int:
        """Bytes of the blob accepted: on disk, or staged to go there at the latest on close."""
        return self._start + self._staged

    def _go_direct(self, path: Path, offset: int) -> None:
        try:
            direct_fd = os.open(path, os.O_WRONLY | _O_DIRECT)
        except OSError:
            return  # the filesystem does not do O_DIRECT
        direct = _Direct(direct_fd)
        # Resuming mid-block: stage the block's held head again, so writes stay aligned.
        start = offset - offset % ALIGN
        head = offset - start
        if head and os.preadv(self._fd, [direct.views[0][:head]], start) != head:
            direct.close()
            return
        self._direct, self._start, self._staged = direct, start, head

    def write(self, data: bytes | memoryview) -> None:
        source = memoryview(data)
        while source:
            direct = self._direct
            if direct is None:
                _pwrite_all(self._fd, source, self._start)
                self._start += len(source)
                return
            take = min(len(source), STAGE_BYTES - self._staged)
            view = direct.views[direct.current]
            view[self._staged : self._staged + take] = source[:take]
            self._staged += take
            source = source[take:]
            if self._staged == STAGE_BYTES:
                self._send_stage(direct)

    def _send_stage(self, direct: _Direct) -> None:
        """Hands the full buffer to the disk thread and goes on filling the other one."""
        self._wait_for_disk(direct)
        if self._direct is None:
            return  # fell back to plain writes, this buffer included
        index = direct.current
        future = direct.disk.submit(_pwrite_all, direct.fd, direct.views[index], self._start)
        direct.in_flight = (index, self._start, future)
        direct.current = 1 - index
        self._start += STAGE_BYTES
        self._staged = 0

    def _wait_for_disk(self, direct: _Direct) -> None:
        if direct.in_flight is None:
            return
        index, start, future = direct.in_flight
        direct.in_flight = None
        try:
            future.result()
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            # O_DIRECT opened but this alignment is refused: write that buffer through the
            # page cache, and everything after it.
            _pwrite_all(self._fd, direct.views[index], start)
            self._end_direct()

    def _end_direct(self) -> None:
        """Waits for the disk, writes what is staged through the page cache (an unaligned
        tail), and leaves direct mode."""
        direct = self._direct
        if direct is None:
            return
        self._direct = None
        try:
            self._wait_for_disk(direct)
            _pwrite_all(self._fd, direct.views[direct.current][: self._staged], self._start)
            self._start += self._staged
        finally:
            self._staged = 0
            direct.close()

    def sync(self) -> None:
        """Everything written and on stable storage."""
        self._end_direct()
        os.fsync(self._fd)

    def close(self) -> int:
        """Writes what is staged (a resume takes it from the file), closes the file and
        returns its size: after a failed write, what really is on disk."""
        if self._fd < 0:
            return self._start
        try:
            self._end_direct()
        finally:
            self._start = os.fstat(self._fd).st_size
            os.close(self._fd)
            self._fd = -1
        return self._start


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(source: Path, target: Path) -> bool:
    """Renames a verified, fsynced file into place (and makes the rename durable); False if
    the target was there already, in which case `source` is removed."""
    if target.exists():
        source.unlink()
        return False
    target.parent.mkdir(exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    return True
