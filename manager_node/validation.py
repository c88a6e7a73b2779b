"""Validation by replication, one task at a time, as a pure state machine.

A volunteer can be faulty or dishonest, so a task under validation runs as copies on distinct
volunteers (the coordinator keeps them apart) until `quorum` of them agree; the agreeing
result is the task's. The shell compares each copy's outputs with the answers seen so far
(sha256, then the splitter's `equivalent`) and hands the machine the answer it matched.

Policies:
- `none`: one copy, taken as it comes (the task is not replicated at all).
- `quorum`: `replicas` copies at once, more on disagreement, until `quorum` agree.
- `adaptive` (BOINC's adaptive replication): one copy; it stands alone if its volunteer is
  trusted (vouched, or `trust_threshold` agreements in a row) and the random spot check
  spared it; otherwise further copies run until `quorum` agree. When no distinct volunteer
  can run a second copy (a pool of one), the copy stands, marked unverified.

Every copy compared gets a verdict, agreed or disagreed, which the shell reports to the
coordinator's trust records: a copy that arrives after the quorum is judged too, never taken
as a second result. At most `max_copies` run; then the task fails with "no quorum" and the
answers it got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum

from daemon.models import TaskResult
from workflows.validation_policy import Mode, ValidationPolicy

COPY_SEPARATOR = "~"


def new_validation(task_id: str, policy: ValidationPolicy) -> Validation | None:
    """A task's validation before any copy ran; None when it is not replicated."""
    return None if policy.mode is Mode.NONE else Validation(task_id, policy)


def copy_id(task_id: str, number: int) -> str:
    """The first copy is the task itself; the others are `<task id>~<n>` (a name never
    holds `~`)."""
    return task_id if number == 1 else f"{task_id}{COPY_SEPARATOR}{number}"


def task_of(copy_task_id: str) -> tuple[str, int]:
    """(the task, the copy's number) of a copy's id."""
    task_id, separator, number = copy_task_id.rpartition(COPY_SEPARATOR)
    if separator and number.isdigit() and int(number) >= 2:
        return task_id, int(number)
    return copy_task_id, 1


class CopyState(StrEnum):
    QUEUED = "queued"
    # A volunteer accepted it: its inputs and image are on their way, or it waits for a slot.
    FETCHING = "fetching"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in (CopyState.QUEUED, CopyState.FETCHING, CopyState.RUNNING)

    @property
    def held(self) -> bool:
        """A volunteer has it (fetching or running): the one that may fetch its inputs."""
        return self in (CopyState.FETCHING, CopyState.RUNNING)


class Verdict(StrEnum):
    PENDING = ""
    AGREED = "agreed"
    DISAGREED = "disagreed"
    # Stood alone: its volunteer was trusted, or no distinct volunteer could check it.
    UNCHECKED = "unchecked"


@dataclass
class Copy:
    number: int
    state: CopyState = CopyState.QUEUED
    volunteer_id: str = ""
    attempt: int = 0
    result: TaskResult | None = None
    # Which of the task's distinct answers its outputs are (index into the answers seen,
    # in the order first seen); -1 until it completed.
    answer: int = -1
    verdict: Verdict = Verdict.PENDING
    # Its volunteer was on probation when it completed: the coordinator waits to hear
    # even of an unchecked verdict before it offers that volunteer more.
    probation: bool = False

    @property
    def run_seconds(self) -> float:
        result = self.result
        if result is None or not result.finished_at:
            return 0.0
        return max(0.0, result.finished_at - result.started_at)


@dataclass(frozen=True)
class Decision:
    """What a stimulus asks the shell to do."""

    # Copies to hand to the coordinator, by number.
    submit: tuple[int, ...] = ()
    # The copy whose result is now the task's.
    accept: Copy | None = None
    # The task fails, for this reason.
    fail: str = ""
    # Copies judged now (or let stand unchecked): their verdicts go to the coordinator.
    judged: tuple[Copy, ...] = ()
    # Copies to call off at the coordinator, by number.
    cancel: tuple[int, ...] = ()


@dataclass
class Validation:
    task_id: str
    policy: ValidationPolicy
    copies: list[Copy] = field(default_factory=list)
    # The number of the copy whose result stands; 0 while undecided.
    accepted: int = 0
    # Why it stands or fell, in words: "3 of 3 copies agreed", "trusted volunteer", ...
    outcome: str = ""
    failed: bool = False

    @property
    def decided(self) -> bool:
        return bool(self.accepted) or self.failed

    def copy(self, number: int) -> Copy | None:
        return self.copies[number - 1] if 0 < number <= len(self.copies) else None

    def avoided(self) -> tuple[str, ...]:
        """Volunteers that ran or hold a copy: the next one may not go there."""
        return tuple(dict.fromkeys(c.volunteer_id for c in self.copies if c.volunteer_id))

    def answers(self) -> list[Copy]:
        """The first completed copy of each distinct answer, in the order first seen."""
        first: dict[int, Copy] = {}
        for copy in self.copies:
            if copy.state is CopyState.COMPLETED and copy.answer >= 0:
                first.setdefault(copy.answer, copy)
        return [first[answer] for answer in sorted(first)]

    @property
    def extra_copies(self) -> int:
        return max(0, len(self.copies) - 1)

    # --- stimuli --------------------------------------------------------------------------

    def start(self) -> Decision:
        """The copies to run first."""
        count = self.policy.replicas if self.policy.mode is Mode.QUORUM else 1
        return Decision(submit=self._add(count))

    def fetching(self, number: int, volunteer_id: str, attempt: int) -> None:
        """A volunteer accepted the copy: it fetches what the copy needs, or waits for a
        slot."""
        self._held(number, volunteer_id, attempt, CopyState.FETCHING)

    def running(self, number: int, volunteer_id: str, attempt: int) -> None:
        """The copy's container started (or, from an older volunteer, it was accepted)."""
        self._held(number, volunteer_id, attempt, CopyState.RUNNING)

    def handed_back(self, number: int) -> None:
        """The coordinator queued the copy again (declined, volunteer lost)."""
        copy = self.copy(number)
        if copy is not None and copy.state.live:
            copy.state = CopyState.QUEUED

    def completed(
        self,
        number: int,
        volunteer_id: str,
        result: TaskResult,
        answer: int,
        trusted: bool,
        spot_check: bool,
    ) -> Decision:
        """A copy's result arrived whole. `answer` says which of `answers()` it matches
        (len(answers()) for a new one); `trusted` whether its volunteer was trusted as it
        arrived; `spot_check` the random draw that checks a trusted volunteer anyway."""
        copy = self.copy(number)
        if copy is None or not copy.state.live:
            return Decision()
        if any(
            c.volunteer_id == volunteer_id and c.state is CopyState.COMPLETED for c in self.copies
        ):
            # Never two answers from one volunteer: the coordinator keeps copies apart, and
            # this is the check behind it.
            copy.volunteer_id = volunteer_id
            return self.failed_copy(number, result, "its volunteer ran another copy")
        copy.state = CopyState.COMPLETED
        copy.volunteer_id = volunteer_id
        copy.attempt = result.attempt
        copy.result = result
        copy.answer = answer
        if self.decided:
            return self._judge_late(copy)
        completed = [c for c in self.copies if c.state is CopyState.COMPLETED]
        if self.policy.mode is Mode.ADAPTIVE and len(completed) == 1 and trusted and not spot_check:
            copy.verdict = Verdict.UNCHECKED
            return replace(self._accept(copy, "its volunteer is trusted"), judged=(copy,))
        return self._tally()

    def failed_copy(self, number: int, result: TaskResult | None, message: str) -> Decision:
        """A copy failed for good at the coordinator (its retries spent)."""
        copy = self.copy(number)
        if copy is None or not copy.state.live:
            return Decision()
        copy.state = CopyState.FAILED
        copy.result = result
        if self.decided:
            return Decision()
        if not any(c.state is CopyState.COMPLETED for c in self.copies):
            if not any(c.state.live for c in self.copies):
                self.failed = True
                self.outcome = message
                return Decision(fail=message)
            return Decision()
        return self._tally()

    def reopen(self) -> Decision:
        """The answer that stood unchecked came from a volunteer since caught disagreeing:
        it is checked after all (another copy runs); nothing changes for an answer that
        was checked."""
        standing = self.copy(self.accepted)
        if standing is None or standing.verdict is not Verdict.UNCHECKED:
            return Decision()
        standing.verdict = Verdict.PENDING
        self.accepted = 0
        self.outcome = ""
        return self._tally()

    def cancelled(self, number: int) -> None:
        copy = self.copy(number)
        if copy is not None and copy.state.live:
            copy.state = CopyState.CANCELLED

    def unschedulable(self, number: int) -> Decision:
        """No volunteer online can run this copy apart from the others. Adaptive lets a
        lone answer stand, unverified, and fails a task whose copies disagree (nobody is left
        to settle it: waiting would be for ever in a small pool); quorum waits (the workflow
        shows why)."""
        copy = self.copy(number)
        if (
            self.decided
            or copy is None
            or not copy.state.live
            or number == 1
            or self.policy.mode is not Mode.ADAPTIVE
        ):
            return Decision()
        answers = self.answers()
        if len(answers) > 1:
            copy.state = CopyState.CANCELLED
            self.failed = True
            self.outcome = (
                f"{self._no_quorum([c for c in self.copies if c.state is CopyState.COMPLETED])}"
                "; no other volunteer online can run another copy. If this task's outputs "
                'differ from run to run (timestamps, randomness), give it validation = "none"'
            )
            return Decision(fail=self.outcome, cancel=(number,))
        if not answers:
            return Decision()
        copy.state = CopyState.CANCELLED
        only = answers[0]
        only.verdict = Verdict.UNCHECKED
        decision = self._accept(only, "unverified: no distinct volunteer could run a second copy")
        return replace(decision, cancel=(number,), judged=(only,))

    # --- internals ------------------------------------------------------------------------

    def _held(self, number: int, volunteer_id: str, attempt: int, state: CopyState) -> None:
        copy = self.copy(number)
        if copy is not None and copy.state.live:
            copy.state = state
            copy.volunteer_id = volunteer_id
            copy.attempt = attempt

    def _add(self, count: int) -> tuple[int, ...]:
        first = len(self.copies) + 1
        self.copies += [Copy(number) for number in range(first, first + count)]
        return tuple(range(first, first + count))

    def _tally(self) -> Decision:
        completed = [c for c in self.copies if c.state is CopyState.COMPLETED]
        sizes = Counter(c.answer for c in completed)
        answer, agreeing = sizes.most_common(1)[0] if sizes else (-1, 0)
        if agreeing >= self.policy.quorum:
            winner = next(c for c in completed if c.answer == answer)
            judged = []
            for copy in completed:
                copy.verdict = Verdict.AGREED if copy.answer == answer else Verdict.DISAGREED
                judged.append(copy)
            decision = self._accept(winner, f"{agreeing} of {len(completed)} copies agreed")
            return replace(decision, judged=tuple(judged))
        live = sum(c.state.live for c in self.copies)
        wanted = self.policy.quorum - agreeing - live
        room = self.policy.max_copies - len(self.copies)
        if wanted > 0 and room > 0:
            return Decision(submit=self._add(min(wanted, room)))
        if live:
            return Decision()
        self.failed = True
        self.outcome = self._no_quorum(completed)
        return Decision(fail=self.outcome)

    def _accept(self, copy: Copy, why: str) -> Decision:
        self.accepted = copy.number
        self.outcome = why
        return Decision(accept=copy)

    def _judge_late(self, copy: Copy) -> Decision:
        """A copy after the decision: judged against the result that stands (for trust),
        never a second result. After a failure there is nothing to judge it against."""
        if not self.accepted:
            return Decision()
        standing = self.copy(self.accepted)
        assert standing is not None
        agrees = copy.answer == standing.answer
        if standing.verdict is Verdict.UNCHECKED:
            if not agrees:
                return Decision()  # one against one: which is wrong, nobody can say
            # An answer that stood alone, now confirmed: both agreed.
            standing.verdict = copy.verdict = Verdict.AGREED
            return Decision(judged=(standing, copy))
        copy.verdict = Verdict.AGREED if agrees else Verdict.DISAGREED
        return Decision(judged=(copy,))

    def _no_quorum(self, completed: list[Copy]) -> str:
        answers = Counter(c.answer for c in completed)
        listed = "; ".join(
            f"answer {answer + 1}: {count} cop{'y' if count == 1 else 'ies'} ("
            + ", ".join(c.volunteer_id[:8] for c in completed if c.answer == answer)
            + ")"
            for answer, count in sorted(answers.items())
        )
        failures = sum(c.state is CopyState.FAILED for c in self.copies)
        tail = f"; {failures} failed" if failures else ""
        return (
            f"no quorum: {self.policy.quorum} agreeing copies needed, "
            f"{len(completed) + failures} ran ({listed}{tail})"
        )
