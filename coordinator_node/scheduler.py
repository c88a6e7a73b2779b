"""The task scheduler as a pure state machine: stimuli in, instructions out.

No I/O and no clock. The pool (the I/O shell) feeds it what happened: tasks submitted,
volunteers coming and going, offers accepted or declined, results. It answers with what to
do: offers and cancels to send, events to publish, task records to save.

Rules:
- A task is offered to one connected volunteer at a time that fits it (resources, owner's
  limits, room) and has not just declined it; FIFO (a requeued task keeps its place),
  spreading over the least busy. A volunteer holds one task beyond its slots, whose inputs
  it fetches while it is busy. A task waiting for a busy volunteer lets later ones pass to
  free ones. Tasks no connected volunteer can run are set aside until one joins.
- No stimulus walks every task: dispatch looks at the queue's front only while volunteers
  have room (see benchmarks/scheduler.py).
- Every offer has a number (`attempt`). Answers and results carry it, so anything about an
  older attempt (a late result from a volunteer we gave up on) is ignored, never counted.
- An accepted task is `fetching` (inputs and image on their way, or fetched ahead and
  waiting for a slot) until its volunteer says it started, then `running`; an older
  volunteer never says so, and its task is `running` from acceptance. Both are held: room,
  leases, cancels, retries and a lost volunteer treat them alike. Progress is passed on
  but starts nothing: a volunteer says no more tasks run than it has slots, so one started
  beyond them reports progress while still `fetching` (the manager shows it so too). A
  volunteer says again, on each new session, which of its tasks started: word heard before
  a crash but not saved is heard again.
- A volunteer that is lost takes its tasks back to the queue; after `max_attempts` offers a
  task fails. A task that fails by itself is run again `retries` times, then fails.
- Copies of one task (validation by replication: `TaskSpec.replica_of`) run on distinct
  volunteers of distinct owners: never where another copy runs or ran (`avoid_volunteers`,
  filled by the manager), nor on a machine of the same owner. A copy sent after another
  ran goes before the queue: a result waits on it. A volunteer on probation (see
  Candidate) holds one replicated task at a time.
- A task that ended is forgotten but for its run and last attempt number (`EndedTask`): its
  spec and result live in the store, so a coordinator's memory follows the work in hand,
  not every task it ever ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from coordinator_node.dispatch_queue import DispatchQueue
from daemon.capacity import (
    capacity_problem,
    coordinator_allow_problem,
    fit_together,
    held_tasks,
    needs_of,
)
from daemon.models import (
    EventKind,
    OwnerLimits,
    Resources,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TaskState,
)
from daemon.task_files import outputs_problem

DEFAULT_OFFER_TIMEOUT_SECONDS = 15.0
DEFAULT_MAX_ATTEMPTS = 5
# A volunteer that declined a task is not asked about it again for this long.
DECLINE_COOLDOWN_SECONDS = 30.0
_ENDED = {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}
_HELD = (TaskState.FETCHING, TaskState.RUNNING)
# How long a volunteer on probation waits for the verdict on its last result at most.
PROBATION_PATIENCE_SECONDS = 60.0
# Added to the order of copies checking another's result: ahead of every first copy.
_CHECKS_FIRST = 2**62


@dataclass(frozen=True)
class Candidate:
    """A connected volunteer, as far as matching is concerned."""

    volunteer_id: str
    resources: Resources
    limits: OwnerLimits
    # The person who owns the machine, when its certificate names one.
    owner: str = ""
    # Not vouched for and none of its results agreed with another's yet: it takes a
    # replicated task only when it holds none and its last result was judged (or
    # PROBATION_PATIENCE passed), so a cheat is caught after `blocklist_after` results.
    probation: bool = False
    # Why it takes no task now, whatever the task (its owner paused or drained it): it is
    # offered nothing until that ends, rather than asked and refused again and again.
    unavailable: str = ""

    @property
    def capacity(self) -> int:
        """Tasks it may hold: its slots plus one fetched ahead."""
        return held_tasks(self.limits)


@dataclass
class ScheduledTask:
    spec: TaskSpec
    manager_id: str
    state: TaskState = TaskState.QUEUED
    # Number of the latest offer; 0 before the first.
    attempt: int = 0
    failures: int = 0
    volunteer_id: str = ""
    offered_at: float = 0.0
    error: str = ""
    result: TaskResult | None = None
    declined_at: dict[str, float] = field(default_factory=dict)
    # Volunteers whose result for it was refused: it is never offered to them again (kept
    # in memory only: a restarted coordinator gives them another chance).
    distrusted: set[str] = field(default_factory=set)
    unschedulable_reported: bool = False
    # `attempt` when the current run began: attempt numbers never repeat (so late results
    # stay recognisable) but each run gets the whole `max_attempts` budget.
    attempt_base: int = 0
    # Submission order, for FIFO dispatch (not saved: a restart numbers tasks as it loads
    # them, which is in the order they were first saved).
    order: int = 0

    @property
    def task_id(self) -> str:
        return self.spec.task_id


@dataclass(frozen=True, slots=True)
class Apart:
    """Whom a copy of a task is kept from: volunteers that ran it or were named to avoid
    (`ran`), that hold another copy now (`holding`), and the owners of all of them."""

    ran: frozenset[str]
    holding: frozenset[str]
    owners: frozenset[str]


@dataclass(frozen=True, slots=True)
class EndedTask:
    """All the scheduler keeps of a task that ended: enough to tell a manager resubmitting
    it (same run: ignored) from `--resume` (a later run: a fresh start whose attempt numbers
    carry on from `attempt`, so a late result of the old run stays recognisable)."""

    run: int
    attempt: int
    state: TaskState


# --- instructions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SendOffer:
    volunteer_id: str
    task: TaskSpec


@dataclass(frozen=True)
class SendCancel:
    volunteer_id: str
    task_id: str
    reason: str


@dataclass(frozen=True)
class Publish:
    manager_id: str
    event: TaskEvent


@dataclass(frozen=True)
class SaveTask:
    task: ScheduledTask
    # The spec is new (a submission, or a later run): only then is it written, since a
    # task is saved at every step of its life.
    new_spec: bool = False


Instruction = SendOffer | SendCancel | Publish | SaveTask


def _group(task: ScheduledTask) -> tuple[str, str]:
    """The copies a task belongs with: one manager's copies of one task (another manager
    naming the same task makes a group of its own)."""
    return task.manager_id, task.spec.replica_of


def replica_problem(spec: TaskSpec) -> str | None:
    """Why `spec` cannot be a copy of the task it names, or None: a copy is the task
    itself or `<task>~<n>`."""
    if not spec.replica_of or spec.task_id == spec.replica_of:
        return None
    prefix, separator, number = spec.task_id.rpartition("~")
    if separator and prefix == spec.replica_of and number.isdigit():
        return None
    return f"task {spec.task_id[:80]!r} cannot be a copy of {spec.replica_of[:80]!r}"


def unfit_reason(request: TaskSpec, candidate: Candidate, manager_id: str) -> str | None:
    """Why this volunteer can never run this task, or None if it can. `manager_id` is the
    manager that submitted it, as its certificate proved (never the spec's word): the
    volunteer's allow_managers is checked against it."""
    shortfall = capacity_problem(request, candidate.resources, candidate.limits)
    shortfall = shortfall or coordinator_allow_problem(request, candidate.limits, manager_id)
    return shortfall.message if shortfall is not None else None


class Scheduler:
    def __init__(
        self,
        offer_timeout: float = DEFAULT_OFFER_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.offer_timeout = offer_timeout
        self.max_attempts = max_attempts
        # Tasks not ended yet, and what is left of those that did.
        self.tasks: dict[str, ScheduledTask] = {}
        self._ended: dict[str, EndedTask] = {}
        self._candidates: dict[str, Candidate] = {}
        self._assigned: dict[str, set[str]] = {}
        # Indexes by state, so that no stimulus walks every task (see _set_state):
        # queued tasks some connected volunteer may run, in submission order;
        self._queue: DispatchQueue[ScheduledTask] = DispatchQueue()
        # queued tasks no connected volunteer can run, back in the queue when one joins;
        self._parked: dict[str, ScheduledTask] = {}
        # offers not answered yet.
        self._offered: dict[str, ScheduledTask] = {}
        # Copies of each replicated task not ended yet (by the task they copy), and the
        # owner of every volunteer seen: what keeps copies apart.
        self._replicas: dict[tuple[str, str], set[str]] = {}
        # ... and the volunteers that ran one of them to its end, while any is not ended.
        self._ran: dict[tuple[str, str], set[str]] = {}
        self._owners: dict[str, str] = {}
        # Results of volunteers on probation awaiting a verdict: volunteer -> task -> when.
        self._awaiting: dict[str, dict[str, float]] = {}
        self._next_order = 0

    # --- stimuli --------------------------------------------------------------------------

    def restore(
        self,
        tasks: Iterable[ScheduledTask],
        ended: Iterable[tuple[str, EndedTask]] = (),
        ran: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Loads saved tasks after a restart: those not ended in full, the others as
        `EndedTask`s, and (manager, task copied, volunteer) for each ended copy of a task
        with copies still going. Offers died with their streams; running tasks stay with
        their volunteer until it reconnects without them or is lost."""
        self._ended.update(ended)
        for manager_id, replica_of, volunteer_id in ran:
            self._ran.setdefault((manager_id, replica_of), set()).add(volunteer_id)
        for task in tasks:
            if task.state is TaskState.OFFERED:
                task.state = TaskState.QUEUED
                task.volunteer_id = ""
            self._track(task)
            if task.state.held:
                self._assigned.setdefault(task.volunteer_id, set()).add(task.spec.task_id)

    def submit(self, manager_id: str, specs: Iterable[TaskSpec], now: float) -> list[Instruction]:
        out: list[Instruction] = []
        for spec in specs:
            known = self.tasks.get(spec.task_id)
            if known is not None:  # a manager resubmitting after a lost reply or a restart
                if (
                    known.manager_id == manager_id
                    and known.spec.manager_address != spec.manager_address
                ):
                    # Its next offer sends volunteers to where the manager is now.
                    known.spec = replace(known.spec, manager_address=spec.manager_address)
                    out.append(SaveTask(known, new_spec=True))
                continue
            ended = self._ended.get(spec.task_id)
            if ended is not None and spec.run <= ended.run:
                continue  # the same: it has ended, as the manager will hear
            # New, or a later run of a task that ended (`--resume`): a fresh start.
            task = ScheduledTask(spec=spec, manager_id=manager_id)
            message = ""
            if ended is not None:
                del self._ended[spec.task_id]
                task.attempt = task.attempt_base = ended.attempt
                message = f"run {spec.run}"
            self._track(task)
            out += [
                SaveTask(task, new_spec=True),
                self._event(task, EventKind.QUEUED, now, message=message),
            ]
        return out + self._dispatch(now)

    def volunteer_joined(
        self, candidate: Candidate, running_task_ids: Iterable[str], now: float
    ) -> list[Instruction]:
        vid = candidate.volunteer_id
        self._candidates[vid] = candidate
        self._owners[vid] = candidate.owner
        # It may run what nobody could.
        parked, self._parked = self._parked, {}
        for task in parked.values():
            self._queue.add(task)
        still_running = set(running_task_ids)
        out: list[Instruction] = []
        for task_id in sorted(self._assigned.get(vid, set()) - still_running):
            out += self._requeue(self.tasks[task_id], now, "its volunteer restarted without it")
        return out + self._dispatch(now)

    def judged(self, pairs: Iterable[tuple[str, str]], now: float) -> list[Instruction]:
        """Verdicts (or word that none is coming) on these (volunteer, task) results."""
        for volunteer_id, task_id in pairs:
            awaiting = self._awaiting.get(volunteer_id)
            if awaiting is not None:
                awaiting.pop(task_id, None)
                if not awaiting:
                    del self._awaiting[volunteer_id]
        return self._dispatch(now)

    def volunteer_changed(self, candidate: Candidate, now: float) -> list[Instruction]:
        """What matching knows of a connected volunteer changed (its probation ended, its
        owner paused or resumed it)."""
        if candidate.volunteer_id not in self._candidates:
            return []
        self._candidates[candidate.volunteer_id] = candidate
        return self._dispatch(now)

    def volunteer_disconnected(self, volunteer_id: str, now: float) -> list[Instruction]:
        """Its stream closed: no more offers, and pending offers are void. Running tasks
        stay: the volunteer may reconnect and report them."""
        self._candidates.pop(volunteer_id, None)
        out: list[Instruction] = []
        for task_id in sorted(self._assigned.get(volunteer_id, set())):
            task = self.tasks[task_id]
            if task.state is TaskState.OFFERED:
                out += self._requeue(task, now, "its volunteer disconnected before answering")
        return out + self._dispatch(now)

    def volunteer_lost(self, volunteer_id: str, now: float) -> list[Instruction]:
        return self._take_back(volunteer_id, now, "its volunteer was lost")

    def volunteer_left(self, volunteer_id: str, reason: str, now: float) -> list[Instruction]:
        """It said goodbye, having stopped its tasks: they go elsewhere at once."""
        return self._take_back(volunteer_id, now, f"its volunteer left ({reason})")

    def volunteer_barred(self, volunteer_id: str, reason: str, now: float) -> list[Instruction]:
        """Its results are not trusted any more (blocklisted): it is offered nothing, and
        what it holds is called off there and offered elsewhere."""
        cancels = [
            SendCancel(volunteer_id, task_id, reason)
            for task_id in sorted(self._assigned.get(volunteer_id, set()))
        ]
        return cancels + self._take_back(volunteer_id, now, f"its volunteer was {reason}")

    def _take_back(self, volunteer_id: str, now: float, why: str) -> list[Instruction]:
        self._candidates.pop(volunteer_id, None)
        out: list[Instruction] = []
        for task_id in sorted(self._assigned.get(volunteer_id, set())):
            out += self._requeue(self.tasks[task_id], now, why)
        return out + self._dispatch(now)

    def accepted(
        self,
        volunteer_id: str,
        task_id: str,
        attempt: int,
        now: float,
        *,
        says_started: bool = False,
    ) -> list[Instruction]:
        """`says_started`: the volunteer will say when the task starts (`started`); an older
        one does not, and its task runs, as far as anyone can tell, from now."""
        task = self.tasks.get(task_id)
        if not self._is_current(task, volunteer_id, attempt, TaskState.OFFERED):
            # We no longer want this volunteer to run it (offer timed out, cancelled, ...).
            return [SendCancel(volunteer_id, task_id, "the offer is no longer valid")]
        assert task is not None
        state, kind = (
            (TaskState.FETCHING, EventKind.FETCHING)
            if says_started
            else (TaskState.RUNNING, EventKind.RUNNING)
        )
        self._set_state(task, state)
        return [SaveTask(task), self._event(task, kind, now)]

    def started(
        self, volunteer_id: str, task_id: str, attempt: int, now: float
    ) -> list[Instruction]:
        """The task's container started on its volunteer: it runs now. Word of an attempt
        that is over, or said twice, changes nothing."""
        task = self.tasks.get(task_id)
        if not self._is_current(task, volunteer_id, attempt, TaskState.FETCHING):
            return []
        assert task is not None
        self._set_state(task, TaskState.RUNNING)
        return [SaveTask(task), self._event(task, EventKind.RUNNING, now)]

    def declined(
        self, volunteer_id: str, task_id: str, attempt: int, reason: str, now: float
    ) -> list[Instruction]:
        """A "no" to an offer, or a task the volunteer held handed back (its owner drained
        or paused it): either way it goes elsewhere at once, and no attempt is lost."""
        task = self.tasks.get(task_id)
        if not self._is_current(task, volunteer_id, attempt, TaskState.OFFERED, *_HELD):
            return []
        assert task is not None
        self._release(task)
        self._set_state(task, TaskState.QUEUED)
        task.declined_at[volunteer_id] = now
        # A "no" (an owner's pause, a full machine) is no failed attempt: it must not use
        # up the budget the task has for volunteers that fail it.
        task.attempt_base += 1
        return [
            SaveTask(task),
            self._event(task, EventKind.DECLINED, now, volunteer_id=volunteer_id, message=reason),
            *self._dispatch(now),
        ]

    def progressed(
        self, volunteer_id: str, task_id: str, attempt: int, percent: float, now: float
    ) -> list[Instruction]:
        task = self.tasks.get(task_id)
        if not self._is_current(task, volunteer_id, attempt, *_HELD):
            return []
        assert task is not None
        return [self._event(task, EventKind.PROGRESS, now, percent=percent)]

    def finished(self, volunteer_id: str, result: TaskResult, now: float) -> list[Instruction]:
        task = self.tasks.get(result.task_id)
        # A task may end while still fetching (an input that cannot be had).
        if not self._is_current(task, volunteer_id, result.attempt, *_HELD):
            return []  # late or duplicate: the attempt it belongs to is over
        assert task is not None
        problem = outputs_problem(task.spec.outputs, [ref.name for ref in result.outputs])
        if result.succeeded and problem is not None:
            # Never stored: a volunteer's bad word is its attempt lost, as if it had gone.
            why = f"volunteer {volunteer_id[:8]} sent a result that {problem}; refused"
            task.distrusted.add(volunteer_id)
            return self._requeue(task, now, why) + self._dispatch(now)
        self._release(task)
        task.result = result
        if task.spec.replica_of:  # its siblings may never run there, whatever came of it
            self._ran.setdefault(_group(task), set()).add(volunteer_id)
        candidate = self._candidates.get(volunteer_id)
        if result.succeeded and task.spec.replica_of and candidate and candidate.probation:
            self._awaiting.setdefault(volunteer_id, {})[task.task_id] = now
        if result.succeeded:
            self._set_state(task, TaskState.COMPLETED)
            task.error = ""
            out: list[Instruction] = [SaveTask(task), self._event(task, EventKind.COMPLETED, now)]
        else:
            task.failures += 1
            if task.failures <= task.spec.retries:
                self._set_state(task, TaskState.QUEUED)
                message = f"{result.error}; retry {task.failures} of {task.spec.retries}"
                # With its result: the manager keeps every attempt's logs (`logs --attempt`).
                requeued = self._event(
                    task, EventKind.REQUEUED, now, message=message, result=result
                )
                out = [SaveTask(task), requeued]
            else:
                self._set_state(task, TaskState.FAILED)
                task.error = result.error
                out = [
                    SaveTask(task),
                    self._event(task, EventKind.FAILED, now, message=result.error),
                ]
        return out + self._dispatch(now)

    def cancel(
        self, manager_id: str, workflow_id: str, task_ids: Iterable[str], now: float
    ) -> list[Instruction]:
        """Cancels `manager_id`'s tasks of the workflow and those named; never another's."""
        wanted = set(task_ids)
        if not workflow_id:  # only those named: looked up, not searched for
            named = [
                task
                for task_id in sorted(wanted)
                if (task := self.tasks.get(task_id)) is not None and task.manager_id == manager_id
            ]
            return self._cancel_these(named, "cancelled", now)
        return self._cancel_where(
            lambda task: (
                task.manager_id == manager_id
                and (task.spec.workflow_id == workflow_id or task.spec.task_id in wanted)
            ),
            "cancelled",
            now,
        )

    def cancel_all_of(self, manager_id: str, reason: str, now: float) -> list[Instruction]:
        """Cancels every task `manager_id` has here (its manager was revoked)."""
        return self._cancel_where(lambda task: task.manager_id == manager_id, reason, now)

    def _cancel_where(
        self, chosen: Callable[[ScheduledTask], bool], reason: str, now: float
    ) -> list[Instruction]:
        # Those not ended (ending removes them), listed first: cancelling changes the dict.
        return self._cancel_these([t for t in self.tasks.values() if chosen(t)], reason, now)

    def _cancel_these(
        self, tasks: Iterable[ScheduledTask], reason: str, now: float
    ) -> list[Instruction]:
        out: list[Instruction] = []
        for task in tasks:
            if task.state in (TaskState.OFFERED, *_HELD):
                out.append(SendCancel(task.volunteer_id, task.spec.task_id, reason))
                self._release(task)
            self._set_state(task, TaskState.CANCELLED)
            out += [SaveTask(task), self._event(task, EventKind.CANCELLED, now)]
        return out + self._dispatch(now)

    def tick(self, now: float) -> list[Instruction]:
        """Offers unanswered for too long count as declined; then dispatch again."""
        out: list[Instruction] = []
        for task in list(self._offered.values()):
            if now - task.offered_at >= self.offer_timeout:
                out += self.declined(
                    task.volunteer_id,
                    task.spec.task_id,
                    task.attempt,
                    f"no answer within {self.offer_timeout:g} s",
                    now,
                )
        return out + self._dispatch(now)

    # --- queries --------------------------------------------------------------------------

    def running_on(self, volunteer_id: str) -> set[str]:
        return set(self._assigned.get(volunteer_id, set()))

    def waiting(self) -> int:
        """Tasks queued for a volunteer (those no connected volunteer can run included)."""
        return len(self._queue) + len(self._parked)

    def state_of(self, task_id: str) -> TaskState | None:
        """The task's state, ended or not; None for a task never submitted here."""
        task = self.tasks.get(task_id)
        if task is not None:
            return task.state
        ended = self._ended.get(task_id)
        return ended.state if ended is not None else None

    # --- internals ------------------------------------------------------------------------

    def _is_current(
        self, task: ScheduledTask | None, volunteer_id: str, attempt: int, *states: TaskState
    ) -> bool:
        return (
            task is not None
            and task.state in states
            and task.volunteer_id == volunteer_id
            and task.attempt == attempt
        )

    def _release(self, task: ScheduledTask) -> None:
        self._assigned.get(task.volunteer_id, set()).discard(task.spec.task_id)

    def _requeue(self, task: ScheduledTask, now: float, why: str) -> list[Instruction]:
        self._release(task)
        if task.attempt - task.attempt_base >= self.max_attempts:
            self._set_state(task, TaskState.FAILED)
            task.error = f"gave up after {task.attempt - task.attempt_base} attempts: {why}"
            return [SaveTask(task), self._event(task, EventKind.FAILED, now, message=task.error)]
        self._set_state(task, TaskState.QUEUED)
        return [SaveTask(task), self._event(task, EventKind.REQUEUED, now, message=why)]

    def _track(self, task: ScheduledTask) -> None:
        task.order = self._next_order
        if task.spec.replica_of and task.spec.avoid_volunteers:
            # A copy sent after another ran (it names that one's volunteer) checks a result
            # that waits on it: it goes before the queue (in its own order), and the sooner
            # it is judged the sooner a cheat is stopped.
            task.order -= _CHECKS_FIRST
        self._next_order += 1
        self.tasks[task.task_id] = task
        if task.spec.replica_of:
            self._replicas.setdefault(_group(task), set()).add(task.task_id)
        self._set_state(task, task.state)

    def _apart(self, task: ScheduledTask) -> Apart | None:
        """Whom a copy of a replicated task is kept from, worked out once per task: dispatch
        asks it of every volunteer with room. None when nobody is to be avoided."""
        spec = task.spec
        if not spec.replica_of:
            return None
        group = _group(task)
        ran = set(spec.avoid_volunteers) | self._ran.get(group, set())
        holding = {
            self.tasks[task_id].volunteer_id
            for task_id in self._replicas.get(group, ())
            if task_id != task.task_id and self.tasks[task_id].state in (TaskState.OFFERED, *_HELD)
        }
        if not ran and not holding:
            return None  # a first copy with no sibling out: the common case
        owners = {self._owners.get(vid, "") for vid in ran | holding} - {""}
        return Apart(frozenset(ran), frozenset(holding), frozenset(owners))

    def _kept_apart(
        self, task: ScheduledTask, volunteer_id: str, apart: Apart | None
    ) -> str | None:
        """Why this volunteer may not run this copy of a replicated task, or None;
        `apart` is `_apart(task)`."""
        if apart is None:
            return None
        if volunteer_id in apart.ran:
            return "it ran another copy of this task"
        if volunteer_id in apart.holding:
            return "it holds another copy of this task"
        owner = self._owners.get(volunteer_id, "")
        if owner in apart.owners:
            return f"its owner ({owner}) has another copy of this task on another machine"
        return None

    def _held_back(self, task: ScheduledTask, volunteer_id: str, now: float) -> bool:
        """A volunteer on probation takes a replicated task only when it holds none and no
        result of its awaits a verdict (for long)."""
        if not task.spec.replica_of or not self._candidates[volunteer_id].probation:
            return False
        if any(self.tasks[t].spec.replica_of for t in self._assigned.get(volunteer_id, ())):
            return True
        awaiting = self._awaiting.get(volunteer_id)
        if awaiting and task.spec.avoid_volunteers and not self._trusted_could_run(task):
            # A check of another's result that only newcomers can run: it may take one while
            # its own awaits a verdict, else a pool of newcomers would each wait on the
            # others' checks. Where a volunteer off probation can, that one checks.
            return False
        if not awaiting:
            return False
        for task_id, since in list(awaiting.items()):
            if now - since >= PROBATION_PATIENCE_SECONDS:  # no verdict is coming: forgotten
                del awaiting[task_id]
        if not awaiting:
            del self._awaiting[volunteer_id]
        return bool(awaiting)

    def _trusted_could_run(self, task: ScheduledTask) -> bool:
        """Whether a connected volunteer off probation could run the task, room aside."""
        apart = self._apart(task)
        return any(
            not candidate.probation and self._could_run(task, vid, apart)
            for vid, candidate in self._candidates.items()
        )

    def _could_run(self, task: ScheduledTask, volunteer_id: str, apart: Apart | None) -> bool:
        """Whether this volunteer could run the task, room aside (`apart`: `_apart(task)`)."""
        return (
            volunteer_id not in task.distrusted
            and unfit_reason(task.spec, self._candidates[volunteer_id], task.manager_id) is None
            and self._kept_apart(task, volunteer_id, apart) is None
        )

    def _set_state(self, task: ScheduledTask, state: TaskState) -> None:
        """Every change of a task's state goes through here, to keep the indexes true."""
        self._queue.discard(task.task_id)
        self._parked.pop(task.task_id, None)
        self._offered.pop(task.task_id, None)
        task.state = state
        if state in _ENDED:
            # The instructions about its end still hold the whole task, to save and tell.
            del self.tasks[task.task_id]
            if (group := self._replicas.get(_group(task))) is not None:
                group.discard(task.task_id)
                if not group:  # the manager's avoid list speaks for them from now on
                    del self._replicas[_group(task)]
                    self._ran.pop(_group(task), None)
            self._ended[task.task_id] = EndedTask(task.spec.run, task.attempt, state)
        elif state is TaskState.QUEUED:
            self._queue.add(task)
        elif state is TaskState.OFFERED:
            self._offered[task.task_id] = task

    def _dispatch(self, now: float) -> list[Instruction]:
        """Offers queued tasks, from the front, while volunteers have room. Looks only at as
        many tasks as it places, plus those the volunteers with room may not take now."""
        out: list[Instruction] = []
        room = {
            vid: free
            for vid, candidate in self._candidates.items()
            if (free := candidate.capacity - len(self._assigned.get(vid, ()))) > 0
            and not candidate.unavailable
        }
        waiting: list[ScheduledTask] = []
        while room and (task := self._queue.pop_front()) is not None:
            apart = self._apart(task)
            # Those with room first: usually one of them takes it, and the rest of the pool
            # need not be asked.
            ready = [
                vid
                for vid in room
                if now - task.declined_at.get(vid, -math.inf) >= DECLINE_COOLDOWN_SECONDS
                and self._could_run(task, vid, apart)
                and not self._held_back(task, vid, now)
                and self._caps_leave_room(vid)
            ]
            if not ready:
                if any(self._could_run(task, vid, apart) for vid in self._candidates):
                    waiting.append(task)
                    if task.spec.replica_of and all(
                        self._held_back(task, vid, now) for vid in room
                    ):
                        # Only volunteers on probation have room, and they take no other
                        # replicated task now: looking further would walk the whole queue
                        # at every stimulus (what waits behind goes at the next dispatch).
                        break
                    continue
                self._parked[task.task_id] = task
                if not task.unschedulable_reported:
                    task.unschedulable_reported = True
                    out.append(self._unschedulable(task, now))
                continue
            chosen = max(ready, key=lambda vid: (room[vid], vid))
            room[chosen] -= 1
            if not room[chosen]:
                del room[chosen]
            task.attempt += 1
            self._set_state(task, TaskState.OFFERED)
            task.volunteer_id = chosen
            task.offered_at = now
            self._assigned.setdefault(chosen, set()).add(task.task_id)
            out += [
                SaveTask(task),
                # The offer names the manager its certificate proved: the volunteer
                # takes inputs from and sends outputs to that node only.
                # What copy it is and who ran the others stays here: a volunteer that knew
                # whether its result would be checked could cheat when it would not.
                SendOffer(
                    chosen,
                    replace(
                        task.spec,
                        attempt=task.attempt,
                        manager_id=task.manager_id,
                        replica_of="",
                        avoid_volunteers=(),
                    ),
                ),
                self._event(task, EventKind.OFFERED, now),
            ]
        for task in waiting:
            self._queue.add(task)
        return out

    def _caps_leave_room(self, volunteer_id: str) -> bool:
        """Whether the owner's whole-machine caps let the volunteer hold one task more: as
        it decides it (the tasks it holds must be able to run together; the next one is
        fetched ahead), so it is not offered what it would decline."""
        limits = self._candidates[volunteer_id].limits
        if not (limits.max_cpus or limits.max_memory_mb):
            return True
        held = [self.tasks.get(task_id) for task_id in self._assigned.get(volunteer_id, ())]
        return fit_together((needs_of(t.spec, limits) for t in held if t is not None), limits)

    def _unschedulable(self, task: ScheduledTask, now: float) -> Publish:
        reasons = sorted(
            {f"{c.volunteer_id[:8]}: {self._why_not(task, c)}" for c in self._candidates.values()}
        )
        return self._event(
            task,
            EventKind.UNSCHEDULABLE,
            now,
            message="no volunteer can run it (" + "; ".join(reasons) + ")",
        )

    def _why_not(self, task: ScheduledTask, candidate: Candidate) -> str:
        if candidate.unavailable:
            return candidate.unavailable
        if candidate.volunteer_id in task.distrusted:
            return "its result for it was refused"
        unfit = unfit_reason(task.spec, candidate, task.manager_id)
        if unfit is not None:
            return unfit
        apart = self._kept_apart(task, candidate.volunteer_id, self._apart(task))
        return f"{apart} (copies must run on distinct volunteers)" if apart else "?"

    @staticmethod
    def _event(task: ScheduledTask, kind: EventKind, now: float, **details: object) -> Publish:
        fields: dict[str, object] = {
            "task_id": task.spec.task_id,
            "workflow_id": task.spec.workflow_id,
            "kind": kind,
            "at": now,
            "attempt": task.attempt,
            "volunteer_id": task.volunteer_id,
            "result": task.result if kind in (EventKind.COMPLETED, EventKind.FAILED) else None,
        }
        fields.update(details)
        return Publish(task.manager_id, TaskEvent(**fields))  # type: ignore[arg-type]
