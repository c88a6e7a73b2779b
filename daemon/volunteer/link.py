"""The volunteer's session with a coordinator: dial out, register, heartbeat, and reconnect.

Volunteers only dial out, so they work behind NAT. The coordinator is the one given with
--coordinator, else one of our cluster found on mDNS; when a session breaks we back off
with jitter and pick again, preferring coordinators that have not just failed us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from daemon.discovery.directory import PeerDirectory
from daemon.discovery.peers import PeerTable
from daemon.errors import RejectedError
from daemon.models import Load, Registration
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.volunteer.backoff import Backoff

log = logging.getLogger(__name__)

# How long a coordinator that failed us is tried only when no other one is known.
FAILED_COOLDOWN_SECONDS = 30.0
DISCOVERY_WAIT_SECONDS = 5.0


class CoordinatorLink:
    def __init__(
        self,
        *,
        explicit_address: str | None,
        directory: PeerDirectory | None,
        registration: Callable[[], Awaitable[Registration]],
        load: Callable[[], Load],
        heartbeat_seconds: float,
        backoff: Backoff | None = None,
    ) -> None:
        if explicit_address is None and directory is None:
            raise ValueError("a volunteer needs --coordinator or mDNS")
        self._explicit_address = explicit_address
        self._directory = directory
        self._registration = registration
        self._load = load
        self._default_heartbeat = heartbeat_seconds
        self._backoff = backoff or Backoff()
        self._failed_at: dict[str, float] = {}
        self.connected_to: str | None = None

    async def run(self) -> None:
        """Keeps a session open until cancelled. Raises RejectedError only when the explicitly
        named coordinator refuses us, since retrying it cannot help."""
        while True:
            address = await self._choose_coordinator()
            try:
                await self._run_session(address)
                log.warning("coordinator %s closed the session", address)
            except RejectedError as error:
                if self._explicit_address is not None:
                    raise
                log.error("coordinator %s refused us: %s", address, error)
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "coordinator %s unreachable (%s)", address, error.details() or error.code().name
                )
            if self.connected_to is not None:  # we were welcomed: the address worked
                self._backoff.reset()
                self._failed_at.pop(address, None)
            else:
                self._failed_at[address] = time.monotonic()
            self.connected_to = None
            delay = self._backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _choose_coordinator(self) -> str:
        if self._explicit_address is not None:
            return self._explicit_address
        assert self._directory is not None
        waiting_logged = False
        while True:
            address = await self._directory.wait_for(self._best_coordinator, DISCOVERY_WAIT_SECONDS)
            if address is not None:
                return address
            if not waiting_logged:
                log.warning("no coordinator of our cluster found on mDNS yet; still looking")
                waiting_logged = True

    def _best_coordinator(self, table: PeerTable) -> str | None:
        now = time.monotonic()
        candidates = [peer.address for peer in table.coordinators()]
        if not candidates:
            return None
        # Coordinators that have not failed recently first, then the one that failed longest ago.
        return min(
            candidates,
            key=lambda a: (
                now - self._failed_at.get(a, -1e9) < FAILED_COOLDOWN_SECONDS,
                self._failed_at.get(a, -1e9),
            ),
        )

    async def _run_session(self, address: str) -> None:
        """One session, until the stream ends; sets `connected_to` once welcomed."""
        outbox: asyncio.Queue[coordinator_pb2.VolunteerMessage] = asyncio.Queue()
        registration = await self._registration()
        outbox.put_nowait(
            coordinator_pb2.VolunteerMessage(register=convert.registration_to_proto(registration))
        )
        channel = open_channel(address)
        heartbeats: asyncio.Task[None] | None = None
        try:
            stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
            call = stub.VolunteerSession(_drain(outbox))
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise RejectedError(error.details() or "refused") from None
                raise
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                return
            interval = first.welcome.heartbeat_seconds or self._default_heartbeat
            self.connected_to = address
            log.info(
                "joined coordinator %s at %s (heartbeat every %.1f s)",
                first.welcome.coordinator_id,
                address,
                interval,
            )
            heartbeats = asyncio.get_running_loop().create_task(
                self._heartbeat_forever(outbox, interval)
            )
            while (message := await call.read()) is not grpc.aio.EOF:
                log.info(
                    "coordinator sent %s; task execution is not enabled on this node yet",
                    message.WhichOneof("kind"),
                )
        finally:
            if heartbeats is not None:
                heartbeats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeats
            await channel.close()

    async def _heartbeat_forever(
        self, outbox: asyncio.Queue[coordinator_pb2.VolunteerMessage], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            load = convert.load_to_proto(self._load())
            outbox.put_nowait(
                coordinator_pb2.VolunteerMessage(heartbeat=coordinator_pb2.Heartbeat(load=load))
            )


async def _drain(
    outbox: asyncio.Queue[coordinator_pb2.VolunteerMessage],
) -> AsyncIterator[coordinator_pb2.VolunteerMessage]:
    while True:
        yield await outbox.get()
