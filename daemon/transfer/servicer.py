"""TransferService over gRPC: blobs out of and into a BlobStore, as the node's policy allows.

Every refusal is a status with a message saying which blob and why (see `status.py`); an
upload that is refused leaves nothing visible, and nothing after a bad chunk is written.

Register it with `add_transfer_service`, not the generated registration: chunks travel as
serialised messages written and read by `wire.py`, never through protobuf objects (a 1 MiB
chunk through the protobuf runtime costs several copies on the event loop). Download yields
Chunk messages as bytes, built on the thread that reads the blob; Upload receives each
UploadMessage as its header, a chunk whose data is a view of what gRPC delivered, or None.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from daemon.errors import NodeError, NotFoundError
from daemon.rpc.v1 import transfer_pb2
from daemon.transfer import wire
from daemon.transfer.blobid import check_blob_id
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.errors import (
    BlobExistsError,
    ContentMismatchError,
    OffsetMismatchError,
    PolicyRefusedError,
    TooManyUploadsError,
    TransferError,
)
from daemon.transfer.memory import keep_freed_memory
from daemon.transfer.status import UPLOAD_ACCEPTED, status_for
from daemon.transport.access import Caller, current_caller

R = TypeVar("R")

SERVICE = "vcnode.v1.TransferService"

# How much of a refused upload's remaining stream is read before ending the call anyway.
DRAIN_LIMIT_BYTES = 32 << 20
# Uploads one peer may have going at once: bounds what one member holds (memory, the
# blobs' locks, streams), however many it opens.
UPLOADS_PER_PEER = 8


class TransferPolicy(Protocol):
    """Who may take which blob, and which blobs this node takes in, from whom.

    Async, so a policy can look its answer up in the node's store.
    """

    async def may_download(self, sha256: str, caller: Caller) -> bool: ...

    async def may_upload(self, sha256: str, size: int, purpose: str, caller: Caller) -> bool: ...


class AllowAll:
    """Serves every blob held and accepts every upload the store has room for, from any
    caller the access policy let through."""

    async def may_download(self, sha256: str, caller: Caller) -> bool:
        return True

    async def may_upload(self, sha256: str, size: int, purpose: str, caller: Caller) -> bool:
        return True


async def _drain(messages: AsyncIterator[wire.UploadPart], limit: int) -> None:
    """Reads (and drops) what the sender still sends, up to `limit` bytes, so that a refusal
    in mid-stream reaches it as our status and not as INTERNAL (grpc/grpc#36066)."""
    drained = 0
    async for message in messages:
        if isinstance(message, wire.RawChunk):
            drained += len(message.data)
        if drained > limit:
            return


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], error: NodeError) -> None:
    await context.abort(status_for(error), str(error))


def _refuses(handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """As `transport.errors.maps_errors`, with the transfer errors' own status codes."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await handler(self, request, context)
        except NodeError as error:
            await _refuse(context, error)
            raise  # unreachable: abort raises

    return wrapper


class TransferServicer:
    def __init__(self, store: BlobStore, policy: TransferPolicy) -> None:
        self._store = store
        self._policy = policy
        self._uploads: Counter[str] = Counter()  # by the caller's node id
        # Bytes served and taken since start (/metrics): chunks as they cross the wire.
        self.bytes_sent = 0
        self.bytes_received = 0
        keep_freed_memory()

    async def Download(
        self,
        request: transfer_pb2.DownloadRequest,
        context: grpc.aio.ServicerContext[transfer_pb2.DownloadRequest, bytes],
    ) -> AsyncIterator[bytes]:
        """Serialised Chunk messages (see `add_transfer_service`)."""
        try:
            sha256 = check_blob_id(request.sha256)
            if not await self._policy.may_download(sha256, current_caller()):
                raise PolicyRefusedError(f"this node does not serve blob {sha256} to you")
            # `yield` rather than context.write(): measurably faster in grpc.aio.
            async for message in self._store.read_messages(sha256, request.offset):
                self.bytes_sent += len(message)
                yield message
        except NodeError as error:
            await _refuse(context, error)

    @_refuses
    async def Upload(
        self,
        request_iterator: AsyncIterator[wire.UploadPart],
        context: grpc.aio.ServicerContext[wire.UploadPart, transfer_pb2.UploadReply],
    ) -> transfer_pb2.UploadReply:
        """Takes UploadMessages as `wire.parse_upload_message` reads them."""
        messages = aiter(request_iterator)
        header = await anext(messages, None)
        if not isinstance(header, transfer_pb2.UploadHeader):
            raise TransferError("an upload starts with its header, then the chunks")
        sha256 = check_blob_id(header.sha256)
        caller = current_caller()
        if self._uploads[caller.node_id] >= UPLOADS_PER_PEER:
            raise TooManyUploadsError(
                f"{caller.describe()} has {UPLOADS_PER_PEER} uploads going here already: "
                "send the next once one ends"
            )
        self._uploads[caller.node_id] += 1
        try:
            return await self._receive(sha256, header, messages, caller, context)
        finally:
            self._uploads[caller.node_id] -= 1
            if not self._uploads[caller.node_id]:
                del self._uploads[caller.node_id]

    async def _receive(
        self,
        sha256: str,
        header: transfer_pb2.UploadHeader,
        messages: AsyncIterator[wire.UploadPart],
        caller: Caller,
        context: grpc.aio.ServicerContext[wire.UploadPart, transfer_pb2.UploadReply],
    ) -> transfer_pb2.UploadReply:
        if not await self._policy.may_upload(sha256, header.size, header.purpose, caller):
            raise PolicyRefusedError(
                f"this node does not accept blob {sha256} ({header.size} bytes) "
                f"for {header.purpose!r}"
            )
        if await self._store.has(sha256):
            return await self._already_here(sha256, header.size)
        accepted = False
        try:
            # Charged as it arrives: an upload that promises much and sends nothing holds
            # nothing of the quota.
            receiving = self._store.receive(
                sha256, header.size, offset=header.offset, reserve=False
            )
            async with receiving as writer:
                await context.send_initial_metadata(UPLOAD_ACCEPTED)
                accepted = True
                async for chunk in messages:
                    if not isinstance(chunk, wire.RawChunk):
                        raise TransferError("only chunks may follow an upload's header")
                    if chunk.offset != writer.received:
                        raise OffsetMismatchError(
                            f"blob {sha256[:12]}: a chunk starts at {chunk.offset} where "
                            f"{writer.received} was expected"
                        )
                    await writer.append(chunk.data, chunk.crc32)
                    self.bytes_received += len(chunk.data)
                await writer.finish()
        except BlobExistsError:
            # Another upload of the same blob finished while this one waited its turn.
            return await self._already_here(sha256, header.size)
        except NodeError:
            if accepted:
                await _drain(messages, DRAIN_LIMIT_BYTES)
            raise
        return transfer_pb2.UploadReply(sha256=sha256, size=header.size)

    async def _already_here(self, sha256: str, size: int) -> transfer_pb2.UploadReply:
        held = await self._store.size(sha256)
        if held != size:
            raise ContentMismatchError(
                f"blob {sha256[:12]} is held here with {held} bytes, not the {size} declared"
            )
        return transfer_pb2.UploadReply(sha256=sha256, size=held)

    @_refuses
    async def Stat(
        self,
        request: transfer_pb2.StatRequest,
        context: grpc.aio.ServicerContext[transfer_pb2.StatRequest, transfer_pb2.StatReply],
    ) -> transfer_pb2.StatReply:
        # Not asked of the policy: it tells sizes only, and an uploader needs it to resume
        # a blob it may not download.
        sha256 = check_blob_id(request.sha256)
        try:
            return transfer_pb2.StatReply(complete=True, size=await self._store.size(sha256))
        except NotFoundError:
            partial = await self._store.partial_size(sha256)
            return transfer_pb2.StatReply(complete=False, partial_size=partial)


def add_transfer_service(server: grpc.aio.Server, servicer: TransferServicer) -> None:
    """Registers `servicer` as the TransferService of `server`; use it instead of the generated
    `add_TransferServiceServicer_to_server` (same service, same wire format). Download's
    responses go out as the bytes it yields and Upload's messages come in through
    `wire.parse_upload_message`; Stat keeps the protobuf (de)serializers."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Download": grpc.unary_stream_rpc_method_handler(
            servicer.Download,
            request_deserializer=transfer_pb2.DownloadRequest.FromString,
            response_serializer=None,  # serialised already
        ),
        "Upload": grpc.stream_unary_rpc_method_handler(
            servicer.Upload,
            request_deserializer=wire.parse_upload_message,
            response_serializer=wire.serialize,
        ),
        "Stat": grpc.unary_unary_rpc_method_handler(
            servicer.Stat,
            request_deserializer=transfer_pb2.StatRequest.FromString,
            response_serializer=wire.serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # As the generated code does: registered methods are matched without a lookup by name.
    server.add_registered_method_handlers(SERVICE, handlers)
