"""The coordinator's I/O shell: feeds the registry and scheduler state machines, persists
what they change, delivers offers and cancels to volunteer sessions and events to managers.
The servicer calls in; nothing here knows about protobuf."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from coordinator_node.registry import SessionToken, VolunteerRegistry, registration_problem
from coordinator_node.scheduler import (
    Candidate,
    Instruction,
    Publish,
    SaveTask,
    ScheduledTask,
    Scheduler,
    SendCancel,
    SendOffer,
)
from coordinator_node.store import CoordinatorStore
from coordinator_node.trust_records import TrustBook
from daemon import inline
from daemon.errors import AccessDeniedError, NotFoundError, RejectedError
from daemon.models import (
    EventKind,
    Load,
    OwnerLimits,
    Registration,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TrustRecord,
    Verdict,
    Volunteer,
    VolunteerState,
)
from daemon.supervision import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AckResult:
    """Tells a volunteer its result arrived, so it stops keeping it for re-sending."""

    task_id: str
    attempt: int


Outgoing = SendOffer | SendCancel | AckResult | TrustRecord
# A stimulus for the scheduler, given the time it happens.
Stimulus = Callable[[float], list[Instruction]]


@dataclass
class PoolSession:
    token: SessionToken
    # Its trust record as the session opened (told in the welcome).
    trust: TrustRecord = field(default_factory=TrustRecord)
    # What to send the volunteer; None ends the session.
    outbox: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)

    def close(self) -> None:
        self.outbox.put_nowait(None)


class Pool:
    def __init__(
        self,
        store: CoordinatorStore,
        registry: VolunteerRegistry,
        scheduler: Scheduler,
        cluster: str,
        protocol_version: int,
        supervisor: Supervisor,
        trust: TrustBook | None = None,
    ) -> None:
        self._store = store
        self._supervisor = supervisor
        self._registry = registry
        self._scheduler = scheduler
        self._trust = trust or TrustBook()
        self._cluster = cluster
        self._protocol_version = protocol_version
        self._sessions: dict[str, PoolSession] = {}
        # By manager id; None in a queue ends that watch (its manager was revoked).
        self._watchers: dict[str, set[asyncio.Queue[TaskEvent | None]]] = {}
        # One stimulus at a time: the state machines are not re-entrant, and saves must
        # reach the store in the order the changes happened.
        self._lock = asyncio.Lock()
        self._maintenance: asyncio.Task[None] | None = None
        # Told every task event as it is published (the dashboard's live view and metrics);
        # a listener must not block.
        self.listeners: list[Callable[[TaskEvent], None]] = []

    @property
    def heartbeat_seconds(self) -> float:
        return self._registry.heartbeat_seconds

    async def start(self) -> None:
        known = await self._store.load_volunteers()
        self._registry.restore(known, time.time())
        tasks, ended = await self._store.load_tasks()
        going = {(t.manager_id, t.spec.replica_of) for t in tasks if t.spec.replica_of}
        self._scheduler.restore(tasks, ended, await self._store.ended_copies(going))
        self._trust.restore(await self._store.load_trust())
        online = sum(v.state is VolunteerState.ONLINE for v in known)
        log.info(
            "restored %d volunteers (%d were online) and %d tasks (%d unfinished)",
            len(known),
            online,
            len(tasks) + len(ended),
            len(tasks),
        )
        self._maintenance = self._supervisor.spawn(self._maintain_forever(), "pool maintenance")

    # --- volunteers -------------------------------------------------------------------------

    async def join(self, registration: Registration) -> PoolSession:
        problem = registration_problem(registration, self._cluster, self._protocol_version)
        if problem:
            log.warning("refused volunteer %s: %s", registration.volunteer_id, problem)
            raise RejectedError(problem)
        async with self._lock:
            now = time.time()
            token, volunteer = self._registry.connect(registration, now)
            replaced = self._sessions.get(token.volunteer_id)
            if replaced is not None:
                replaced.close()
            session = PoolSession(token, self._trust.get(token.volunteer_id))
            self._sessions[token.volunteer_id] = session
            await self._store.save_volunteers([volunteer], event="online")
            if (
                enrolled := self._trust.enrol(token.volunteer_id, registration.vouched)
            ) is not None:
                await self._store.save_trust([(token.volunteer_id, enrolled)])
            session.trust = self._trust.get(token.volunteer_id)
            log.info("volunteer %s (%s) online", volunteer.volunteer_id, volunteer.hostname)
            await self._admit(volunteer, registration.running_task_ids, now)
        return session

    async def _admit(
        self, volunteer: Volunteer, running_task_ids: Iterable[str], now: float
    ) -> None:
        """Makes an online volunteer a candidate for offers, unless it is blocklisted."""
        if self._trust.is_blocklisted(volunteer.volunteer_id):
            log.info("volunteer %s is blocklisted: offered nothing", volunteer.volunteer_id)
            return
        await self._execute(
            self._scheduler.volunteer_joined(self._candidate(volunteer), running_task_ids, now)
        )

    async def heartbeat(
        self, session: PoolSession, load: Load, limits: OwnerLimits | None = None
    ) -> None:
        """`limits`: the owner's, changed since the session began (a config reload)."""
        async with self._lock:
            previous = self._registry.get(session.token.volunteer_id)
            now = time.time()
            volunteer = self._registry.heartbeat(session.token, load, now, limits)
            if volunteer is None:
                return
            came_back = previous is not None and previous.state is not VolunteerState.ONLINE
            await self._store.save_volunteers([volunteer], event="online" if came_back else None)
            if came_back:
                log.info("volunteer %s is back", volunteer.volunteer_id)
                running = self._scheduler.running_on(volunteer.volunteer_id)
                await self._admit(volunteer, running, now)
            elif previous is not None and (
                previous.load.unavailable != load.unavailable or previous.limits != volunteer.limits
            ):
                log.info(
                    "volunteer %s %s%s",
                    volunteer.volunteer_id,
                    f"takes no tasks: {load.unavailable}" if load.unavailable else "takes tasks",
                    "; its owner changed its limits" if previous.limits != volunteer.limits else "",
                )
                if not self._trust.is_blocklisted(volunteer.volunteer_id):
                    candidate = self._candidate(volunteer)
                    await self._execute(self._scheduler.volunteer_changed(candidate, now))

    async def depart(self, session: PoolSession, reason: str) -> None:
        """The volunteer said goodbye: its tasks are offered elsewhere now."""
        async with self._lock:
            volunteer = self._registry.depart(session.token)
            if volunteer is None:
                return  # a replaced session
            await self._store.save_volunteers([volunteer], event="left")
            log.info("volunteer %s left: %s", volunteer.volunteer_id, reason)
            await self._execute(
                self._scheduler.volunteer_left(volunteer.volunteer_id, reason, time.time())
            )

    async def expel(self, node_ids: Iterable[str]) -> None:
        """Ends the volunteer sessions, the managers' watches and the managers' tasks of
        nodes that may no longer be members (revoked). The watches end first: a revoked
        manager hears nothing more, not even of its tasks' cancellation."""
        node_ids = list(node_ids)
        for node_id in node_ids:
            session = self._sessions.get(node_id)
            if session is not None:
                log.info("volunteer %s revoked: ending its session", node_id)
                session.close()
            for queue in self._watchers.get(node_id, ()):
                log.info("manager %s revoked: ending its watch", node_id)
                queue.put_nowait(None)
        async with self._lock:
            now = time.time()
            for node_id in node_ids:
                await self._execute(
                    self._scheduler.cancel_all_of(node_id, "its manager was revoked", now)
                )

    async def leave(self, session: PoolSession) -> None:
        async with self._lock:
            now = time.time()
            volunteer = self._registry.disconnect(session.token, now)
            if self._sessions.get(session.token.volunteer_id) is session:
                del self._sessions[session.token.volunteer_id]
            if volunteer is not None:
                log.info("volunteer %s disconnected", volunteer.volunteer_id)
                await self._execute(
                    self._scheduler.volunteer_disconnected(volunteer.volunteer_id, now)
                )

    def waiting_tasks(self) -> int:
        return self._scheduler.waiting()

    def volunteers(self) -> list[Volunteer]:
        return [
            replace(volunteer, trust=self._trust.get(volunteer.volunteer_id))
            for volunteer in self._registry.volunteers()
        ]

    # --- trust in results -----------------------------------------------------------------

    async def report_verdicts(self, manager_id: str, verdicts: Sequence[Verdict]) -> int:
        """Moves the trust records of the volunteers the verdicts name; counts only those
        about a completed attempt of this manager's, each once. Returns how many counted."""
        async with self._lock:
            now = time.time()
            await self._execute(
                self._scheduler.judged([(v.volunteer_id, v.task_id) for v in verdicts], now)
            )
            checked = [v for v in verdicts if v.checked]
            if not checked:
                return 0
            new = await self._store.matching_verdicts(manager_id, checked)
            if not new:
                return 0
            changed: dict[str, TrustRecord] = {}
            barred: dict[str, str] = {}
            for verdict in new:
                vid = verdict.volunteer_id
                was = changed.get(vid) or self._trust.get(vid)
                record = self._trust.judged(was, verdict.agreed, verdict.task_id, now)
                changed[vid] = record
                if record.blocklisted and not was.blocklisted:
                    barred[vid] = record.blocklist_reason
            # Saved together, then believed: a crash between leaves both or neither.
            await self._store.save_verdicts(manager_id, new, list(changed.items()))
            for vid, record in changed.items():
                self._trust.set(vid, record)
            for vid, record in changed.items():
                if (session := self._sessions.get(vid)) is not None:
                    session.outbox.put_nowait(record)
            for vid, reason in barred.items():
                log.warning("volunteer %s blocklisted: %s", vid, reason)
                await self._execute(self._scheduler.volunteer_barred(vid, "blocklisted", now))
            for vid in changed.keys() - barred.keys():
                if (volunteer := self._registry.get(vid)) is not None:
                    candidate = self._candidate(volunteer)
                    await self._execute(self._scheduler.volunteer_changed(candidate, now))
        return len(new)

    async def clear_trust(self, volunteer_id: str) -> TrustRecord:
        """An admin's fresh start for a volunteer: offered tasks again if it is online."""
        async with self._lock:
            if self._registry.get(volunteer_id) is None:
                raise NotFoundError(f"no volunteer {volunteer_id!r} in this pool")
            was = self._trust.get(volunteer_id)
            record = self._trust.clear(volunteer_id)
            await self._store.save_trust([(volunteer_id, record)])
            log.info("volunteer %s: trust record cleared", volunteer_id)
            session = self._sessions.get(volunteer_id)
            volunteer = self._registry.get(volunteer_id)
            if session is not None:
                session.outbox.put_nowait(record)
            if was.blocklisted and volunteer is not None and volunteer.connected:
                await self._admit(volunteer, self._scheduler.running_on(volunteer_id), time.time())
        return record

    # --- what volunteers report -----------------------------------------------------------

    async def accepted(
        self, session: PoolSession, task_id: str, attempt: int, says_started: bool = False
    ) -> None:
        vid = session.token.volunteer_id
        await self._stimulus(
            session,
            lambda now: self._scheduler.accepted(
                vid, task_id, attempt, now, says_started=says_started
            ),
        )

    async def started(self, session: PoolSession, task_id: str, attempt: int) -> None:
        vid = session.token.volunteer_id
        await self._stimulus(
            session, lambda now: self._scheduler.started(vid, task_id, attempt, now)
        )

    async def declined(self, session: PoolSession, task_id: str, attempt: int, reason: str) -> None:
        vid = session.token.volunteer_id
        log.info("volunteer %s declined %s: %s", vid, task_id, reason)
        await self._stimulus(
            session, lambda now: self._scheduler.declined(vid, task_id, attempt, reason, now)
        )

    async def progressed(
        self, session: PoolSession, task_id: str, attempt: int, percent: float
    ) -> None:
        vid = session.token.volunteer_id
        await self._stimulus(
            session, lambda now: self._scheduler.progressed(vid, task_id, attempt, percent, now)
        )

    async def finished(self, session: PoolSession, result: TaskResult) -> None:
        vid = session.token.volunteer_id
        # Kept until the manager has them: checked first.
        result = inline.with_checked_outputs(result)
        await self._stimulus(session, lambda now: self._scheduler.finished(vid, result, now))
        # Acknowledged even when it did not count (late, duplicate): it is safely here.
        session.outbox.put_nowait(AckResult(result.task_id, result.attempt))

    async def _stimulus(self, session: PoolSession, handle: Stimulus) -> None:
        async with self._lock:
            if not self._registry.is_current(session.token):
                return  # a replaced session: its word no longer counts
            await self._execute(handle(time.time()))

    # --- what managers ask ----------------------------------------------------------------

    async def submit(self, manager_id: str, specs: Sequence[TaskSpec]) -> int:
        """Returns how many tasks this queued: new ones and later runs of ended ones."""
        async with self._lock:
            instructions = self._scheduler.submit(manager_id, specs, time.time())
            await self._execute(instructions)
        return sum(isinstance(i, SaveTask) and i.new_spec for i in instructions)

    async def cancel(self, manager_id: str, workflow_id: str, task_ids: Iterable[str]) -> int:
        async with self._lock:
            instructions = self._scheduler.cancel(manager_id, workflow_id, task_ids, time.time())
            await self._execute(instructions)
        return sum(
            isinstance(i, Publish) and i.event.kind is EventKind.CANCELLED for i in instructions
        )

    async def watch(
        self, manager_id: str, workflow_id: str, after_sequence: int, knows_fetching: bool = True
    ) -> AsyncIterator[TaskEvent]:
        """Stored events after `after_sequence`, then live ones, with no gap and no repeat.
        Raises AccessDeniedError when its manager is revoked meanwhile. A manager that does
        not know `fetching` hears `running` instead: it skips kinds it does not know, and
        would refuse the volunteer the task's inputs."""
        queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        self._watchers.setdefault(manager_id, set()).add(queue)
        try:
            last = after_sequence
            for stored in await self._store.task_events(manager_id, workflow_id, after_sequence):
                yield stored if knows_fetching else _without_fetching(stored)
                last = stored.sequence
            while True:
                event = await queue.get()
                if event is None:
                    raise AccessDeniedError(f"manager {manager_id} was revoked from this cluster")
                if event.sequence <= last or workflow_id not in ("", event.workflow_id):
                    continue
                yield event if knows_fetching else _without_fetching(event)
                last = event.sequence
        finally:
            self._watchers[manager_id].discard(queue)

    # --- the shell ------------------------------------------------------------------------

    async def _execute(self, instructions: Sequence[Instruction]) -> None:
        """Saves first, then tells: a crash in between loses a message, never a state."""
        saved: dict[str, ScheduledTask] = {}
        new_specs: set[str] = set()
        for instruction in instructions:
            if isinstance(instruction, SaveTask):
                saved[instruction.task.spec.task_id] = instruction.task
                if instruction.new_spec:
                    new_specs.add(instruction.task.spec.task_id)
        await self._store.save_tasks(list(saved.values()), new_specs)
        published = await self._store.append_events(
            [
                (i.manager_id, self._with_trust(i.event))
                for i in instructions
                if isinstance(i, Publish)
            ]
        )
        for event, instruction in zip(
            published, (i for i in instructions if isinstance(i, Publish)), strict=True
        ):
            for queue in self._watchers.get(instruction.manager_id, ()):
                queue.put_nowait(event)
            for listener in self.listeners:
                listener(event)
        for instruction in instructions:
            if isinstance(instruction, SendOffer | SendCancel):
                session = self._sessions.get(instruction.volunteer_id)
                if session is not None:
                    session.outbox.put_nowait(instruction)

    def _candidate(self, volunteer: Volunteer) -> Candidate:
        trust = self._trust.get(volunteer.volunteer_id)
        return Candidate(
            volunteer.volunteer_id,
            volunteer.resources,
            volunteer.limits,
            volunteer.owner,
            probation=trust.on_probation,
            unavailable=volunteer.load.unavailable,
        )

    def _with_trust(self, event: TaskEvent) -> TaskEvent:
        """A completed event tells the manager how far its volunteer is trusted now, which
        decides whether that one copy may stand alone."""
        if event.kind is not EventKind.COMPLETED or not event.volunteer_id:
            return event
        return replace(event, trust=self._trust.get(event.volunteer_id))

    async def _maintain_forever(self) -> None:
        # Four checks per heartbeat interval bound how late a `lost` can be to 1/4 interval.
        while True:
            await asyncio.sleep(self._registry.heartbeat_seconds / 4)
            async with self._lock:
                now = time.time()
                lost = self._registry.expire(now)
                if lost:
                    await self._store.save_volunteers(lost, event="lost")
                for volunteer in lost:
                    log.warning(
                        "volunteer %s (%s) lost: no word for %.1f s",
                        volunteer.volunteer_id,
                        volunteer.hostname,
                        self._registry.lost_after_seconds,
                    )
                    await self._execute(self._scheduler.volunteer_lost(volunteer.volunteer_id, now))
                if forgotten := self._registry.forget_gone(now):
                    await self._store.delete_volunteers(forgotten)
                    log.info("forgot %d volunteers gone for over a week", len(forgotten))
                await self._execute(self._scheduler.tick(now))

    async def stop(self) -> None:
        for session in self._sessions.values():
            session.close()
        if self._maintenance is not None:
            await self._supervisor.cancel(self._maintenance)


def _without_fetching(event: TaskEvent) -> TaskEvent:
    """The event as a manager that predates `fetching` knew it: acceptance is `running`."""
    if event.kind is EventKind.FETCHING:
        return replace(event, kind=EventKind.RUNNING)
    return event
