"""The gRPC status of each transfer refusal, and back: one table for both ends.

Errors outside the transfer package fall back to `daemon.transport.errors`.
"""

from __future__ import annotations

import grpc

from daemon.errors import NodeError, NotFoundError
from daemon.transfer.errors import (
    BlobExistsError,
    BlobTooLargeError,
    ContentMismatchError,
    CorruptChunkError,
    InvalidBlobIdError,
    OffsetMismatchError,
    PolicyRefusedError,
    QuotaExceededError,
    TooManyUploadsError,
    TransferError,
)
from daemon.transport import errors as transport_errors

_CODES: list[tuple[type[NodeError], grpc.StatusCode]] = [
    (InvalidBlobIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (BlobTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooManyUploadsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OffsetMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (CorruptChunkError, grpc.StatusCode.DATA_LOSS),
    (ContentMismatchError, grpc.StatusCode.DATA_LOSS),
    (PolicyRefusedError, grpc.StatusCode.PERMISSION_DENIED),
    (BlobExistsError, grpc.StatusCode.ALREADY_EXISTS),
    # Refusals of a malformed call (no header first, a chunk missing its data ...).
    (TransferError, grpc.StatusCode.INVALID_ARGUMENT),
]

# Codes several errors share come back as the most general of them; the message says which.
_ERRORS: dict[grpc.StatusCode, type[NodeError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: TransferError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TransferError,
    grpc.StatusCode.FAILED_PRECONDITION: OffsetMismatchError,
    grpc.StatusCode.DATA_LOSS: ContentMismatchError,
    grpc.StatusCode.PERMISSION_DENIED: PolicyRefusedError,
    grpc.StatusCode.ALREADY_EXISTS: BlobExistsError,
}

# Initial metadata an Upload's receiver sends once it accepted the header. The sender writes
# chunks only after it: a grpc.aio client that is still writing when the server ends the call
# sees INTERNAL "Internal error from Core" instead of the server's status (grpc/grpc#36066),
# so a refusal of the header must reach a sender that is not writing.
UPLOAD_ACCEPTED_KEY = "vcnode-upload"
UPLOAD_ACCEPTED = ((UPLOAD_ACCEPTED_KEY, "accepted"),)

# A stream that broke (peer gone, connection reset, server going away) is worth resuming.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def status_for(error: NodeError) -> grpc.StatusCode:
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return transport_errors.status_for(error)


def error_from_status(error: grpc.aio.AioRpcError, address: str) -> NodeError:
    """The peer's refusal as the matching NodeError, with its message."""
    error_type = _ERRORS.get(error.code())
    if error_type is None:
        return transport_errors.error_from_rpc(error, address, "transfer service")
    return error_type(f"{address}: {error.details() or error.code().name}")
