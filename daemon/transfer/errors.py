"""Why a blob was refused. Plain NodeErrors: the gRPC status each maps to lives in `status.py`,
so the store never imports grpc."""

from __future__ import annotations

from daemon.errors import NodeError


class TransferError(NodeError):
    """A blob could not be stored or moved; the message says which blob and why."""


class InvalidBlobIdError(TransferError, ValueError):
    """Not a blob id (64 lowercase hex digits). Refused before any path is built from it."""


class BlobTooLargeError(TransferError):
    """Bigger than this node takes as one blob."""


class TooManyUploadsError(TransferError):
    """A peer has as many uploads going as it may."""


class QuotaExceededError(TransferError):
    """Storing the blob would take the store past its quota."""


class OffsetMismatchError(TransferError):
    """Data that does not continue exactly where the held part ends; Stat, then resume."""


class CorruptChunkError(TransferError):
    """A chunk whose CRC-32 does not match its data; it was not written."""


class ContentMismatchError(TransferError):
    """The bytes do not add up to the declared size or sha256; nothing became visible."""


class PolicyRefusedError(TransferError):
    """This node's policy does not allow the transfer."""


class BlobExistsError(TransferError):
    """The blob is complete already; there is nothing to receive."""
