"""CoordinatorService over gRPC: converts messages, calls the pool, maps errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, assert_never

import grpc

from coordinator_node.pool import AckResult, Outgoing, Pool, PoolSession
from coordinator_node.scheduler import SendCancel, SendOffer, replica_problem
from daemon.errors import AccessDeniedError, NotFoundError, RejectedError
from daemon.models import TrustRecord
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import addresses, convert
from daemon.transport.access import current_caller

log = logging.getLogger(__name__)


def _outgoing_to_proto(message: Outgoing) -> coordinator_pb2.CoordinatorMessage:
    if isinstance(message, SendOffer):
        return convert.offer_to_proto(message.task)
    if isinstance(message, SendCancel):
        return convert.cancel_to_proto(message.task_id, message.reason)
    if isinstance(message, AckResult):
        return convert.result_ack_to_proto(message.task_id, message.attempt)
    if isinstance(message, TrustRecord):
        return convert.trust_to_proto(message)
    assert_never(message)


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self, pool: Pool, coordinator_id: str) -> None:
        self._pool = pool
        self._coordinator_id = coordinator_id

    async def VolunteerSession(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.VolunteerMessage],
        context: grpc.aio.ServicerContext[
            coordinator_pb2.VolunteerMessage, coordinator_pb2.CoordinatorMessage
        ],
    ) -> AsyncIterator[coordinator_pb2.CoordinatorMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if first.WhichOneof("kind") != "register":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message of a session must be register"
            )
        caller = current_caller()
        identity = caller.identity
        # What the certificate vouches for, never what the message claims.
        registration = replace(
            convert.registration_from_proto(first.register),
            vouched=identity is not None and identity.vouched,
            owner=(identity.owner or "") if identity is not None else "",
        )
        if registration.volunteer_id != caller.node_id:
            # Ids are public: only the certificate says who this is.
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this session's certificate is for node {caller.node_id}, which may not "
                f"register as {registration.volunteer_id[:40]!r}",
            )
        try:
            session = await self._pool.join(registration)
        except RejectedError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        reader = asyncio.get_running_loop().create_task(
            self._read_session(request_iterator, session)
        )
        try:
            yield coordinator_pb2.CoordinatorMessage(
                welcome=coordinator_pb2.Welcome(
                    coordinator_id=self._coordinator_id,
                    heartbeat_seconds=self._pool.heartbeat_seconds,
                    trust=convert.trust_record_to_proto(session.trust),
                )
            )
            while (outgoing := await session.outbox.get()) is not None:
                yield _outgoing_to_proto(outgoing)
        finally:
            reader.cancel()
            await asyncio.wait([reader])  # what it raised, it logged
            await self._pool.leave(session)

    async def _read_session(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.VolunteerMessage],
        session: PoolSession,
    ) -> None:
        try:
            async for message in request_iterator:
                await self._handle(session, message)
        except (grpc.aio.AioRpcError, grpc.aio.AbortError):
            pass  # it hung up, or sent what the edge refused (the status says what)
        except Exception:
            # Ours, not the volunteer's: end this session loudly, the pool goes on.
            log.exception(
                "volunteer %s: handling its message failed; ending its session",
                session.token.volunteer_id,
            )
        finally:
            session.close()  # end our side too

    async def _handle(
        self, session: PoolSession, message: coordinator_pb2.VolunteerMessage
    ) -> None:
        kind = message.WhichOneof("kind")
        if kind == "heartbeat":
            heartbeat = message.heartbeat
            limits = (
                convert.limits_from_proto(heartbeat.limits)
                if heartbeat.HasField("limits")
                else None
            )
            await self._pool.heartbeat(session, convert.load_from_proto(heartbeat.load), limits)
        elif kind == "accept":
            accept = message.accept
            await self._pool.accepted(session, accept.task_id, accept.attempt, accept.says_started)
        elif kind == "started":
            await self._pool.started(session, message.started.task_id, message.started.attempt)
        elif kind == "decline":
            decline = message.decline
            await self._pool.declined(session, decline.task_id, decline.attempt, decline.reason)
        elif kind == "progress":
            progress = message.progress
            await self._pool.progressed(
                session, progress.task_id, progress.attempt, progress.percent
            )
        elif kind == "result":
            await self._pool.finished(session, convert.task_result_from_proto(message.result))
        elif kind == "goodbye":
            await self._pool.depart(session, message.goodbye.reason or "no reason given")
        else:
            log.warning("volunteer %s sent an unexpected %s", session.token.volunteer_id, kind)

    async def _require_own(
        self, manager_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """A manager acts under its own id only: the one its certificate names."""
        caller = current_caller()
        if manager_id != caller.node_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this call's certificate is for node {caller.node_id}, which may not act "
                f"as manager {manager_id[:40]!r}",
            )

    async def ListVolunteers(
        self,
        request: coordinator_pb2.ListVolunteersRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.ListVolunteersRequest, coordinator_pb2.ListVolunteersReply
        ],
    ) -> coordinator_pb2.ListVolunteersReply:
        return coordinator_pb2.ListVolunteersReply(
            volunteers=[convert.volunteer_to_proto(v) for v in self._pool.volunteers()]
        )

    async def SubmitTasks(
        self,
        request: coordinator_pb2.SubmitTasksRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.SubmitTasksRequest, coordinator_pb2.SubmitTasksReply
        ],
    ) -> coordinator_pb2.SubmitTasksReply:
        await self._require_own(request.manager_id, context)
        # The manager's current address serves every task, old ones included (a resume, a
        # retry after it restarted); an open host is the one its call came from, unless it
        # shares our host: then each volunteer fills in the host it reached us at.
        manager_address = request.manager_address
        if not addresses.valid(manager_address):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"manager_address must be HOST:PORT or :PORT, got {manager_address[:80]!r}",
            )
        seen = addresses.peer_host(context.peer())
        if seen is not None and not addresses.is_loopback(seen):
            manager_address = addresses.filled(manager_address, seen)
        # The manager named in each task is the caller, whatever the spec says: a manager
        # never passes for another (volunteers' allow_managers rest on it).
        specs = [
            replace(
                convert.task_spec_from_proto(task),
                manager_address=manager_address,
                manager_id=request.manager_id,
            )
            for task in request.tasks
        ]
        for spec in specs:
            if (problem := replica_problem(spec)) is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        accepted = await self._pool.submit(request.manager_id, specs)
        return coordinator_pb2.SubmitTasksReply(accepted=accepted)

    async def WatchTasks(
        self,
        request: coordinator_pb2.WatchTasksRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.WatchTasksRequest, coordinator_pb2.TaskEvent
        ],
    ) -> AsyncIterator[coordinator_pb2.TaskEvent]:
        await self._require_own(request.manager_id, context)
        events = self._pool.watch(
            request.manager_id, request.workflow_id, request.after_sequence, request.knows_fetching
        )
        try:
            async for event in events:
                yield convert.task_event_to_proto(event)
        except AccessDeniedError as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))

    async def CancelTasks(
        self,
        request: coordinator_pb2.CancelTasksRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.CancelTasksRequest, coordinator_pb2.CancelTasksReply
        ],
    ) -> coordinator_pb2.CancelTasksReply:
        await self._require_own(request.manager_id, context)
        cancelled = await self._pool.cancel(
            request.manager_id, request.workflow_id, request.task_ids
        )
        return coordinator_pb2.CancelTasksReply(cancelled=cancelled)

    async def ReportVerdicts(
        self,
        request: coordinator_pb2.ReportVerdictsRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.ReportVerdictsRequest, coordinator_pb2.ReportVerdictsReply
        ],
    ) -> coordinator_pb2.ReportVerdictsReply:
        await self._require_own(request.manager_id, context)
        recorded = await self._pool.report_verdicts(
            request.manager_id, [convert.verdict_from_proto(v) for v in request.verdicts]
        )
        return coordinator_pb2.ReportVerdictsReply(recorded=recorded)

    async def ClearTrust(
        self,
        request: coordinator_pb2.ClearTrustRequest,
        context: grpc.aio.ServicerContext[
            coordinator_pb2.ClearTrustRequest, coordinator_pb2.ClearTrustReply
        ],
    ) -> coordinator_pb2.ClearTrustReply:
        try:
            record = await self._pool.clear_trust(request.volunteer_id)
        except NotFoundError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        return coordinator_pb2.ClearTrustReply(trust=convert.trust_record_to_proto(record))
