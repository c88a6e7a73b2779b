"""Maps the domain's errors to gRPC status codes, and back, in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from daemon.errors import (
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
]

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
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnreachableError(f"no {what} answered at {address} ({detail})")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInputError(detail)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return RejectedError(detail)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NodeError(f"the node at {address} is not a {what}: {detail}")
    return NodeError(f"{what} at {address} failed: {detail}")
