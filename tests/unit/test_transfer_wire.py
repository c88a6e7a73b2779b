"""The hand-rolled Chunk reader and writer agree with the protobuf runtime."""

from __future__ import annotations

import os
import zlib

import pytest
from google.protobuf.message import DecodeError

from daemon.rpc.v1 import transfer_pb2
from daemon.transfer import wire

DATA = os.urandom(300_000)


@pytest.mark.parametrize("offset", [0, 1, 127, 128, 1 << 20, (1 << 40) + 3, -5])
@pytest.mark.parametrize("data", [b"", b"x", DATA], ids=["empty", "one", "big"])
def test_parse_chunk_reads_what_protobuf_writes(offset: int, data: bytes) -> None:
    crc = zlib.crc32(data)
    message = transfer_pb2.Chunk(offset=offset, data=data, crc32=crc).SerializeToString()
    chunk = wire.parse_chunk(message)
    assert (chunk.offset, bytes(chunk.data), chunk.crc32) == (offset, data, crc)


def test_parse_chunk_data_is_a_view_of_the_message() -> None:
    message = transfer_pb2.Chunk(offset=5, data=DATA, crc32=1).SerializeToString()
    assert wire.parse_chunk(message).data.obj is message


def test_parse_chunk_takes_fields_in_any_order_repeated_and_unknown() -> None:
    data_field = b"\x12\x03abc"
    message = (
        b"\x1d\x01\x00\x00\x00"  # crc32 = 1
        + b"\x08\x07"  # offset = 7
        + b"\x12\x01z"  # data = z, replaced below
        + b"\x20\x05"  # unknown varint field 4
        + b"\x2a\x02hi"  # unknown bytes field 5
        + b"\x31"
        + bytes(8)  # unknown fixed64 field 6
        + b"\x3d"
        + bytes(4)  # unknown fixed32 field 7
        + data_field
        + b"\x08\x09"  # offset = 9 (last wins)
    )
    reference = transfer_pb2.Chunk.FromString(message)
    chunk = wire.parse_chunk(message)
    assert (chunk.offset, bytes(chunk.data), chunk.crc32) == (
        reference.offset,
        reference.data,
        reference.crc32,
    )
    assert (chunk.offset, bytes(chunk.data), chunk.crc32) == (9, b"abc", 1)


@pytest.mark.parametrize(
    "message",
    [b"\x12\x05ab", b"\x08", b"\x1d\x01\x00", b"\x08" + b"\xff" * 11, b"\x00\x01", b"\x0f"],
    ids=["short-data", "short-varint", "short-crc", "long-varint", "field-0", "bad-wire-type"],
)
def test_parse_chunk_refuses_broken_messages_as_protobuf_does(message: bytes) -> None:
    with pytest.raises(DecodeError):
        transfer_pb2.Chunk.FromString(message)
    with pytest.raises(DecodeError):
        wire.parse_chunk(message)


@pytest.mark.parametrize("offset", [0, 3, 1 << 30, (1 << 62) + 1])
@pytest.mark.parametrize("data", [b"", b"abc", DATA], ids=["empty", "small", "big"])
def test_encoded_upload_chunk_is_an_upload_message(offset: int, data: bytes) -> None:
    crc = zlib.crc32(data)
    message = transfer_pb2.UploadMessage.FromString(wire.encode_upload_chunk(offset, data, crc))
    assert message.WhichOneof("kind") == "chunk"
    assert (message.chunk.offset, message.chunk.data, message.chunk.crc32) == (offset, data, crc)


@pytest.mark.parametrize("offset", [0, 3, 1 << 30, (1 << 62) + 1, -5])
@pytest.mark.parametrize("data", [b"", b"abc", DATA], ids=["empty", "small", "big"])
def test_encoded_chunk_is_a_chunk(offset: int, data: bytes) -> None:
    crc = zlib.crc32(data)
    encoded = wire.encode_chunk(offset, data, crc)
    message = transfer_pb2.Chunk.FromString(encoded)
    assert (message.offset, message.data, message.crc32) == (offset, data, crc)
    if data:  # (protobuf leaves out empty data and a zero crc32; either way reads the same)
        assert encoded == message.SerializeToString(), "as protobuf itself writes it"


@pytest.mark.parametrize("offset", [0, 1, 1 << 20, (1 << 40) + 3, -5])
@pytest.mark.parametrize("data", [b"", b"x", DATA], ids=["empty", "one", "big"])
def test_parse_upload_message_reads_chunks_as_views(offset: int, data: bytes) -> None:
    crc = zlib.crc32(data)
    chunk = transfer_pb2.Chunk(offset=offset, data=data, crc32=crc)
    message = transfer_pb2.UploadMessage(chunk=chunk).SerializeToString()
    part = wire.parse_upload_message(message)
    assert isinstance(part, wire.RawChunk)
    assert (part.offset, bytes(part.data), part.crc32) == (offset, data, crc)
    assert part.data.obj is message, "no copy of the data"
    ours = wire.parse_upload_message(wire.encode_upload_chunk(offset, data, crc))
    assert isinstance(ours, wire.RawChunk)
    assert (ours.offset, bytes(ours.data), ours.crc32) == (offset, data, crc)


def test_parse_upload_message_reads_the_header() -> None:
    header = transfer_pb2.UploadHeader(sha256="ab" * 32, size=7, offset=3, purpose="task-1")
    message = transfer_pb2.UploadMessage(header=header).SerializeToString()
    assert wire.parse_upload_message(message) == header


def test_parse_upload_message_of_neither_is_none() -> None:
    assert wire.parse_upload_message(b"") is None
    assert wire.parse_upload_message(b"\x18\x05") is None  # an unknown field only


# Chunk(offset=1, data=b"abc", crc32=2) as the inner message, for the odd layouts below.
_INNER = transfer_pb2.Chunk(offset=1, data=b"abc", crc32=2).SerializeToString()
_CHUNK_FIELD = b"\x12" + bytes((len(_INNER),)) + _INNER
_HEADER_FIELD = b"\x0a\x02\x10\x07"  # header { size: 7 }


@pytest.mark.parametrize(
    "message",
    [
        _HEADER_FIELD + _CHUNK_FIELD,  # the oneof's last field wins: the chunk
        _CHUNK_FIELD + _HEADER_FIELD,  # ... the header
        _CHUNK_FIELD + b"\x12\x02\x08\x09",  # a chunk given twice is merged: offset 9
        _CHUNK_FIELD + b"\x18\x05",  # an unknown field after the chunk
        b"\x12\x07\x1d\x01\x00\x00\x00\x20\x05",  # a chunk with an unknown field inside
    ],
    ids=["header-then-chunk", "chunk-then-header", "chunk-twice", "unknown-outer", "unknown-in"],
)
def test_parse_upload_message_agrees_with_protobuf_on_odd_layouts(message: bytes) -> None:
    reference = transfer_pb2.UploadMessage.FromString(message)
    part = wire.parse_upload_message(message)
    if reference.WhichOneof("kind") == "header":
        assert part == reference.header
    else:
        assert isinstance(part, wire.RawChunk)
        chunk = reference.chunk
        expected = (chunk.offset, chunk.data, chunk.crc32)
        assert (part.offset, bytes(part.data), part.crc32) == expected


@pytest.mark.parametrize(
    "message",
    [b"\x12\x05\x12\x05ab", b"\x12", b"\x12\x03\x1d\x01\x00", b"\x12\x09" + _INNER, b"\x0f"],
    ids=["short-data", "no-length", "short-crc", "longer-than-message", "bad-wire-type"],
)
def test_parse_upload_message_refuses_broken_messages_as_protobuf_does(message: bytes) -> None:
    with pytest.raises(DecodeError):
        transfer_pb2.UploadMessage.FromString(message)
    with pytest.raises(DecodeError):
        wire.parse_upload_message(message)
