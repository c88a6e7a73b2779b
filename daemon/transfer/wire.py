"""Chunk messages on the wire, read and written without copying their data.

A 1 MiB chunk through the protobuf runtime is copied several times: into the message, out
of it as bytes, into and out of the serialised form. Both ends of a transfer read and write
the serialised messages themselves instead (gRPC hands them over as bytes when a call has no
(de)serializer; the server's side is registered by `servicer.add_transfer_service`): a
received chunk's data is a view into the message gRPC delivered, and a message sent is built
around the data read from the file in one join.

The encoding is protobuf's own (daemon/rpc/v1/transfer.proto), so either end may be the
generated code: fields in any order, unknown fields skipped, a field given twice taking its
last value. Anything this reader does not expect goes to the protobuf runtime, which then
decides (`tests/unit/test_transfer_wire.py` checks both agree).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.message import DecodeError, Message

from daemon.rpc.v1 import transfer_pb2

# Field numbers and wire types of Chunk and UploadMessage.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_CHUNK_OFFSET = 1 << 3 | _VARINT
_CHUNK_DATA = 2 << 3 | _LEN
_CHUNK_CRC32 = 3 << 3 | _I32
_UPLOAD_CHUNK = 2 << 3 | _LEN
_UPLOAD_CHUNK_KEY = bytes((_UPLOAD_CHUNK,))

_FIXED32 = struct.Struct("<I")


class WireError(ValueError):
    """A message this reader does not take apart itself."""


@dataclass(frozen=True, slots=True)
class RawChunk:
    offset: int
    data: memoryview  # a view of the message: no copy of the bytes
    crc32: int


# An UploadMessage as the receiver of an upload sees it: the header, a chunk, or neither.
UploadPart: TypeAlias = "transfer_pb2.UploadHeader | RawChunk | None"


def _varint(message: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it."""
    value = 0
    shift = 0
    while True:
        if position >= len(message) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = message[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it: ten bytes, two's complement
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _parse_fast(message: bytes, position: int = 0, end: int | None = None) -> RawChunk:
    """The Chunk in message[position:end]."""
    view = memoryview(message)
    offset = 0
    crc32 = 0
    data = view[:0]
    if end is None:
        end = len(message)
    while position < end:
        key, position = _varint(message, position)
        wire_type = key & 7
        if key == _CHUNK_DATA:
            length, position = _varint(message, position)
            if position + length > end:
                raise WireError("truncated data")
            data = view[position : position + length]
            position += length
        elif key == _CHUNK_OFFSET:
            offset, position = _varint(message, position)
            offset &= (1 << 64) - 1
            if offset >= 1 << 63:
                offset -= 1 << 64
        elif key == _CHUNK_CRC32:
            if position + 4 > end:
                raise WireError("truncated crc32")
            (crc32,) = _FIXED32.unpack_from(message, position)
            position += 4
        elif key >> 3 in (1, 2, 3) or key >> 3 == 0:
            raise WireError(f"field {key >> 3} with wire type {wire_type}")
        elif wire_type == _VARINT:
            _, position = _varint(message, position)
        elif wire_type == _I64:
            position += 8
        elif wire_type == _LEN:
            length, position = _varint(message, position)
            position += length
        elif wire_type == _I32:
            position += 4
        else:
            raise WireError(f"wire type {wire_type}")
        if position > end:
            raise WireError("truncated field")
    return RawChunk(offset, data, crc32)


def parse_chunk(message: bytes) -> RawChunk:
    """The serialised Chunk `message`, its data a view of it. Raises DecodeError as the
    protobuf runtime does for a message that is not a Chunk."""
    try:
        return _parse_fast(message)
    except WireError:
        pass
    chunk = transfer_pb2.Chunk.FromString(message)  # raises DecodeError when it is bad
    return RawChunk(chunk.offset, memoryview(chunk.data), chunk.crc32)


def parse_upload_message(message: bytes) -> UploadPart:
    """The serialised UploadMessage `message`: its header, its chunk (data a view of the
    message), or None when it holds neither. Raises DecodeError as the protobuf runtime
    does for a message that is not an UploadMessage."""
    # The usual chunk: one field, the Chunk, to the end of the message.
    if message[:1] == _UPLOAD_CHUNK_KEY:
        try:
            length, position = _varint(message, 1)
            if position + length == len(message):
                return _parse_fast(message, position)
        except WireError:
            pass
    parsed = transfer_pb2.UploadMessage.FromString(message)  # raises DecodeError when bad
    kind = parsed.WhichOneof("kind")
    if kind == "header":
        return parsed.header
    if kind == "chunk":
        chunk = parsed.chunk
        return RawChunk(chunk.offset, memoryview(chunk.data), chunk.crc32)
    return None


def serialize(message: Message) -> bytes:
    """A protobuf message as gRPC sends it: the serializer of the calls that are not raw."""
    return message.SerializeToString()


def _chunk_fields(offset: int, length: int) -> bytes:
    """A Chunk's fields before its data: the offset (unless 0) and the data's key and length."""
    head = bytes((_CHUNK_DATA,)) + encode_varint(length)
    return bytes((_CHUNK_OFFSET,)) + encode_varint(offset) + head if offset else head


def chunk_prefix(offset: int, length: int) -> bytes:
    """An UploadMessage holding a Chunk at `offset` of `length` data bytes, up to the data;
    `chunk_suffix` follows the data."""
    inner = _chunk_fields(offset, length)
    chunk_length = len(inner) + length + 5
    return _UPLOAD_CHUNK_KEY + encode_varint(chunk_length) + inner


def chunk_suffix(crc32: int) -> bytes:
    return bytes((_CHUNK_CRC32,)) + _FIXED32.pack(crc32)


def encode_upload_chunk(offset: int, data: bytes | memoryview, crc32: int) -> bytes:
    """A serialised UploadMessage holding Chunk(offset, data, crc32): one copy of `data`."""
    return b"".join((chunk_prefix(offset, len(data)), data, chunk_suffix(crc32)))


def encode_chunk(offset: int, data: bytes | memoryview, crc32: int) -> bytes:
    """A serialised Chunk(offset, data, crc32), as a Download sends it: one copy of `data`."""
    return b"".join((_chunk_fields(offset, len(data)), data, chunk_suffix(crc32)))


__all__ = [
    "DecodeError",
    "RawChunk",
    "UploadPart",
    "WireError",
    "chunk_prefix",
    "chunk_suffix",
    "encode_chunk",
    "encode_upload_chunk",
    "parse_chunk",
    "parse_upload_message",
    "serialize",
]
