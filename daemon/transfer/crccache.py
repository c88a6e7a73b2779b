"""Per-chunk CRC-32s of a complete blob, kept beside it so serving it again costs no CRC.

    complete/ab/abcdef...        the blob
    complete/ab/abcdef....crc    its sidecar: the CRC-32 of each CHUNK_BYTES-aligned chunk

A sidecar is written when a blob is published (from the CRCs the receiver checked anyway) or
after the first full read of a blob that had none. It holds the blob's size, inode, mtime and
ctime as they were when it was written, its chunk size, and a CRC-32 of itself; if any of
them does not match when it is read (the blob was changed or replaced, the chunk size is
another, the sidecar is torn), it is ignored and the CRCs are computed from the bytes read,
as without a sidecar. A chunk sent with a CRC from the sidecar is checked by the receiver
against the CRC of the bytes as received when they were stored, which also catches a blob
that rotted on disk since.

Sidecars are not counted against the quota (4 bytes per MiB) and go with their blob.
"""

from __future__ import annotations

import contextlib
import os
import struct
import uuid
import zlib
from array import array
from pathlib import Path

from daemon.transfer.crc import crc32

SUFFIX = ".crc"
_MAGIC = b"VCNCRC1\n"
# magic, chunk bytes, blob size, inode, mtime ns, ctime ns, count, crc of what follows
_HEADER = struct.Struct("<8sQQQQQQI")


def sidecar_path(blob: Path) -> Path:
    return blob.with_name(blob.name + SUFFIX)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


def write(blob: Path, crcs: array[int], chunk_bytes: int) -> bool:
    """Writes the sidecar of the complete blob at `blob` (atomically; no fsync: a sidecar
    lost in a crash is only recomputed). False if `crcs` does not fit the blob."""
    try:
        stat = blob.stat()
        if len(crcs) != chunk_count(stat.st_size, chunk_bytes):
            return False
        if crcs.itemsize != 4:
            return False
        table = crcs.tobytes()
        size, inode, mtime, ctime = _identity(stat)
        header = _HEADER.pack(
            _MAGIC, chunk_bytes, size, inode, mtime, ctime, len(crcs), zlib.crc32(table)
        )
        temporary = blob.with_name(f".{blob.name}.{uuid.uuid4().hex}{SUFFIX}")
        try:
            with temporary.open("xb") as out:
                out.write(header + table)
            os.replace(temporary, sidecar_path(blob))
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
    except OSError:
        return False
    return True


def load(blob: Path, stat: os.stat_result, chunk_bytes: int) -> array[int] | None:
    """The CRCs of the blob whose current stat is `stat`, or None where there is no valid
    sidecar for it (missing, stale, torn, another chunk size)."""
    try:
        content = sidecar_path(blob).read_bytes()
    except OSError:
        return None
    if len(content) < _HEADER.size:
        return None
    magic, chunks, size, inode, mtime, ctime, count, check = _HEADER.unpack_from(content)
    table = content[_HEADER.size :]
    crcs = array("I")
    if (
        magic != _MAGIC
        or chunks != chunk_bytes
        or (size, inode, mtime, ctime) != _identity(stat)
        or count != chunk_count(size, chunk_bytes)
        or crcs.itemsize != 4
        or len(table) != 4 * count
        or zlib.crc32(table) != check
    ):
        return None
    crcs.frombytes(table)
    return crcs


def remove(blob: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(blob).unlink()


class BlockCrcs:
    """The CRC-32 of each `chunk_bytes`-aligned chunk of bytes appended in order from 0.

    `add` takes the CRC a sender gave with a piece that is exactly one aligned chunk (checked
    already), and computes it otherwise.
    """

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.crcs = array("I")
        self._position = 0
        self._running = 0  # CRC of the bytes of the current, unfinished chunk

    def add(self, data: bytes | memoryview, checked_crc: int | None = None) -> None:
        length = len(data)
        if not length:
            return
        aligned = self._position % self.chunk_bytes == 0
        if checked_crc is not None and aligned and length == self.chunk_bytes:
            self.crcs.append(checked_crc)
            self._position += length
            return
        view = memoryview(data).cast("B")
        while view:
            room = self.chunk_bytes - self._position % self.chunk_bytes
            piece = view[:room]
            self._running = crc32(piece, self._running)
            self._position += len(piece)
            view = view[len(piece) :]
            if self._position % self.chunk_bytes == 0:
                self.crcs.append(self._running)
                self._running = 0

    def finish(self) -> array[int]:
        """The CRCs, the last one of a short final chunk included."""
        if self._position % self.chunk_bytes:
            self.crcs.append(self._running)
            self._running = 0
            self._position += self.chunk_bytes - self._position % self.chunk_bytes
        return self.crcs
