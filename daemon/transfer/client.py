"""Moving blobs to and from a peer's TransferService, resuming where a broken transfer ended.

Memory stays bounded whatever the blob's size: files are read and written a few 1 MiB chunks
at a time. A download lands in the local BlobStore, which verifies the sha256 before the
blob becomes visible; an upload is verified by the receiving node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError

from daemon.errors import NodeError
from daemon.rpc.v1 import transfer_pb2, transfer_pb2_grpc
from daemon.transfer import wire
from daemon.transfer.blobid import check_blob_id
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import encoded_chunks, read_chunks
from daemon.transfer.errors import (
    BlobExistsError,
    ContentMismatchError,
    CorruptChunkError,
    OffsetMismatchError,
)
from daemon.transfer.memory import keep_freed_memory
from daemon.transfer.status import RETRYABLE, UPLOAD_ACCEPTED_KEY, error_from_status
from daemon.transfer.writer import BlobWriter, await_even_if_cancelled
from daemon.transport.channels import Dial, open_sync_channel

log = logging.getLogger(__name__)

# Attempts in a row that may fail without moving the transfer on, and the pause before each
# (with jitter). An attempt that got further than the last one starts the count again.
RETRIES = 4
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0

# FAILED_PRECONDITION: the peer's partial moved (an earlier, broken upload was still
# finishing), so Stat again. INTERNAL comes only after the peer accepted the header (see
# _upload_from): the stream broke in mid-way.
_UPLOAD_RETRYABLE = RETRYABLE | {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INTERNAL}

_SERVICE = "/vcnode.v1.TransferService/"
_DOWNLOAD = _SERVICE + "Download"
_UPLOAD = _SERVICE + "Upload"
_STAT = _SERVICE + "Stat"

T = TypeVar("T")


def _parse_stat(data: bytes) -> transfer_pb2.StatReply:
    return transfer_pb2.StatReply.FromString(data)


def _parse_upload_reply(data: bytes) -> transfer_pb2.UploadReply:
    return transfer_pb2.UploadReply.FromString(data)


# A peer to dial, or a channel the caller opened with transport.channels.
Target: TypeAlias = "grpc.aio.Channel | Dial"


class _Attempts:
    """Counts failures in a row, forgiving those after which the transfer got further."""

    def __init__(self, retries: int) -> None:
        self._retries = retries
        self._failures = 0
        self._best = -1

    async def after_failure(self, error: NodeError, reached: int) -> None:
        """Pauses before the next attempt, or raises `error` when retrying is pointless."""
        if reached > self._best:
            self._best = reached
            self._failures = 0
        self._failures += 1
        if self._failures > self._retries:
            raise error
        step = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (self._failures - 1))
        delay = step / 2 + random.uniform(0, step / 2)
        log.info("transfer interrupted at byte %d (%s); retrying in %.2f s", reached, error, delay)
        await asyncio.sleep(delay)


def _stub(channel: grpc.aio.Channel) -> transfer_pb2_grpc.TransferServiceAsyncStub:
    # The stub's overloads pick the async flavour for an aio channel.
    return transfer_pb2_grpc.TransferServiceStub(channel)


@dataclass(frozen=True)
class _Peer:
    """The peer, through the caller's aio channel or through a blocking channel of our own
    (one we dialled): the bulk of a transfer then runs on a worker thread of its own."""

    address: str
    channel: grpc.aio.Channel | None = None
    blocking: grpc.Channel | None = None


@contextlib.asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[_Peer]:
    if isinstance(target, Dial):
        channel = open_sync_channel(target.address, target.credential, target.peer)
        try:
            yield _Peer(target.address, blocking=channel)
        finally:
            await asyncio.to_thread(channel.close)
    else:
        yield _Peer("the peer", channel=target)


def _as_aio_error(error: grpc.RpcError) -> grpc.aio.AioRpcError:
    """A blocking call's failure as the aio one the callers handle."""
    call = cast(grpc.Call, error)
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    details = call.details() if hasattr(call, "details") else str(error)
    debug = error.debug_error_string() if hasattr(error, "debug_error_string") else None
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=debug
    )


async def _on_thread(work: Callable[[], T], cancel: Callable[[], object]) -> T:
    """Runs `work` on a thread of its own (a transfer holds it for long: not the default
    pool's). Cancelled, it calls `cancel` (which must make `work` end soon) and waits for it."""
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-transfer")
    try:
        future = asyncio.get_running_loop().run_in_executor(thread, work)
    finally:
        thread.shutdown(wait=False)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.done():
            cancel()
            with contextlib.suppress(BaseException):
                await await_even_if_cancelled(future)
        raise


async def download(
    target: Target, sha256: str, size: int, store: BlobStore, *, retries: int = RETRIES
) -> Path:
    """The blob from the peer at `target` (a `Dial`, or a channel the caller opened), verified, in
    `store`; returns its path there. Resumes from what the store holds of it already, and
    again from where a broken stream left off, up to `retries` times without progress."""
    check_blob_id(sha256)
    keep_freed_memory()
    if await store.has(sha256):
        return await store.path(sha256)
    attempts = _Attempts(retries)
    started_over = False
    async with _connect(target) as peer:
        address = peer.address
        while True:
            offset = await store.partial_size(sha256)
            try:
                return await _download_from(peer, sha256, size, store, offset)
            except BlobExistsError:
                return await store.path(sha256)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise error_from_status(error, address) from None
                failure: NodeError = error_from_status(error, address)
            except CorruptChunkError as error:
                failure = error  # damaged on the way; the good part before it is kept
            except OffsetMismatchError as error:
                # Another download of the blob into this store ended meanwhile, or the peer
                # skipped ahead: start again from what the store holds now.
                failure = error
            except ContentMismatchError as error:
                # A resumed partial can be bad (a crash tore its tail): it was discarded,
                # so start over once. A fresh copy that does not match will not improve.
                if offset == 0 or started_over:
                    raise
                started_over = True
                failure = error
            await attempts.after_failure(failure, await store.partial_size(sha256))


async def _download_from(
    peer: _Peer, sha256: str, size: int, store: BlobStore, offset: int
) -> Path:
    request = transfer_pb2.DownloadRequest(sha256=sha256, offset=offset)
    async with store.receive(sha256, size, offset=offset) as writer:
        # No response deserializer: the serialised chunks come as they are (bytes).
        if peer.blocking is not None:
            blocking: grpc.UnaryStreamMultiCallable[transfer_pb2.DownloadRequest, bytes]
            blocking = peer.blocking.unary_stream(
                _DOWNLOAD, request_serializer=wire.serialize, response_deserializer=None
            )
            call = blocking(request)
            await _on_thread(lambda: _receive_blocking(call, sha256, writer), call.cancel)
        else:
            assert peer.channel is not None
            download: grpc.aio.UnaryStreamMultiCallable[transfer_pb2.DownloadRequest, bytes]
            download = peer.channel.unary_stream(
                _DOWNLOAD, request_serializer=wire.serialize, response_deserializer=None
            )
            stream = download(request)
            try:
                async for message in stream:
                    await writer.append(*_chunk_at(message, sha256, writer.received))
            finally:
                stream.cancel()  # a no-op once the stream ended; stops the peer when we gave up
        return await writer.finish()


def _chunk_at(message: bytes, sha256: str, expected: int) -> tuple[memoryview, int]:
    """The data and CRC-32 of a serialised Chunk, which must start at `expected`."""
    try:
        chunk = wire.parse_chunk(message)
    except DecodeError:
        raise CorruptChunkError(
            f"blob {sha256[:12]}: the peer sent a chunk that does not parse"
        ) from None
    if chunk.offset != expected:
        raise OffsetMismatchError(
            f"blob {sha256[:12]}: the peer sent a chunk at {chunk.offset} "
            f"where {expected} was expected"
        )
    return chunk.data, chunk.crc32


def _receive_blocking(call: Iterator[bytes], sha256: str, writer: BlobWriter) -> None:
    """The download loop on its thread: the GIL is free while gRPC waits for the network,
    the CRC-32 and sha256 run on the writer's threads meanwhile."""
    try:
        for message in call:
            writer.append_blocking(*_chunk_at(message, sha256, writer.received))
    except grpc.RpcError as error:
        raise _as_aio_error(error) from None
    finally:
        cast(grpc.Call, call).cancel()


async def upload(
    target: Target,
    path: Path,
    sha256: str,
    size: int,
    purpose: str,
    *,
    retries: int = RETRIES,
) -> tuple[str, int]:
    """Sends the file at `path` (whose sha256 and size the caller knows) to the peer at
    `target`, starting from what the peer holds of it already; returns the (sha256, size)
    the peer verified. Resumes after a broken stream, up to `retries` times without
    progress; a refusal (policy, quota, checksum) raises at once."""
    check_blob_id(sha256)
    keep_freed_memory()
    held = (await asyncio.to_thread(path.stat)).st_size
    if held != size:
        raise ContentMismatchError(f"{path} holds {held} bytes, not the {size} declared")
    attempts = _Attempts(retries)
    async with _connect(target) as peer:
        address = peer.address
        while True:
            offset = 0
            try:
                stat = await _stat(peer, sha256)
                if stat.complete:
                    if stat.size != size:
                        raise ContentMismatchError(
                            f"{address} holds blob {sha256[:12]} with {stat.size} bytes, not {size}"
                        )
                    return sha256, stat.size
                offset = stat.partial_size
                header = transfer_pb2.UploadHeader(
                    sha256=sha256, size=size, offset=offset, purpose=purpose
                )
                return await _upload_from(peer, path, header)
            except grpc.aio.AioRpcError as error:
                failure = error_from_status(error, address)
                if error.code() not in _UPLOAD_RETRYABLE:
                    raise failure from None
            await attempts.after_failure(failure, offset)


async def _stat(peer: _Peer, sha256: str) -> transfer_pb2.StatReply:
    request = transfer_pb2.StatRequest(sha256=sha256)
    if peer.blocking is not None:
        stat = peer.blocking.unary_unary(
            _STAT, request_serializer=wire.serialize, response_deserializer=_parse_stat
        )
        try:
            return cast(transfer_pb2.StatReply, await asyncio.to_thread(stat, request))
        except grpc.RpcError as error:
            raise _as_aio_error(error) from None
    assert peer.channel is not None
    reply: transfer_pb2.StatReply = await _stub(peer.channel).Stat(request)
    return reply


async def _upload_from(
    peer: _Peer, path: Path, header: transfer_pb2.UploadHeader
) -> tuple[str, int]:
    head = transfer_pb2.UploadMessage(header=header).SerializeToString()
    if peer.blocking is not None:
        channel = peer.blocking
        guard = _CallGuard()
        return await _on_thread(
            lambda: _send_blocking(channel, guard, path, header, head), guard.cancel
        )
    assert peer.channel is not None
    # No request serializer: the messages go as the bytes written.
    upload: grpc.aio.StreamUnaryMultiCallable[bytes, transfer_pb2.UploadReply]
    upload = peer.channel.stream_unary(
        _UPLOAD, request_serializer=None, response_deserializer=_parse_upload_reply
    )
    call = upload()
    try:
        await call.write(head)
        # Chunks go only once the peer accepted the header, so a refusal of it reaches us
        # with its own status (see status.UPLOAD_ACCEPTED).
        if (await call.initial_metadata()).get(UPLOAD_ACCEPTED_KEY) is not None:
            chunks = read_chunks(path, offset=header.offset, size=header.size)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await call.write(
                        wire.encode_upload_chunk(chunk.offset, chunk.data, chunk.crc32)
                    )
            await call.done_writing()
    except asyncio.InvalidStateError:
        pass  # the peer ended the call while we wrote: its status says why
    except BaseException:
        call.cancel()
        raise
    reply = await call
    return reply.sha256, reply.size


class _CallGuard:
    """Cancels a blocking call made on another thread, even one not made yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._call: grpc.Future[Any] | None = None
        self._cancelled = False

    def bind(self, call: grpc.Future[Any]) -> None:
        with self._lock:
            self._call = call
            if self._cancelled:
                call.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._call is not None:
                self._call.cancel()


def _send_blocking(
    channel: grpc.Channel,
    guard: _CallGuard,
    path: Path,
    header: transfer_pb2.UploadHeader,
    head: bytes,
) -> tuple[str, int]:
    """An upload on its thread; gRPC takes the messages from `messages` on a thread of its
    own while the next chunks are read (and their CRC-32 computed) on a third."""
    bound = threading.Event()
    calls: list[grpc.Future[transfer_pb2.UploadReply]] = []
    failures: list[BaseException] = []

    def messages() -> Iterator[bytes]:
        try:
            yield head
            bound.wait()
            # Chunks go only once the peer accepted the header (see status.UPLOAD_ACCEPTED);
            # initial_metadata() returns early, empty, if the call ends first.
            metadata = cast(grpc.Call, calls[0]).initial_metadata() or ()
            if any(key == UPLOAD_ACCEPTED_KEY for key, _ in metadata):
                yield from encoded_chunks(path, offset=header.offset, size=header.size)
        except GeneratorExit:
            raise
        except BaseException as error:
            failures.append(error)  # gRPC would report it as UNKNOWN only
            raise

    upload: grpc.StreamUnaryMultiCallable[bytes, transfer_pb2.UploadReply]
    upload = channel.stream_unary(
        _UPLOAD, request_serializer=None, response_deserializer=_parse_upload_reply
    )
    call = upload.future(messages())
    calls.append(call)
    guard.bind(call)
    bound.set()
    try:
        reply = call.result()
    except grpc.RpcError as error:
        if failures:
            raise failures[0] from None
        raise _as_aio_error(error) from None
    return reply.sha256, reply.size
