"""Maps the domain's errors to gRPC status codes, and back, in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from daemon.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    NodeError,
    NotFoundError,
    RejectedError,
    UnreachableError,
)

_CODES: list[tuple[type[NodeError], grpc.StatusCode]] = [
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (RejectedError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (AccessDeniedError, grpc.StatusCode.PERMISSION_DENIED),
]
# What a failed TLS handshake looks like from the client's side, and what it means.
_CHECK_CREDENTIAL = (
    "Is this machine's credential for the right cluster? (`vcnode login TOKEN` for a person, "
    "`--token` for a node)"
)
_HANDSHAKE_FAILURES = (
    (
        "Hostname Verification",
        "its certificate is of this cluster but not of the {what} expected there (another "
        "node, or another role, holds that address now)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "its certificate is not from this cluster's CA. " + _CHECK_CREDENTIAL,
    ),
    ("WRONG_VERSION_NUMBER", "it does not speak TLS (an older vcnode, or not a vcnode node)"),
    (
        "Socket closed",
        "it closed the connection: it may not take this cluster's certificates. "
        + _CHECK_CREDENTIAL,
    ),
    ("ALERT", "it refused our certificate: it is not from its cluster's CA. " + _CHECK_CREDENTIAL),
)

R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


def status_for(error: NodeError) -> grpc.StatusCode:
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def maps_errors(handler: Handler[R]) -> Handler[R]:
    """Turns a NodeError raised by a unary servicer method into a status with its message."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await handler(self, request, context)
        except NodeError as error:
            await context.abort(status_for(error), str(error))
            raise  # unreachable: abort raises

    return wrapper


def error_from_rpc(error: grpc.aio.AioRpcError, address: str, what: str) -> NodeError:
    """A client-side view of a failed call, with what to do next."""
    code = error.code()
    detail = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        for marker, meaning in _HANDSHAKE_FAILURES:
            if marker in detail:
                return AccessDeniedError(
                    f"the node at {address} is not a {what} we may talk to: "
                    f"{meaning.format(what=what)}"
                )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnreachableError(f"no {what} answered at {address} ({detail})")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AccessDeniedError(f"the {what} at {address} refused: {detail}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInputError(detail)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return RejectedError(detail)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NodeError(f"the node at {address} is not a {what}: {detail}")
    return NodeError(f"{what} at {address} failed: {detail}")
