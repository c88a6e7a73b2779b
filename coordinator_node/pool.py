"""The coordinator's I/O shell: runs the registry state machine, persists what it changes,
and ends volunteer sessions. The servicer calls in; nothing here knows about protobuf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from coordinator_node.registry import SessionToken, VolunteerRegistry, registration_problem
from coordinator_node.store import CoordinatorStore
from daemon.errors import RejectedError
from daemon.models import Load, Registration, Volunteer, VolunteerState

log = logging.getLogger(__name__)


@dataclass
class PoolSession:
    token: SessionToken
    # Set when the coordinator ends the session (replaced by a newer one, or shutting down).
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Pool:
    def __init__(
        self,
        store: CoordinatorStore,
        registry: VolunteerRegistry,
        cluster: str,
        protocol_version: int,
    ) -> None:
        self._store = store
        self._registry = registry
        self._cluster = cluster
        self._protocol_version = protocol_version
        self._sessions: dict[str, PoolSession] = {}
        self._expiry_task: asyncio.Task[None] | None = None

    @property
    def heartbeat_seconds(self) -> float:
        return self._registry.heartbeat_seconds

    async def start(self) -> None:
        known = await self._store.load_volunteers()
        self._registry.restore(known, time.time())
        online = sum(v.state is VolunteerState.ONLINE for v in known)
        log.info("registry restored: %d volunteers known, %d were online", len(known), online)
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire_forever())

    async def join(self, registration: Registration) -> PoolSession:
        problem = registration_problem(registration, self._cluster, self._protocol_version)
        if problem:
            log.warning("refused volunteer %s: %s", registration.volunteer_id, problem)
            raise RejectedError(problem)
        token, volunteer = self._registry.connect(registration, time.time())
        replaced = self._sessions.get(token.volunteer_id)
        if replaced is not None:
            replaced.closed.set()
        session = PoolSession(token)
        self._sessions[token.volunteer_id] = session
        await self._store.save_volunteers([volunteer], event="online")
        log.info("volunteer %s (%s) online", volunteer.volunteer_id, volunteer.hostname)
        return session

    async def heartbeat(self, session: PoolSession, load: Load) -> None:
        previous = self._registry.get(session.token.volunteer_id)
        volunteer = self._registry.heartbeat(session.token, load, time.time())
        if volunteer is None:
            return
        came_back = previous is not None and previous.state is VolunteerState.LOST
        await self._store.save_volunteers([volunteer], event="online" if came_back else None)

    async def leave(self, session: PoolSession) -> None:
        volunteer = self._registry.disconnect(session.token, time.time())
        if self._sessions.get(session.token.volunteer_id) is session:
            del self._sessions[session.token.volunteer_id]
        if volunteer is not None:
            log.info("volunteer %s disconnected", volunteer.volunteer_id)

    def volunteers(self) -> list[Volunteer]:
        return self._registry.volunteers()

    async def _expire_forever(self) -> None:
        # Checking four times per interval bounds how late a `lost` can be to 1/4 interval.
        while True:
            await asyncio.sleep(self._registry.heartbeat_seconds / 4)
            lost = self._registry.expire(time.time())
            if lost:
                for volunteer in lost:
                    log.warning(
                        "volunteer %s (%s) lost: no word for %.1f s",
                        volunteer.volunteer_id,
                        volunteer.hostname,
                        self._registry.lost_after_seconds,
                    )
                await self._store.save_volunteers(lost, event="lost")

    async def stop(self) -> None:
        for session in self._sessions.values():
            session.closed.set()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
