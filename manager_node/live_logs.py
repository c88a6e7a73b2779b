"""Running attempts' output as their volunteers push it, and those who follow it
(`vcnode logs -f`, like `nomad alloc logs -f`).

Each running attempt that wrote something has a tail here: the newest TAIL_BYTES of each
stream, fewer when many attempts run (all tails together stay within BUDGET_BYTES), dropped
when the attempt ends. A follower reads a tail from where it is, then waits for the next
push; when the attempt ends it prints the rest from the log stored with the result, and it
ends when its task does. A follower is one waiting coroutine and a count: one that goes away
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from daemon.runtime.spec import LOG_BYTES, LogChunk

STREAMS = ("stdout", "stderr")
TAIL_BYTES = 512 * 1024  # of each stream of one attempt
BUDGET_BYTES = 256 * 1024 * 1024  # of every tail together
# A follower looks again this often even when told nothing (a change no hook reports).
RECHECK_SECONDS = 5.0
PIECE_BYTES = 1024 * 1024


@dataclass
class _Stream:
    """The newest bytes of one stream: `data` begins at offset `start` of the stream."""

    start: int = 0
    data: bytearray = field(default_factory=bytearray)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def add(self, offset: int, chunk: bytes) -> None:
        if offset > self.end:  # the volunteer skipped what lies between: start again there
            self.data.clear()
            self.start = offset
        elif offset < self.end:  # a push sent again: only what is new
            chunk = chunk[self.end - offset :]
        self.data += chunk

    def trim(self, cap: int) -> None:
        excess = len(self.data) - cap
        if excess > 0:
            del self.data[:excess]
            self.start += excess

    def read(self, position: int) -> tuple[int, bytes]:
        """(bytes skipped before what is still here, what is here from `position` on)."""
        skipped = max(0, self.start - position)
        return skipped, bytes(self.data[max(position, self.start) - self.start :])


@dataclass
class LiveTail:
    """What one running attempt of a task (or of a copy) wrote lately."""

    task_id: str
    attempt: int
    volunteer_id: str
    streams: dict[str, _Stream] = field(default_factory=lambda: {s: _Stream() for s in STREAMS})
    # Its volunteer sent its last bytes: each stream's `end` is all it wrote.
    final: bool = False
    # The attempt is over: nothing more comes.
    ended: bool = False

    @property
    def size(self) -> int:
        return sum(len(stream.data) for stream in self.streams.values())


@dataclass
class _Slot:
    """A task (or copy) someone follows or that pushed: its tail, its followers, and the
    event that tells them something changed (a fresh one after each change)."""

    workflow_id: str
    tail: LiveTail | None = None
    followers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


# What a follower is told, in order.
@dataclass(frozen=True)
class AttemptStarted:
    task_id: str
    attempt: int
    volunteer_id: str


@dataclass(frozen=True)
class Data:
    content: bytes


@dataclass(frozen=True)
class Skipped:
    count: int


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Ended:
    task_id: str
    name: str
    state: str
    error: str


Piece = AttemptStarted | Data | Skipped | Note | Ended


@dataclass(frozen=True)
class Unit:
    """How the task (or copy) followed stands now."""

    running: int  # the attempt it runs now; 0: none
    volunteer_id: str
    finished: bool
    state: str
    error: str


@dataclass(frozen=True)
class Source:
    """The manager's side of a follow: what stands now, an ended attempt's stored stream
    (None when no log of it arrived), and the pieces that show a unit that ended before
    anything of it was followed."""

    task_id: str
    name: str
    stream: str
    now: Callable[[], Awaitable[Unit]]
    stored: Callable[[int], Awaitable[bytes | None]]
    last: Callable[[], Awaitable[Sequence[Piece]]]


class LiveLogs:
    def __init__(self, tail_bytes: int = TAIL_BYTES, budget_bytes: int = BUDGET_BYTES) -> None:
        self._tail_bytes = tail_bytes
        self._budget = budget_bytes
        self._slots: dict[str, _Slot] = {}  # by task (or copy) id
        self._tails = 0
        self.held_bytes = 0
        self._closed = False

    # --- what volunteers push and the manager says ------------------------------------------

    def push(
        self,
        workflow_id: str,
        task_id: str,
        attempt: int,
        volunteer_id: str,
        chunks: Sequence[LogChunk],
        final: bool,
    ) -> bool:
        """New output of a running attempt, from the volunteer the manager found holds it;
        returns whether someone follows the task."""
        slot = self._slots.get(task_id)
        tail = slot.tail if slot is not None else None
        if tail is None or (tail.attempt, tail.volunteer_id) != (attempt, volunteer_id):
            if not any(chunk.data for chunk in chunks):
                return slot is not None and slot.followers > 0  # nothing to keep
            if slot is None:
                slot = self._slots[task_id] = _Slot(workflow_id)
            if tail is not None:  # an attempt the manager has not yet heard ended
                self._end(slot)
            tail = slot.tail = LiveTail(task_id, attempt, volunteer_id)
            self._tails += 1
        assert slot is not None
        before = tail.size
        # A fair share of the budget for each running attempt, within TAIL_BYTES a stream.
        cap = min(self._tail_bytes, self._budget // (len(STREAMS) * self._tails))
        for chunk in chunks:
            stream = tail.streams[chunk.stream]
            stream.add(chunk.offset, chunk.data)
            stream.trim(cap)
        tail.final = tail.final or final
        self.held_bytes += tail.size - before
        slot.notify()
        return slot.followers > 0

    def held(self, task_id: str, volunteer_id: str) -> None:
        """`volunteer_id` holds the task (or copy) now ("": nobody): the tail of an attempt
        held by another, or by nobody, is over. Its followers look again."""
        slot = self._slots.get(task_id)
        if slot is None:
            return
        if slot.tail is not None and slot.tail.volunteer_id != volunteer_id:
            self._end(slot)
        slot.notify()
        self._forget_if_idle(task_id, slot)

    def workflow_ended(self, workflow_id: str) -> None:
        """Every attempt of the workflow is over; its followers look again."""
        for task_id, slot in list(self._slots.items()):
            if slot.workflow_id == workflow_id:
                self._end(slot)
                slot.notify()
                self._forget_if_idle(task_id, slot)

    def close(self) -> None:
        """The manager stops: followers end."""
        self._closed = True
        for slot in self._slots.values():
            slot.notify()

    def _end(self, slot: _Slot) -> None:
        tail = slot.tail
        if tail is None:
            return
        # Followers still reading it keep it until they are done; the budget forgets it.
        tail.ended = True
        self.held_bytes -= tail.size
        self._tails -= 1
        slot.tail = None

    def _forget_if_idle(self, task_id: str, slot: _Slot) -> None:
        if slot.tail is None and not slot.followers and self._slots.get(task_id) is slot:
            del self._slots[task_id]

    @contextlib.contextmanager
    def _following(self, task_id: str, workflow_id: str) -> Iterator[_Slot]:
        slot = self._slots.get(task_id)
        if slot is None:
            slot = self._slots[task_id] = _Slot(workflow_id)
        slot.followers += 1
        try:
            yield slot
        finally:
            slot.followers -= 1
            self._forget_if_idle(task_id, slot)

    # --- followers --------------------------------------------------------------------------

    async def follow(self, workflow_id: str, source: Source) -> AsyncIterator[Piece]:
        """The task's log as it comes, attempt after attempt, until the task ends."""
        with self._following(source.task_id, workflow_id) as slot:
            follower = _Follower(source)
            while not self._closed:
                changed = slot.changed  # before looking: a change while we look wakes us
                unit = await source.now()
                async for piece in follower.step(unit, slot.tail):
                    yield piece
                if follower.ended:
                    return
                if follower.moved:
                    continue  # a new attempt: read it at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), RECHECK_SECONDS)
            yield Note("the manager is stopping: follow again once it is back")


class _Follower:
    """Where one follower stands: the attempt it follows, the tail it reads, how far."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._attempt = 0  # followed now (0: none)
        self._tail: LiveTail | None = None
        self._position = 0
        self._done: set[int] = set()  # attempts followed to their end
        self.ended = False
        self.moved = False

    async def step(self, unit: Unit, tail: LiveTail | None) -> AsyncIterator[Piece]:
        self.moved = False
        live = tail if tail is not None and not tail.ended else None
        if self._attempt:
            if self._tail is None and live is not None and live.attempt == self._attempt:
                self._tail = live
            if self._tail is not None:
                for piece in self._read(self._tail):
                    yield piece
            still_running = (self._tail is not None and not self._tail.ended) or (
                unit.running == self._attempt
            )
            if still_running:
                return
            async for piece in self._rest():
                yield piece
            self._done.add(self._attempt)
            self._attempt, self._tail, self._position = 0, None, 0
        starting = live.attempt if live is not None else unit.running
        if starting and starting not in self._done:
            self._attempt, self._position = starting, 0
            self._tail = live if live is not None and live.attempt == starting else None
            volunteer = live.volunteer_id if live is not None else unit.volunteer_id
            yield AttemptStarted(self._source.task_id, starting, volunteer)
            self.moved = True
            return
        if unit.finished:
            if not self._done:  # it ended before anything of it could be followed
                for piece in await self._source.last():
                    yield piece
            yield Ended(self._source.task_id, self._source.name, unit.state, unit.error)
            self.ended = True

    def _read(self, tail: LiveTail) -> Iterator[Piece]:
        skipped, content = tail.streams[self._source.stream].read(self._position)
        if skipped:
            yield Skipped(skipped)
        self._position += skipped
        for start in range(0, len(content), PIECE_BYTES):
            yield Data(content[start : start + PIECE_BYTES])
        self._position += len(content)

    async def _rest(self) -> AsyncIterator[Piece]:
        """What the followed attempt wrote after its last push, from the log stored with its
        result: exact while that log is whole (under LOG_BYTES); past that, placed by the
        attempt's final push (or all of it when nothing came live)."""
        attempt = self._attempt
        stored = await self._source.stored(attempt)
        if stored is None:
            yield Note(f"attempt {attempt} ended and no log of it reached the manager")
            return
        position = self._position
        if len(stored) < LOG_BYTES:
            content = stored[position:]
        elif self._tail is not None and self._tail.final:
            end = self._tail.streams[self._source.stream].end
            begins = end - len(stored)  # where the stored last LOG_BYTES begin
            if position < begins:
                yield Skipped(begins - position)
                position = begins
            content = stored[position - begins :] if position < end else b""
        elif position == 0:  # nothing of it came live: what was kept is all there is
            yield Note(f"only the last {LOG_BYTES // 2**20} MiB of attempt {attempt} were kept")
            content = stored
        else:
            yield Note(
                f"the end of attempt {attempt}'s {self._source.stream} may be missing here: "
                f"`--attempt {attempt}` prints its last {LOG_BYTES // 2**20} MiB"
            )
            return
        for start in range(0, len(content), PIECE_BYTES):
            yield Data(content[start : start + PIECE_BYTES])
