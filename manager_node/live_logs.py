"""Running attempts' output as their volunteers push it, and those who follow it
(`vcnode logs -f`, like `nomad alloc logs -f`).

Each running attempt whose volunteer pushed output has a tail here: the newest TAIL_BYTES of
each stream, fewer when many attempts run, dropped when the attempt ends. All tails together
never hold more than BUDGET_BYTES: a push that would go over trims the largest tails first
(their oldest bytes), down to a fair share at most. A volunteer pushes output only while
someone follows its task (a push's answer says whether anyone does); while nobody does it
asks every PROBE_SECONDS, so a follower arriving mid-attempt is told live output may take
that long to start. A follower reads a tail from where it is, then waits for the next push;
when the attempt ends it prints the rest from the log stored with the result, and it ends
when its task does. A follower is one waiting coroutine and a count: one that goes away
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from daemon.runtime.spec import LOG_BYTES, LogChunk

STREAMS = ("stdout", "stderr")
TAIL_BYTES = 512 * 1024  # of each stream of one attempt
BUDGET_BYTES = 256 * 1024 * 1024  # of every tail together
# A follower looks again this often even when told nothing (a change no hook reports).
RECHECK_SECONDS = 5.0
PIECE_BYTES = 1024 * 1024
# How often a volunteer nobody follows asks whether someone does now: volunteer_node's
# live_logs.py holds the same number (a test pins it), and why it is what it is. A follower
# who arrives mid-attempt sees live output within a question and a push of it.
PROBE_SECONDS = 30.0
LIVE_WITHIN_SECONDS = PROBE_SECONDS + 2.0


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
    serial: int  # which tail it is, for the budget's heap (each tail has its own)
    streams: dict[str, _Stream] = field(default_factory=lambda: {s: _Stream() for s in STREAMS})
    # Its volunteer sent its last bytes: each stream's `end` is all it wrote.
    final: bool = False
    # The attempt is over: nothing more comes.
    ended: bool = False

    @property
    def size(self) -> int:
        return sum(len(stream.data) for stream in self.streams.values())

    def shrink(self, count: int) -> None:
        """Drops the oldest `count` bytes, from the largest streams first."""
        while count > 0:
            streams = sorted(self.streams.values(), key=lambda stream: -len(stream.data))
            top = len(streams[0].data)
            largest = [stream for stream in streams if len(stream.data) == top]
            below = max((len(s.data) for s in streams if len(s.data) < top), default=0)
            room = (top - below) * len(largest)
            if room < count:
                for stream in largest:
                    stream.trim(below)
                count -= room
                continue
            each, extra = divmod(count, len(largest))
            for number, stream in enumerate(largest):
                stream.trim(top - each - (number < extra))
            return


@dataclass
class _Slot:
    """A task (or copy) someone follows or that pushed: its tail, its followers, and the
    event that tells them something changed (a fresh one after each change)."""

    workflow_id: str
    tail: LiveTail | None = None
    followers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The attempt (and its volunteer) last told someone follows: it pushes every second.
    told: tuple[int, str] | None = None

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
    (None when no log of it arrived; a Note when it cannot be shown), and the pieces that
    show a unit that ended before anything of it was followed."""

    task_id: str
    name: str
    stream: str
    now: Callable[[], Awaitable[Unit]]
    stored: Callable[[int], Awaitable[bytes | Note | None]]
    last: Callable[[], Awaitable[Sequence[Piece]]]


class LiveLogs:
    def __init__(self, tail_bytes: int = TAIL_BYTES, budget_bytes: int = BUDGET_BYTES) -> None:
        self._tail_bytes = tail_bytes
        self._budget = budget_bytes
        self._slots: dict[str, _Slot] = {}  # by task (or copy) id
        self._tails = 0
        self.held_bytes = 0
        # The tails by size, largest first: (-size, serial, task id) of each tail each time
        # its size changed. An entry whose tail has another size by now, or is gone, is
        # stale: skipped when met, all dropped when they outnumber the tails.
        self._by_size: list[tuple[int, int, str]] = []
        self._serials = itertools.count(1)
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
                # Nothing to keep: a question whether anyone follows (or an end).
                return self._answer(slot, attempt, volunteer_id)
            if slot is None:
                slot = self._slots[task_id] = _Slot(workflow_id)
            if tail is not None:  # an attempt the manager has not yet heard ended
                self._end(slot)
            tail = slot.tail = LiveTail(task_id, attempt, volunteer_id, next(self._serials))
            self._tails += 1
        assert slot is not None
        if not chunks and not final:
            return self._answer(slot, attempt, volunteer_id)
        before = tail.size
        cap = self._fair_share()
        for chunk in chunks:
            stream = tail.streams[chunk.stream]
            stream.add(chunk.offset, chunk.data)
            stream.trim(cap)
        tail.final = tail.final or final
        self.held_bytes += tail.size - before
        self._sized(tail)
        self._within_budget()
        slot.notify()
        return self._answer(slot, attempt, volunteer_id)

    @staticmethod
    def _answer(slot: _Slot | None, attempt: int, volunteer_id: str) -> bool:
        """Whether someone follows, as told to the attempt's volunteer (and remembered)."""
        if slot is None:
            return False
        followed = slot.followers > 0
        slot.told = (attempt, volunteer_id) if followed else None
        return followed

    def _fair_share(self) -> int:
        """What each stream of each tail may hold: the budget's share, within TAIL_BYTES."""
        return min(self._tail_bytes, self._budget // (len(STREAMS) * max(self._tails, 1)))

    def _sized(self, tail: LiveTail) -> None:
        heapq.heappush(self._by_size, (-tail.size, tail.serial, tail.task_id))
        if len(self._by_size) > 2 * self._tails + 64:
            self._by_size = [
                (-slot.tail.size, slot.tail.serial, task_id)
                for task_id, slot in self._slots.items()
                if slot.tail is not None
            ]
            heapq.heapify(self._by_size)

    def _within_budget(self) -> None:
        """Trims the largest tails, each to its fair share at most, until all of them hold
        the budget at most: were every tail within its share, they would."""
        floor = len(STREAMS) * self._fair_share()
        while self.held_bytes > self._budget and self._by_size:
            size, serial, task_id = heapq.heappop(self._by_size)
            slot = self._slots.get(task_id)
            tail = slot.tail if slot is not None else None
            if tail is None or (tail.serial, tail.size) != (serial, -size):
                continue  # stale
            cut = min(self.held_bytes - self._budget, tail.size - floor)
            if cut <= 0:  # the largest is within its share, so all are: cannot happen
                heapq.heappush(self._by_size, (size, serial, task_id))
                return
            tail.shrink(cut)
            self.held_bytes -= cut
            self._sized(tail)

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
                async for piece in follower.step(unit, slot.tail, slot.told):
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
        self._first = True  # it has not looked yet
        self.ended = False
        self.moved = False

    async def step(
        self, unit: Unit, tail: LiveTail | None, told: tuple[int, str] | None
    ) -> AsyncIterator[Piece]:
        """`told`: the attempt (and volunteer) last told someone follows."""
        self.moved = False
        first, self._first = self._first, False
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
            # An attempt that started while followed asks a second after its first output,
            # and is told; one that ran before may have been told nobody follows.
            if first and unit.running == starting and told != (starting, volunteer):
                yield Note(
                    f"live output starts within {LIVE_WITHIN_SECONDS:.0f} s: a volunteer asks "
                    f"every {PROBE_SECONDS:.0f} s whether anyone follows its task; what "
                    f"attempt {starting} wrote before is in `--attempt {starting}` once it ends"
                )
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
        if isinstance(stored, Note):
            yield stored
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
