"""The fast CRC-32 gives zlib's values for every kind of buffer a transfer hands it."""

from __future__ import annotations

import os
import zlib

import pytest

from daemon.transfer import crc

DATA = os.urandom((1 << 20) + 13)


@pytest.mark.parametrize(
    "buffer",
    [
        DATA,
        bytearray(DATA),
        memoryview(DATA),
        memoryview(DATA)[7:],
        memoryview(bytearray(DATA))[3:-5],
        b"",
        b"abc",
        memoryview(DATA)[:100],
    ],
    ids=["bytes", "bytearray", "view", "view-slice", "rw-view-slice", "empty", "tiny", "small"],
)
def test_crc32_matches_zlib(buffer: bytes | bytearray | memoryview) -> None:
    assert crc.crc32(buffer) == zlib.crc32(buffer)
    assert crc.crc32(buffer, 0x12345678) == zlib.crc32(buffer, 0x12345678)


def test_crc32_refuses_buffers_that_are_not_contiguous() -> None:
    with pytest.raises((TypeError, ValueError, BufferError)):
        crc.crc32(memoryview(DATA)[::2])
