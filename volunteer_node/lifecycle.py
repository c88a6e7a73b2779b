"""A volunteer's tasks as a pure state machine: stimuli in, instructions out.

No I/O and no clock (the shape of coordinator_node/scheduler.py). The worker (the I/O
shell, volunteer_node/worker.py) feeds it what happened: offers, cancels and
acknowledgements from the coordinator, each attempt's steps as its pipeline takes them,
and the owner's word (pause, resume, drain). It answers with what to do: words for the
coordinator, pipelines to let run or call off, containers to freeze or thaw, rows to save.

One attempt's life:

    offered ─▶ FETCHING ─▶ READY ─▶ RUNNING ⇄ FROZEN ─▶ DELIVERING ─▶ (result in the outbox)
                  │           │         │         │           │
                  └───────────┴─────────┴─────────┴───────────┴──▶ called off (cancel,
                                                                   hand-back, stop)

Rules:
- It holds as many tasks as its slots plus one fetched ahead (daemon.capacity.held_tasks);
  READY tasks start in the order they became ready, as slots free.
- The owner's `max_cpus` and `max_memory_mb` bound all the tasks running at once together
  (daemon/capacity.py): a task starts only beside what runs within them, and an
  offer is declined when the tasks held could not all run together, but for one fetched
  ahead.
- A slot is held by a RUNNING or FROZEN attempt, and by one called off until its pipeline
  is over (its container is being killed): never more containers than slots.
- "It runs" is said of at most as many tasks as there are slots (see `_say_started`), and
  said again on every new session, so a restarted coordinator hears it.
- A result stays in the outbox, and is sent again on every new session, until the
  coordinator acknowledges it.
- Holds stop work without stopping the daemon: the owner's pause, and later the owner's
  rules (hours, idle, battery). While any hold is on, offers are declined with its reason,
  running containers are frozen and nothing new starts; a hold that lasts longer than the
  grace hands the held tasks back (declined after acceptance: the coordinator offers them
  elsewhere at once, no attempt lost). Holds end by themselves at their `until`.
- Drain: no new offers; tasks not started yet are handed back, running ones finish. It
  stays drained until resumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.capacity import caps_text, fit_together, held_tasks, needs_of, task_slots
from daemon.models import OwnerLimits, TaskResult, TaskSpec

# How long a hold may freeze tasks before it hands them back to the pool.
DEFAULT_HOLD_GRACE_SECONDS = 10 * 60.0
OWNER_HOLD = "owner"
DRAINING = "draining: its owner lets the running tasks finish and takes no new ones"

AttemptKey = tuple[str, int]


class Phase(StrEnum):
    FETCHING = "fetching"  # its inputs and image are on their way
    READY = "ready"  # everything is here: it waits for a slot
    RUNNING = "running"  # its container runs
    FROZEN = "frozen"  # its container is frozen by a hold
    DELIVERING = "delivering"  # its outputs and logs go to its manager


_IN_SLOT = (Phase.RUNNING, Phase.FROZEN)
_NOT_STARTED = (Phase.FETCHING, Phase.READY)


@dataclass
class Attempt:
    task: TaskSpec
    phase: Phase = Phase.FETCHING
    # Called off (cancel, hand-back, stop): why; its pipeline is being stopped.
    called_off: str = ""
    # Called off to go back to the pool (drain, a hold past its grace), not cancelled.
    handed_back: bool = False
    # When it became READY: the order tasks start in.
    ready_order: int = 0

    @property
    def key(self) -> AttemptKey:
        return (self.task.task_id, self.task.attempt)


@dataclass(frozen=True)
class Hold:
    """A reason not to work now: the owner's pause or one of the owner's rules."""

    name: str
    reason: str
    # When it ends by itself (epoch seconds); math.inf: when lifted.
    until: float = math.inf
    since: float = 0.0


# --- instructions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SendAccept:
    key: AttemptKey


@dataclass(frozen=True)
class SendDecline:
    """A "no" to an offer, or, for a task held already, handing it back to the pool."""

    key: AttemptKey
    reason: str


@dataclass(frozen=True)
class SendStarted:
    key: AttemptKey


@dataclass(frozen=True)
class SendResult:
    result: TaskResult


@dataclass(frozen=True)
class Fetch:
    """Start the attempt's pipeline: fetch its inputs and image, then wait for `Run`."""

    task: TaskSpec


@dataclass(frozen=True)
class Run:
    """Its turn: a slot is free; start its container."""

    key: AttemptKey


@dataclass(frozen=True)
class Freeze:
    key: AttemptKey


@dataclass(frozen=True)
class Thaw:
    key: AttemptKey


@dataclass(frozen=True)
class CallOff:
    """Stop the attempt's pipeline (its container is killed); `ended` follows."""

    key: AttemptKey
    reason: str


@dataclass(frozen=True)
class SaveAccepted:
    task: TaskSpec


@dataclass(frozen=True)
class SaveReady:
    key: AttemptKey


@dataclass(frozen=True)
class SaveResult:
    """Into the outbox, before it is sent: a restart must not lose it."""

    result: TaskResult
    manager_address: str


@dataclass(frozen=True)
class SaveCalledOff:
    key: AttemptKey
    reason: str
    handed_back: bool


@dataclass(frozen=True)
class SaveAcknowledged:
    key: AttemptKey


@dataclass(frozen=True)
class SaveOwnerState:
    """The owner's pause and drain outlive a restart: a machine its owner paused must not
    go back to work because it rebooted."""

    pause: Hold | None
    draining: bool


@dataclass(frozen=True)
class SendAvailability:
    """Whether the volunteer takes tasks changed (a hold, a drain): tell the coordinator
    now, so it stops offering (or starts again) without waiting for a heartbeat."""


Instruction = (
    SendAccept
    | SendDecline
    | SendStarted
    | SendResult
    | Fetch
    | Run
    | Freeze
    | Thaw
    | CallOff
    | SaveAccepted
    | SaveReady
    | SaveResult
    | SaveCalledOff
    | SaveAcknowledged
    | SaveOwnerState
    | SendAvailability
)


@dataclass(frozen=True)
class AttemptView:
    task_id: str
    attempt: int
    workflow_id: str
    phase: str  # a Phase, or "stopping" once called off


@dataclass(frozen=True)
class LifecycleView:
    """What the owner's `vcnode status` shows of the volunteer's work."""

    holds: tuple[Hold, ...]
    draining: bool
    stopping: bool
    attempts: tuple[AttemptView, ...]
    unacknowledged: int
    slots: int
    held_most: int
    limits: OwnerLimits
    hold_grace_seconds: float


@dataclass
class VolunteerLifecycle:
    limits: OwnerLimits
    hold_grace_seconds: float = DEFAULT_HOLD_GRACE_SECONDS
    attempts: dict[AttemptKey, Attempt] = field(default_factory=dict)
    # Results sent and not acknowledged yet, in the order they were saved.
    outbox: dict[AttemptKey, TaskResult] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    draining: bool = False
    stopping: bool = False
    # Tasks said to run, and those that started beyond the slots and wait to be said so.
    _said: list[AttemptKey] = field(default_factory=list)
    _unsaid: list[AttemptKey] = field(default_factory=list)
    _ready_count: int = 0

    @property
    def slots(self) -> int:
        return task_slots(self.limits)

    # --- what the coordinator says ----------------------------------------------------------

    def refusal(self, task: TaskSpec) -> str | None:
        """Why this volunteer takes no such offer now, whatever the task needs; None when
        only the task's own fit is left to check."""
        if self.stopping:
            return "this volunteer is stopping"
        if (hold := self.first_hold()) is not None:
            return hold.reason
        if self.draining:
            return DRAINING
        if any(key[0] == task.task_id for key in self.attempts):
            return "already running this task"
        most = held_tasks(self.limits)
        if len(self.attempts) >= most:
            return f"busy: holding {len(self.attempts)} of {most} tasks"
        return self._caps_taken()

    def _caps_taken(self) -> str | None:
        """Whether the owner's whole-machine caps leave room to hold one task more: the
        tasks held (delivering ones aside) must be able to run together, and the next one
        is fetched ahead, to run when one of them ends."""
        held = [a for a in self._held(lambda a: a.phase is not Phase.DELIVERING)]
        if fit_together((needs_of(a.task, self.limits) for a in held), self.limits):
            return None
        return (
            f"busy: its owner's caps ({caps_text(self.limits)} for all its tasks) are taken "
            f"by the {len(held)} tasks it holds"
        )

    def offered(self, task: TaskSpec, unfit: str | None) -> list[Instruction]:
        """`unfit`: why the task cannot run here (resources, allow-lists, image), from the
        shell's look at the machine; None when it fits."""
        key = (task.task_id, task.attempt)
        if key in self.attempts:
            # The same offer again (delivered twice): we said yes already. A "no" now would
            # hand back the attempt we hold, and the task would run twice.
            return []
        reason = self.refusal(task) or unfit
        if reason is not None:
            return [SendDecline(key, reason)]
        self.attempts[key] = Attempt(task)
        return [SaveAccepted(task), SendAccept(key), Fetch(task)]

    def cancel(self, task_id: str, reason: str) -> list[Instruction]:
        """The coordinator wants it no more (whatever attempt we hold)."""
        out: list[Instruction] = []
        for attempt in self._held(lambda a: a.task.task_id == task_id):
            out += self._call_off(attempt, reason, handed_back=False)
        return out

    def acknowledged(self, key: AttemptKey) -> list[Instruction]:
        if self.outbox.pop(key, None) is None:
            return []
        return [SaveAcknowledged(key)]

    def connected(self) -> list[Instruction]:
        """A new session: what it may not have heard of, said again."""
        out: list[Instruction] = [SendStarted(key) for key in self._said]
        return out + [SendResult(result) for result in self.outbox.values()]

    def restore(self, unacknowledged: list[TaskResult]) -> None:
        """After a restart: the outbox as the store kept it."""
        for result in unacknowledged:
            self.outbox[(result.task_id, result.attempt)] = result

    # --- what an attempt's pipeline says ----------------------------------------------------

    def fetched(self, key: AttemptKey) -> list[Instruction]:
        attempt = self.attempts.get(key)
        if attempt is None or attempt.called_off or attempt.phase is not Phase.FETCHING:
            return []
        attempt.phase = Phase.READY
        self._ready_count += 1
        attempt.ready_order = self._ready_count
        return [SaveReady(key), *self._start_ready()]

    def container_started(self, key: AttemptKey) -> list[Instruction]:
        """Its container is up: if a hold came while it was starting, freeze it now."""
        attempt = self.attempts.get(key)
        if attempt is not None and attempt.phase is Phase.FROZEN and not attempt.called_off:
            return [Freeze(key)]
        return []

    def run_ended(self, key: AttemptKey) -> list[Instruction]:
        """Its container is gone: the slot is free; its outputs go to the manager next."""
        attempt = self.attempts.get(key)
        if attempt is None or attempt.phase not in _IN_SLOT:
            return []
        attempt.phase = Phase.DELIVERING
        return self._start_ready()

    def finished(self, result: TaskResult) -> list[Instruction]:
        """The attempt ended with a result (whatever step it reached)."""
        key = (result.task_id, result.attempt)
        attempt = self.attempts.pop(key, None)
        if attempt is None:
            return []
        if attempt.called_off:
            # Nobody wants its result; but it ran, and said so: its word and room go.
            return self._forget_started(key) + self._start_ready()
        self.outbox[key] = result
        out: list[Instruction] = [
            SaveResult(result, attempt.task.manager_address),
            SendResult(result),
        ]
        return out + self._forget_started(key) + self._start_ready()

    def ended(self, key: AttemptKey) -> list[Instruction]:
        """Its pipeline is over (after `finished`, or once called off)."""
        attempt = self.attempts.pop(key, None)
        if attempt is None:
            return []
        return self._forget_started(key) + self._start_ready()

    # --- what the owner says ----------------------------------------------------------------

    def hold(self, hold: Hold) -> list[Instruction]:
        """Stop work for `hold.reason` until it is lifted or `hold.until` passes; a hold of
        the same name is replaced (a new `pause --for`)."""
        was = self.holds.get(hold.name)
        self.holds[hold.name] = Hold(
            hold.name, hold.reason, hold.until, was.since if was else hold.since
        )
        out: list[Instruction] = []
        for attempt in self._held(lambda a: a.phase is Phase.RUNNING):
            attempt.phase = Phase.FROZEN
            out.append(Freeze(attempt.key))
        return out + self._availability_changed(hold.name)

    def lift(self, name: str) -> list[Instruction]:
        if self.holds.pop(name, None) is None:
            return []
        out = [] if self.holds else self._thaw_all() + self._start_ready()
        return out + self._availability_changed(name)

    def resume(self) -> list[Instruction]:
        """The owner's word: the pause and a drain both end (the owner's rules stay)."""
        drained, self.draining = self.draining, False
        out = self.lift(OWNER_HOLD)
        if drained and not out:
            out = self._start_ready() + self._availability_changed(OWNER_HOLD)
        return out

    def drain(self) -> list[Instruction]:
        self.draining = True
        out: list[Instruction] = []
        for attempt in self._held(lambda a: a.phase in _NOT_STARTED):
            out += self._call_off(attempt, "its owner is draining the volunteer", handed_back=True)
        return out + self._availability_changed(OWNER_HOLD)

    def reconfigure(
        self,
        limits: OwnerLimits,
        hold_grace_seconds: float,
        unfit: Mapping[AttemptKey, str] | None = None,
    ) -> list[Instruction]:
        """The owner changed the limits or the grace (a config reload). What runs finishes;
        a task not started that the new limits no longer allow (`unfit`: why, from the
        shell's look at the machine), or that no longer fits the caps even alone, is handed
        back, or it would wait for ever and hold up those behind it; more slots or room
        start what waits."""
        self.limits = limits
        self.hold_grace_seconds = hold_grace_seconds
        unfit = unfit or {}
        out: list[Instruction] = []
        for attempt in self._held(lambda a: a.phase in _NOT_STARTED):
            why = unfit.get(attempt.key)
            if why is None and not fit_together([needs_of(attempt.task, limits)], limits):
                why = f"its owner's caps are now {caps_text(limits)} for all its tasks"
            if why is not None:
                out += self._call_off(attempt, f"its owner's new limits: {why}", handed_back=True)
        return out + self._start_ready()

    def restore_owner_state(self, pause: Hold | None, draining: bool, now: float) -> None:
        """After a restart: the owner's pause (unless it ran out) and drain, as saved."""
        self.draining = draining
        if pause is not None and pause.until > now:
            self.holds[OWNER_HOLD] = pause

    def availability(self) -> tuple[str, float]:
        """Why this volunteer takes no task now, whatever the task ("" when it takes
        tasks), and until when (0: until lifted): what the coordinator is told."""
        if (hold := self.first_hold()) is not None:
            ends = max(h.until for h in self.holds.values())
            return hold.reason, ends if math.isfinite(ends) else 0.0
        if self.draining:
            return DRAINING, 0.0
        return "", 0.0

    def stop(self) -> list[Instruction]:
        """The daemon stops: every attempt is called off; results stay in the outbox."""
        self.stopping = True
        out: list[Instruction] = []
        for attempt in self._held(lambda _: True):
            out += self._call_off(attempt, "the volunteer is stopping", handed_back=False)
        return out

    def tick(self, now: float) -> list[Instruction]:
        """Holds that ran out end; holds that outlasted the grace hand the tasks back."""
        out: list[Instruction] = []
        for hold in list(self.holds.values()):
            if hold.until <= now:
                out += self.lift(hold.name)
        first = self.first_hold()
        if first is not None and now - first.since >= self.hold_grace_seconds:
            reason = f"{first.reason} for over {_span(self.hold_grace_seconds)}"
            for attempt in self._held(lambda a: a.phase is not Phase.DELIVERING):
                out += self._call_off(attempt, reason, handed_back=True)
        return out

    def next_deadline(self) -> float | None:
        """When `tick` has something to do next (epoch seconds); None: nothing to wait for."""
        first = self.first_hold()
        if first is None:
            return None
        ends = min(hold.until for hold in self.holds.values())
        if any(a.phase is not Phase.DELIVERING for a in self._held(lambda _: True)):
            ends = min(ends, first.since + self.hold_grace_seconds)
        return ends if math.isfinite(ends) else None

    # --- what it looks like -----------------------------------------------------------------

    def first_hold(self) -> Hold | None:
        return min(self.holds.values(), key=lambda hold: hold.since, default=None)

    def held_count(self) -> int:
        return len(self.attempts)

    def task_ids(self) -> tuple[str, ...]:
        """Tasks the coordinator should keep with us: held, or with a result in flight."""
        return tuple(sorted({key[0] for key in self.attempts} | {key[0] for key in self.outbox}))

    def frozen(self) -> list[AttemptKey]:
        return [a.key for a in self.attempts.values() if a.phase is Phase.FROZEN]

    def view(self) -> LifecycleView:
        return LifecycleView(
            holds=tuple(sorted(self.holds.values(), key=lambda hold: hold.since)),
            draining=self.draining,
            stopping=self.stopping,
            attempts=tuple(
                AttemptView(
                    a.task.task_id,
                    a.task.attempt,
                    a.task.workflow_id,
                    "stopping" if a.called_off else a.phase.value,
                )
                for a in self.attempts.values()
            ),
            unacknowledged=len(self.outbox),
            slots=self.slots,
            held_most=held_tasks(self.limits),
            limits=self.limits,
            hold_grace_seconds=self.hold_grace_seconds,
        )

    # --- inside -----------------------------------------------------------------------------

    def _held(self, which: Callable[[Attempt], bool]) -> Iterator[Attempt]:
        """Attempts not called off that `which` picks (a snapshot: callers change them)."""
        return iter([a for a in list(self.attempts.values()) if not a.called_off and which(a)])

    def _availability_changed(self, hold_name: str) -> list[Instruction]:
        out: list[Instruction] = []
        if hold_name == OWNER_HOLD:
            out.append(SaveOwnerState(self.holds.get(OWNER_HOLD), self.draining))
        return [*out, SendAvailability()]

    def _call_off(self, attempt: Attempt, reason: str, *, handed_back: bool) -> list[Instruction]:
        attempt.called_off = reason
        attempt.handed_back = handed_back
        out: list[Instruction] = [
            CallOff(attempt.key, reason),
            SaveCalledOff(attempt.key, reason, handed_back),
        ]
        if handed_back:
            out.append(SendDecline(attempt.key, reason))
        return out

    def _start_ready(self) -> list[Instruction]:
        if self.holds or self.stopping:
            return []
        # Called off but not gone yet: its container still holds its share.
        running = [
            needs_of(a.task, self.limits) for a in self.attempts.values() if a.phase in _IN_SLOT
        ]
        ready = sorted(self._held(lambda a: a.phase is Phase.READY), key=lambda a: a.ready_order)
        out: list[Instruction] = []
        for attempt in ready:
            need = needs_of(attempt.task, self.limits)
            # In turn: one that must wait for room keeps those behind it waiting too, or a
            # large task would wait for ever behind small ones.
            if len(running) >= self.slots or not fit_together([*running, need], self.limits):
                break
            running.append(need)
            attempt.phase = Phase.RUNNING
            out.append(Run(attempt.key))
            out += self._say_started(attempt.key)
        return out

    def _thaw_all(self) -> list[Instruction]:
        out: list[Instruction] = []
        for attempt in self._held(lambda a: a.phase is Phase.FROZEN):
            attempt.phase = Phase.RUNNING
            out.append(Thaw(attempt.key))
        return out

    def _say_started(self, key: AttemptKey) -> list[Instruction]:
        """A task is said to run until its result is sent, and a slot frees as its container
        ends, before its outputs are delivered: the next task starts at once but is said to
        run only once that result is sent (`fetching` meanwhile), so the pool never counts
        more tasks running here than there are slots."""
        if len(self._said) < self.slots:
            self._said.append(key)
            return [SendStarted(key)]
        self._unsaid.append(key)
        return []

    def _forget_started(self, key: AttemptKey) -> list[Instruction]:
        if key in self._unsaid:
            self._unsaid.remove(key)
        if key not in self._said:
            return []
        self._said.remove(key)
        if not self._unsaid:
            return []
        waiting = self._unsaid.pop(0)
        self._said.append(waiting)
        return [SendStarted(waiting)]


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"
