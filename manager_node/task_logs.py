"""What tasks wrote, as `vcnode logs` reads it: an ended attempt's stdout or stderr (any
attempt's: each is kept as its result arrives), or a running task's as it comes (`-f`).

A replicated task runs as copies, `<task>~<n>` for n >= 2 (the task's own id is copy 1),
each with attempts of its own. `TASK~N` names copy N; TASK alone names the task: without
`--attempt`, the result that stands (a replicated task's: its accepted copy's), and its
first copy for `--attempt` and for following.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from daemon.errors import InvalidInputError, NotFoundError
from daemon.models import FileRef, TaskResult
from daemon.transfer.blobstore import BlobStore
from manager_node.live_logs import (
    STREAMS,
    AttemptStarted,
    Data,
    LiveLogs,
    Note,
    Piece,
    Source,
    Unit,
)
from manager_node.store import AttemptLog, ManagerStore, StoredTask
from manager_node.validation import copy_id, task_of

# Task names listed when a workflow of several tasks is asked for the log of "its task".
NAMES_SHOWN = 10


@dataclass(frozen=True)
class TaskLog:
    task_id: str  # the task's, or the copy's whose attempt it is
    name: str
    state: str
    content: bytes
    # Why the log is not whole, or why there is none.
    note: str
    # The attempt it is of (0: none), and the attempts of that task or copy with logs kept.
    attempt: int = 0
    attempts: tuple[int, ...] = ()


@dataclass(frozen=True)
class LogUnit:
    """What `vcnode logs` reads: a task, or one copy of a replicated task."""

    workflow_id: str
    task: StoredTask
    number: int  # the copy (1: the task itself)

    @property
    def task_id(self) -> str:
        return copy_id(self.task.task_id, self.number)

    @property
    def name(self) -> str:
        return self.task.name if self.number == 1 else f"{self.task.name}~{self.number}"

    @property
    def state(self) -> str:
        if self.number > 1 and self.number <= len(self.task.copies):
            return self.task.copies[self.number - 1]
        return self.task.state


# How the unit stands in a workflow still going; None once the workflow ended.
UnitNow = Callable[[LogUnit], Unit | None]


class TaskLogs:
    def __init__(
        self, store: ManagerStore, blobs: BlobStore, live: LiveLogs, unit_now: UnitNow
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._live = live
        self._unit_now = unit_now

    async def unit(self, workflow_id: str, task: str) -> LogUnit:
        """The task (by name or id; "" for the workflow's only task) or copy (TASK~N)."""
        base, number = task_of(task)
        if not base:
            names = await self._store.task_names(workflow_id, NAMES_SHOWN + 1)
            if len(names) != 1:
                more = ", ..." if len(names) > NAMES_SHOWN else ""
                shown = ", ".join(names[:NAMES_SHOWN]) + more
                raise InvalidInputError(
                    f"workflow {workflow_id} has several tasks: name one ({shown})"
                    if names
                    else f"workflow {workflow_id} has no task"
                )
            base = names[0]
        found = await self._store.find_task(workflow_id, base)
        if found is None:
            raise NotFoundError(f"workflow {workflow_id} has no task {task[:80]!r}")
        if number > 1 and number > len(found.copies):
            ran = (
                f"its copies are 1 to {len(found.copies)}"
                if found.copies
                else "it is not replicated, or no copy of it ran yet"
            )
            raise NotFoundError(f"task {found.name} has no copy {number}: {ran}")
        return LogUnit(workflow_id, found, number)

    async def task_log(self, workflow_id: str, task: str, stream: str, attempt: int) -> TaskLog:
        """What the task (or copy) wrote to `stream` in that attempt; without one, in the
        result that stands, else in its latest attempt that ended."""
        _check_stream(stream)
        if attempt < 0:
            raise InvalidInputError(f"an attempt is a number from 1, not {attempt}")
        unit = await self.unit(workflow_id, task)
        attempts = await self._store.attempts(unit.task_id)
        numbers = tuple(a.attempt for a in attempts)
        if attempt:
            chosen = next((a for a in attempts if a.attempt == attempt), None)
            if chosen is None:
                raise NotFoundError(self._no_such_attempt(unit, attempt, numbers))
            return await self._attempt_log(unit, unit.task_id, chosen, stream, numbers)
        result = unit.task.result
        if unit.number == 1 and result is not None:
            # The result that stands (or that failed the task): a replicated task's came from
            # one of its copies.
            source, numbers = await self._source_of(unit, result, attempts)
            return await self._log_of(
                source,
                unit.name,
                unit.state,
                result.logs,
                result.log_note,
                stream,
                result.attempt,
                numbers,
            )
        if attempts:
            return await self._attempt_log(unit, unit.task_id, attempts[-1], stream, numbers)
        running = self._running(unit)
        follow = f"; follow it: vcnode logs {workflow_id} {unit.name} -f" if running else ""
        note = f"{unit.name} has no result yet ({unit.state}){follow}"
        return TaskLog(unit.task_id, unit.name, unit.state, b"", note, 0, numbers)

    async def _source_of(
        self, unit: LogUnit, result: TaskResult, attempts: list[AttemptLog]
    ) -> tuple[str, tuple[int, ...]]:
        """The task or copy the task's result came from, and that one's attempts."""
        task = unit.task
        if task.accepted > 1:
            accepted = copy_id(task.task_id, task.accepted)
            return accepted, tuple(a.attempt for a in await self._store.attempts(accepted))
        if not task.accepted:  # it failed, with the result of copy 1 unless of another
            for number in range(2, len(task.copies) + 1):
                candidate = copy_id(task.task_id, number)
                found = await self._store.attempts(candidate)
                if any((a.attempt, a.logs) == (result.attempt, result.logs) for a in found):
                    return candidate, tuple(a.attempt for a in found)
        return unit.task_id, tuple(a.attempt for a in attempts)

    def _running(self, unit: LogUnit) -> int:
        now = self._unit_now(unit)
        return now.running if now is not None else 0

    def _no_such_attempt(self, unit: LogUnit, attempt: int, numbers: tuple[int, ...]) -> str:
        said = f"{unit.name} has no attempt {attempt} with a log"
        kept = (
            f"the attempts whose logs are kept are {', '.join(map(str, numbers))}"
            if numbers
            else "no attempt of it has ended yet"
        )
        running = self._running(unit)
        if running == attempt:
            said = f"attempt {attempt} of {unit.name} is still running"
            kept += f" (follow it: vcnode logs {unit.workflow_id} {unit.name} -f)"
        elif running:
            kept += f"; attempt {running} runs now"
        return f"{said}: {kept}"

    async def _attempt_log(
        self,
        unit: LogUnit,
        source: str,
        found: AttemptLog,
        stream: str,
        numbers: tuple[int, ...],
    ) -> TaskLog:
        note = found.note
        if found.error:
            note = "; ".join(filter(None, [f"attempt {found.attempt} failed: {found.error}", note]))
        return await self._log_of(
            source, unit.name, unit.state, found.logs, note, stream, found.attempt, numbers
        )

    async def _log_of(
        self,
        source: str,
        name: str,
        state: str,
        logs: Sequence[FileRef],
        note: str,
        stream: str,
        attempt: int,
        numbers: tuple[int, ...],
    ) -> TaskLog:
        refs = [ref for ref in logs if ref.name == stream]
        if not refs:
            said = f"{name} wrote nothing to {stream}"
            note = "; ".join(filter(None, [said, note]))
            return TaskLog(source, name, state, b"", note, attempt, numbers)
        content = await self._read(refs[0])
        if content is None:
            note = "; ".join(filter(None, [note, _gone(attempt)]))
            content = b""
        return TaskLog(source, name, state, content, note, attempt, numbers)

    async def _read(self, ref: FileRef) -> bytes | None:
        """The log's bytes; None when its blob is gone (a store before 0009 did not refer to
        the logs of a task's earlier results, and collected them as orphans)."""
        try:
            path = await self._blobs.path(ref.sha256)
            return await asyncio.to_thread(path.read_bytes)
        except (NotFoundError, FileNotFoundError):  # gone, or gone as we read it
            return None

    # --- following ------------------------------------------------------------------------

    async def follow(self, workflow_id: str, task: str, stream: str) -> AsyncGenerator[Piece, None]:
        """The task's (or copy's) log as it is written, until it ends."""
        _check_stream(stream)
        unit = await self.unit(workflow_id, task)

        async def now() -> Unit:
            current = self._unit_now(unit)
            if current is not None:
                return current
            # The workflow ended: what the store says is final.
            stored = await self._store.find_task(workflow_id, unit.task.task_id)
            ended = LogUnit(workflow_id, stored or unit.task, unit.number)
            error = ended.task.error if unit.number == 1 else ""
            return Unit(0, "", True, ended.state, error)

        async def stored(attempt: int) -> bytes | Note | None:
            for found in await self._store.attempts(unit.task_id):
                if found.attempt == attempt:
                    refs = [ref for ref in found.logs if ref.name == stream]
                    if not refs:
                        return b""
                    content = await self._read(refs[0])
                    return content if content is not None else Note(_gone(attempt))
            return None

        async def last() -> Sequence[Piece]:
            shown = await self.task_log(workflow_id, unit.task_id, stream, 0)
            pieces: list[Piece] = []
            if shown.attempt:
                pieces.append(AttemptStarted(shown.task_id, shown.attempt, ""))
            if shown.content:
                pieces.append(Data(shown.content))
            if shown.note:
                pieces.append(Note(shown.note))
            return pieces

        source = Source(unit.task_id, unit.name, stream, now, stored, last)
        async for piece in self._live.follow(workflow_id, source):
            yield piece


def _gone(attempt: int) -> str:
    said = f"the log of attempt {attempt}" if attempt else "this log"
    return f"{said} is no longer kept on this manager"


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise InvalidInputError(f"a log is stdout or stderr, not {stream[:40]!r}")
