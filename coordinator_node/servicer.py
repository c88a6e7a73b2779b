"""CoordinatorService over gRPC: converts messages, calls the pool, maps errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from coordinator_node.pool import Pool, PoolSession
from daemon.errors import RejectedError
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.errors import abort_not_available

log = logging.getLogger(__name__)


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self, pool: Pool, coordinator_id: str) -> None:
        self._pool = pool
        self._coordinator_id = coordinator_id

    async def VolunteerSession(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.VolunteerMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[coordinator_pb2.CoordinatorMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if first.WhichOneof("kind") != "register":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message of a session must be register"
            )
        try:
            session = await self._pool.join(convert.registration_from_proto(first.register))
        except RejectedError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        try:
            yield coordinator_pb2.CoordinatorMessage(
                welcome=coordinator_pb2.Welcome(
                    coordinator_id=self._coordinator_id,
                    heartbeat_seconds=self._pool.heartbeat_seconds,
                )
            )
            reader = asyncio.get_running_loop().create_task(
                self._read_session(request_iterator, session)
            )
            closed = asyncio.get_running_loop().create_task(session.closed.wait())
            try:
                await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, closed):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        await task
        finally:
            await self._pool.leave(session)

    async def _read_session(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.VolunteerMessage],
        session: PoolSession,
    ) -> None:
        async for message in request_iterator:
            kind = message.WhichOneof("kind")
            if kind == "heartbeat":
                await self._pool.heartbeat(session, convert.load_from_proto(message.heartbeat.load))
            else:
                log.warning(
                    "volunteer %s sent %s, which this coordinator does not handle yet",
                    session.token.volunteer_id,
                    kind,
                )

    async def ListVolunteers(
        self,
        request: coordinator_pb2.ListVolunteersRequest,
        context: grpc.aio.ServicerContext,
    ) -> coordinator_pb2.ListVolunteersReply:
        return coordinator_pb2.ListVolunteersReply(
            volunteers=[convert.volunteer_to_proto(v) for v in self._pool.volunteers()]
        )

    async def SubmitTasks(
        self, request: coordinator_pb2.SubmitTasksRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.SubmitTasksReply:
        await abort_not_available(context, "task submission")
        raise AssertionError("unreachable: abort raises")

    async def WatchTasks(
        self, request: coordinator_pb2.WatchTasksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[coordinator_pb2.TaskEvent]:
        await abort_not_available(context, "watching tasks")
        yield coordinator_pb2.TaskEvent()  # unreachable: makes this a generator, as gRPC expects

    async def CancelTasks(
        self, request: coordinator_pb2.CancelTasksRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.CancelTasksReply:
        await abort_not_available(context, "cancelling tasks")
        raise AssertionError("unreachable: abort raises")
