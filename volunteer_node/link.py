"""The volunteer's session with a coordinator: dial out, register, heartbeat, and reconnect.

Volunteers only dial out, so they work behind NAT. The coordinator is the one given with
--coordinator, else one of our cluster found on mDNS; when a session breaks we back off
with jitter and pick again, preferring coordinators that have not just failed us.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

import grpc

from daemon.backoff import Backoff
from daemon.discovery.directory import PeerDirectory
from daemon.discovery.finder import CoordinatorFinder
from daemon.errors import AccessDeniedError, RejectedError
from daemon.models import Load, OwnerLimits, Registration, TaskResult, TaskSpec, TrustRecord
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.status_board import StatusBoard
from daemon.supervision import run_together
from daemon.transport import addresses, convert
from daemon.transport.caps import excess
from daemon.transport.channels import open_channel
from daemon.transport.errors import error_from_rpc
from daemon.trust.credentials import LiveCredential
from daemon.trust.pki import role_name

log = logging.getLogger(__name__)


class SessionHandler(Protocol):
    """What the volunteer does with what its coordinator says."""

    async def on_connected(self) -> None:
        """Welcomed: a good moment to re-send results the coordinator has not acknowledged."""

    async def on_offer(self, task: TaskSpec) -> None: ...

    async def on_cancel(self, task_id: str, reason: str) -> None: ...

    async def on_result_ack(self, task_id: str, attempt: int) -> None: ...


class CoordinatorLink:
    def __init__(
        self,
        *,
        explicit_address: str | None,
        directory: PeerDirectory | None,
        credential: LiveCredential,
        registration: Callable[[], Awaitable[Registration]],
        load: Callable[[], Load],
        handler: SessionHandler,
        heartbeat_seconds: float,
        backoff: Backoff | None = None,
        board: StatusBoard | None = None,
        limits: Callable[[], OwnerLimits] | None = None,
    ) -> None:
        """`limits`: the owner's limits now; heartbeats carry them once they differ from
        those the session registered with."""
        # Where the owner's `vcnode status` reads our coordinator and its trust in us.
        self.board = board or StatusBoard()
        self._finder = CoordinatorFinder(explicit_address, directory)
        self._credential = credential
        self._registration = registration
        self._load = load
        self._limits = limits
        self._registered_limits: OwnerLimits | None = None
        self._handler = handler
        self._default_heartbeat = heartbeat_seconds
        # Outlives sessions: what could not be sent before a stream broke goes on the next.
        self._outgoing: deque[coordinator_pb2.VolunteerMessage] = deque()
        # Set when a message is queued or a session ends: wakes the session's sender.
        self._wakeup = asyncio.Event()
        self._backoff = backoff or Backoff()
        self.connected_to: str | None = None
        self._leaving = False
        # Set when the open session ends (None while there is none).
        self._session_ended: asyncio.Event | None = None

    async def run(self) -> None:
        """Keeps a session open until cancelled. Raises RejectedError only when the explicitly
        named coordinator refuses us, since retrying it cannot help."""
        while not self._leaving:
            address = await self._finder.next_address()
            try:
                await self._run_session(address)
                if self._leaving:
                    return
                log.warning("coordinator %s closed the session", address)
            except RejectedError as error:
                if self._finder.explicit_address is not None:
                    raise
                log.error("coordinator %s refused us: %s", address, error)
            except grpc.aio.AioRpcError as error:
                seen = error_from_rpc(error, address, "coordinator")
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    log.error("coordinator %s refused us: %s", address, error.details())
                elif isinstance(seen, AccessDeniedError):
                    # mDNS is but a hint: whoever cannot prove our cluster is never followed.
                    log.warning("coordinator %s skipped: untrusted (%s)", address, seen)
                else:
                    log.warning(
                        "coordinator %s unreachable (%s)",
                        address,
                        error.details() or error.code().name,
                    )
            if self.connected_to is not None:  # we were welcomed: the address worked
                self._backoff.reset()
                self._finder.worked(address)
            else:
                self._finder.failed(address)
            self.connected_to = None
            delay = self._backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    # --- what the volunteer tells its coordinator ----------------------------------------

    def send_accept(self, task_id: str, attempt: int) -> None:
        # The task is `fetching` until send_started says its container started.
        self._send(
            accept=coordinator_pb2.TaskAccept(task_id=task_id, attempt=attempt, says_started=True)
        )

    def send_started(self, task_id: str, attempt: int) -> None:
        self._send(started=coordinator_pb2.TaskStarted(task_id=task_id, attempt=attempt))

    def send_decline(self, task_id: str, attempt: int, reason: str) -> None:
        self._send(
            decline=coordinator_pb2.TaskDecline(task_id=task_id, attempt=attempt, reason=reason)
        )

    def send_progress(self, task_id: str, attempt: int, percent: float) -> None:
        self._send(
            progress=coordinator_pb2.TaskProgress(task_id=task_id, attempt=attempt, percent=percent)
        )

    def send_result(self, result: TaskResult) -> None:
        message = convert.task_result_to_proto(result)
        if (problem := excess(message)) is not None:
            # The coordinator's edge would refuse it in every session: say why instead.
            refused = replace(
                result,
                exit_code=result.exit_code or -1,
                error=f"its result is too large to report: {problem}",
                outputs=(),
                inline_outputs=(),
            )
            message = convert.task_result_to_proto(refused)
        self._send(result=message)

    async def leave(self, reason: str) -> None:
        """Says goodbye, then ends our side of the session and reconnects no more; returns
        once the coordinator has closed the session (at once when none is open)."""
        self._leaving = True
        ended = self._session_ended
        if ended is None or self.connected_to is None:
            return
        self._send(goodbye=coordinator_pb2.Goodbye(reason=reason))
        await ended.wait()

    def _send(self, **kind: Any) -> None:
        self._outgoing.append(coordinator_pb2.VolunteerMessage(**kind))
        self._wakeup.set()

    async def _drain(
        self, first: coordinator_pb2.VolunteerMessage, over: Callable[[], bool]
    ) -> AsyncIterator[coordinator_pb2.VolunteerMessage]:
        """`first`, then what is queued, while the stream is open (`over()` false). grpc
        goes on pulling from this generator after the stream ended and drops what it
        gets, so a message is taken off the queue only for an open stream; else it stays
        queued for the next session. (The first word queued after a stream broke, such as
        that a task started, said again on reconnecting, was lost that way.) Heartbeats
        queued while no session was open are stale (their load, the limits they carry):
        they are dropped, and the session sends a fresh one as it opens."""
        self._outgoing = deque(m for m in self._outgoing if m.WhichOneof("kind") != "heartbeat")
        yield first
        while True:
            while not self._outgoing and not over():
                self._wakeup.clear()
                await self._wakeup.wait()
            if over():
                return
            message = self._outgoing.popleft()
            yield message
            if message.WhichOneof("kind") == "goodbye":
                return  # the last word: the coordinator ends the session in turn

    # --- sessions ---------------------------------------------------------------------------

    async def _run_session(self, address: str) -> None:
        """One session, until the stream ends; sets `connected_to` once welcomed."""
        registration = await self._registration()
        self._registered_limits = registration.limits
        register = coordinator_pb2.VolunteerMessage(
            register=convert.registration_to_proto(registration)
        )
        # Only a coordinator of our cluster passes the handshake: mDNS is but a hint.
        channel = open_channel(address, self._credential.current, role_name("coordinator"))
        self._session_ended = asyncio.Event()
        try:
            stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
            # The sender asks the call itself whether it ended (its `over`): our side hears
            # of it only later.
            call = stub.VolunteerSession(self._drain(register, lambda: call.done()))
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise RejectedError(error.details() or "refused") from None
                raise
            # read() gives a CoordinatorMessage, or grpc.aio.EOF once the stream ended.
            if (
                not isinstance(first, coordinator_pb2.CoordinatorMessage)
                or first.WhichOneof("kind") != "welcome"
            ):
                return
            interval = first.welcome.heartbeat_seconds or self._default_heartbeat
            self.connected_to = self.board.coordinator = address
            if first.welcome.HasField("trust"):
                self._trusted(convert.trust_record_from_proto(first.welcome.trust))
            log.info(
                "joined coordinator %s at %s (heartbeat every %.1f s)",
                first.welcome.coordinator_id,
                address,
                interval,
            )
            await self._handler.on_connected()
            await run_together(self._read_forever(call), self._heartbeat_forever(interval))
        finally:
            self.board.coordinator = ""
            await channel.close()
            self._wakeup.set()  # the sender of this session sees it is over, and ends
            self._session_ended.set()
            self._session_ended = None

    async def _read_forever(
        self,
        call: grpc.aio.StreamStreamCall[
            coordinator_pb2.VolunteerMessage, coordinator_pb2.CoordinatorMessage
        ],
    ) -> None:
        while isinstance(message := await call.read(), coordinator_pb2.CoordinatorMessage):
            await self._dispatch(message)

    async def _dispatch(self, message: coordinator_pb2.CoordinatorMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "offer":
            task = convert.task_spec_from_proto(message.offer.task)
            if not addresses.valid(task.manager_address):  # a coordinator's bug: not ours
                reason = f"its manager address {task.manager_address[:80]!r} is not HOST:PORT"
                self.send_decline(task.task_id, task.attempt, reason)
                return
            if not task.manager_id:  # an older coordinator's: we would not know whom to trust
                self.send_decline(task.task_id, task.attempt, "its offer names no manager")
                return
            if self.connected_to is not None:  # a manager on our coordinator's host
                coordinator_host, _ = addresses.split(self.connected_to)
                task = replace(
                    task, manager_address=addresses.filled(task.manager_address, coordinator_host)
                )
            await self._handler.on_offer(task)
        elif kind == "cancel":
            await self._handler.on_cancel(message.cancel.task_id, message.cancel.reason)
        elif kind == "result_ack":
            ack = message.result_ack
            await self._handler.on_result_ack(ack.task_id, ack.attempt)
        elif kind == "trust":
            self._trusted(convert.trust_record_from_proto(message.trust))
        else:
            log.warning("coordinator sent an unexpected %s", kind)

    def _trusted(self, record: TrustRecord) -> None:
        """The coordinator's word on our results, for the owner to see."""
        was = self.board.trust
        self.board.trust = record
        if record.blocklisted and (was is None or not was.blocklisted):
            log.warning(
                "the coordinator blocklisted this volunteer: %s. It gets no tasks until an "
                "admin clears it (vcnode volunteers --clear-trust ID); check this machine's "
                "memory and Docker images",
                record.blocklist_reason,
            )

    def send_heartbeat(self) -> None:
        heartbeat = coordinator_pb2.Heartbeat(load=convert.load_to_proto(self._load()))
        if self._limits is not None and (limits := self._limits()) != self._registered_limits:
            # The owner changed them since we registered: the coordinator matches on them.
            heartbeat.limits.CopyFrom(convert.limits_to_proto(limits))
        self._send(heartbeat=heartbeat)

    async def _heartbeat_forever(self, interval: float) -> None:
        # At once: whether we take tasks (paused, draining) is in it.
        self.send_heartbeat()
        while True:
            await asyncio.sleep(interval)
            self.send_heartbeat()
