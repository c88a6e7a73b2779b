"""The edge of every server: each call is admitted by the access policy (who may call what,
daemon/transport/access.py) before anything else happens, then each request message is held
to the caps (daemon/transport/caps.py). Servicers see only admitted calls within caps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from daemon.transport.access import AccessPolicy, set_current_caller
from daemon.transport.caps import excess

Behaviour = Callable[..., Any]


async def _refuse_if_over(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    # The transfer service's chunks are raw bytes, not messages: their own checks cap them.
    if isinstance(request, Message) and (problem := excess(request)) is not None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"refused: {problem}")


Admit = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def _checked_unary(behaviour: Behaviour, admit: Admit) -> Behaviour:
    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await admit(context)
        await _refuse_if_over(request, context)
        return await behaviour(request, context)

    return checked


def _checked_unary_stream(behaviour: Behaviour, admit: Admit) -> Behaviour:
    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await admit(context)
        await _refuse_if_over(request, context)
        async for reply in behaviour(request, context):
            yield reply

    return checked


async def _each_checked(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    async for request in requests:
        await _refuse_if_over(request, context)
        yield request


# grpc calls async generator functions and coroutine functions differently: each kind of
# behaviour keeps its kind.
def _checked_stream_unary(behaviour: Behaviour, admit: Admit) -> Behaviour:
    async def checked(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await admit(context)
        return await behaviour(_each_checked(requests, context), context)

    return checked


def _checked_stream_stream(behaviour: Behaviour, admit: Admit) -> Behaviour:
    async def checked(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await admit(context)
        async for reply in behaviour(_each_checked(requests, context), context):
            yield reply

    return checked


# What grpc calls each kind of method handler, how to make one, and how to check its requests.
_KINDS: tuple[
    tuple[
        str,
        Callable[..., grpc.RpcMethodHandler[Any, Any]],
        Callable[[Behaviour, Admit], Behaviour],
    ],
    ...,
] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _checked_unary),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _checked_unary_stream),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _checked_stream_unary),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _checked_stream_stream),
)


class Edge(grpc.aio.ServerInterceptor):
    """Refuses a call its caller may not make (UNAUTHENTICATED or PERMISSION_DENIED), and
    every request message over a cap (INVALID_ARGUMENT, see `caps.excess`)."""

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        policy = self.policy

        async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            caller = policy.caller(context)
            refusal = policy.refusal(method, caller)
            if refusal is not None:
                await context.abort(*refusal)
            # The servicer runs in this coroutine's context next: current_caller() says who.
            set_current_caller(caller)

        for kind, make, check in _KINDS:
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return make(
                    check(behaviour, admit),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler
