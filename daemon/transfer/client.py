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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeAlias, cast

import grpc

from daemon.errors import NodeError
from daemon.rpc.v1 import transfer_pb2, transfer_pb2_grpc
from daemon.transfer.blobid import check_blob_id
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import read_chunks
from daemon.transfer.errors import (
    BlobExistsError,
    ContentMismatchError,
    CorruptChunkError,
    OffsetMismatchError,
)
from daemon.transfer.memory import keep_freed_memory
from daemon.transfer.status import RETRYABLE, UPLOAD_ACCEPTED_KEY, error_from_status
from daemon.transport.channels import open_channel

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

# An address (HOST:PORT) to dial, or a channel the caller opened with transport.channels.
Target: TypeAlias = "grpc.aio.Channel | str"


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
    # The stub's overloads pick the async flavour for an aio channel; grpc has no types.
    return cast(
        "transfer_pb2_grpc.TransferServiceAsyncStub", transfer_pb2_grpc.TransferServiceStub(channel)
    )


@contextlib.asynccontextmanager
async def _connect(
    target: Target,
) -> AsyncIterator[tuple[transfer_pb2_grpc.TransferServiceAsyncStub, str]]:
    if isinstance(target, str):
        channel = open_channel(target)
        try:
            yield _stub(channel), target
        finally:
            await channel.close()
    else:
        yield _stub(target), "the peer"


async def download(
    target: Target, sha256: str, size: int, store: BlobStore, *, retries: int = RETRIES
) -> Path:
    """The blob from the peer at `target` (an address or an open channel), verified, in
    `store`; returns its path there. Resumes from what the store holds of it already, and
    again from where a broken stream left off, up to `retries` times without progress."""
    check_blob_id(sha256)
    keep_freed_memory()
    if await store.has(sha256):
        return await store.path(sha256)
    attempts = _Attempts(retries)
    started_over = False
    async with _connect(target) as (stub, address):
        while True:
            offset = await store.partial_size(sha256)
            try:
                return await _download_from(stub, sha256, size, store, offset)
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
    stub: transfer_pb2_grpc.TransferServiceAsyncStub,
    sha256: str,
    size: int,
    store: BlobStore,
    offset: int,
) -> Path:
    async with store.receive(sha256, size, offset=offset) as writer:
        call = stub.Download(transfer_pb2.DownloadRequest(sha256=sha256, offset=offset))
        try:
            async for chunk in call:
                if chunk.offset != writer.received:
                    raise OffsetMismatchError(
                        f"blob {sha256[:12]}: the peer sent a chunk at {chunk.offset} "
                        f"where {writer.received} was expected"
                    )
                await writer.append(chunk.data, chunk.crc32)
        finally:
            call.cancel()  # a no-op once the stream ended; stops the peer when we gave up
        return await writer.finish()


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
    async with _connect(target) as (stub, address):
        while True:
            offset = 0
            try:
                stat = await stub.Stat(transfer_pb2.StatRequest(sha256=sha256))
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
                return await _upload_from(stub, path, header)
            except grpc.aio.AioRpcError as error:
                failure = error_from_status(error, address)
                if error.code() not in _UPLOAD_RETRYABLE:
                    raise failure from None
            await attempts.after_failure(failure, offset)


async def _upload_from(
    stub: transfer_pb2_grpc.TransferServiceAsyncStub, path: Path, header: transfer_pb2.UploadHeader
) -> tuple[str, int]:
    call = stub.Upload()
    try:
        await call.write(transfer_pb2.UploadMessage(header=header))
        # Chunks go only once the peer accepted the header, so a refusal of it reaches us
        # with its own status (see status.UPLOAD_ACCEPTED).
        if UPLOAD_ACCEPTED_KEY in await call.initial_metadata():
            chunks = read_chunks(path, offset=header.offset, size=header.size)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    message = transfer_pb2.Chunk(
                        offset=chunk.offset, data=chunk.data, crc32=chunk.crc32
                    )
                    await call.write(transfer_pb2.UploadMessage(chunk=message))
            await call.done_writing()
    except asyncio.InvalidStateError:
        pass  # the peer ended the call while we wrote: its status says why
    except BaseException:
        call.cancel()
        raise
    reply = await call
    return reply.sha256, reply.size
