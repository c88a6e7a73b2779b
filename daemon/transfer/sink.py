"""Appending a blob's bytes to its partial file.

Plain writes into the page cache: the bytes reach the disk behind the transfer, when the
store syncs the published blob (see durability.py). Writing them to the disk on the way
(O_DIRECT, or fsync before publishing) held every transfer to the disk's speed.

A FileSink is used from one thread at a time.
"""

from __future__ import annotations

import os
from pathlib import Path

from daemon.transfer.errors import OffsetMismatchError


class FileSink:
    """Writes bytes in order at the end of `path`, which must hold `offset` bytes already."""

    def __init__(self, path: Path, offset: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
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
        self._position = offset

    @property
    def position(self) -> int:
        """Bytes of the blob in the file."""
        return self._position

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            count = os.pwrite(self._fd, view, self._position)
            self._position += count
            view = view[count:]

    def close(self) -> int:
        """Closes the file and returns its size: after a failed write, what really is there."""
        if self._fd < 0:
            return self._position
        try:
            self._position = os.fstat(self._fd).st_size
        finally:
            os.close(self._fd)
            self._fd = -1
        return self._position
