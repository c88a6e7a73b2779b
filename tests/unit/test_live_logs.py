"""Live logs as pure logic: the volunteer's pending bytes and pushes, the manager's bounded
tails, and a follower's way through attempts to the end of its task (fakes stand for the
manager's records and the network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from daemon.errors import AccessDeniedError, UnreachableError
from daemon.runtime.spec import LOG_BYTES, LogChunk
from manager_node import live_logs as manager_live_logs
from manager_node.live_logs import (
    AttemptStarted,
    Data,
    Ended,
    LiveLogs,
    Note,
    Piece,
    Skipped,
    Source,
    Unit,
)
from volunteer_node import live_logs as volunteer_live_logs
from volunteer_node.live_logs import LiveLog, LogPush, pushing

# --- the volunteer ---------------------------------------------------------------------------


def test_pending_bytes_keep_the_newest_and_their_offsets_say_what_was_skipped() -> None:
    live = LiveLog(cap=4)
    live.write("stdout", b"abc")
    live.write("stderr", b"e")
    assert live.take() == (LogChunk("stdout", 0, b"abc"), LogChunk("stderr", 0, b"e"))
    assert live.take() == ()
    live.write("stdout", b"defgh")  # bytes 3 to 8 of the stream
    live.write("stdout", b"ij")
    assert live.take() == (LogChunk("stdout", 6, b"ghij"),)  # "def" skipped


@dataclass
class Manager:
    """Takes pushes; `refuse` or `away` as a real one might; says whether someone follows."""

    pushes: list[LogPush] = field(default_factory=list)
    followed: bool = True
    refuse: bool = False
    away: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a push got here
    asked: asyncio.Event = field(default_factory=asyncio.Event)  # one was tried

    async def push(self, message: LogPush) -> bool:
        self.asked.set()
        if self.refuse:
            raise AccessDeniedError("not yours")
        if self.away:
            raise UnreachableError("no manager answered")
        self.pushes.append(message)
        self.arrived.set()
        return self.followed

    async def until(self, wanted: Callable[[list[LogPush]], bool]) -> list[LogPush]:
        """The pushes, once `wanted` holds of them (within a deadline)."""
        async with asyncio.timeout(DEADLINE_SECONDS):
            while not wanted(self.pushes):
                self.arrived.clear()
                await self.arrived.wait()
        return list(self.pushes)


DEADLINE_SECONDS = 5.0


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The volunteer's pace, short enough for a test (what is measured is what it sends, never
    how long it took)."""
    monkeypatch.setattr(volunteer_live_logs, "FOLLOWED_PUSH_SECONDS", 0.01)
    monkeypatch.setattr(volunteer_live_logs, "PROBE_SECONDS", 0.02)
    return monkeypatch


def questions(pushes: Sequence[LogPush]) -> int:
    return sum(not push.chunks and not push.final for push in pushes)


async def test_new_output_is_pushed_as_it_comes_and_the_rest_at_the_end() -> None:
    manager = Manager()
    async with pushing("t", 2, manager.push) as live:
        assert live is not None
        live.write("stdout", b"first\n")
        await manager.until(lambda pushes: any(push.chunks for push in pushes))
        live.write("stdout", b"second\n")  # waits for the next second: the end comes first
    # It asked first whether anyone follows; someone did.
    assert manager.pushes == [
        LogPush("t", 2, ()),
        LogPush("t", 2, (LogChunk("stdout", 0, b"first\n"),)),
        LogPush("t", 2, (LogChunk("stdout", 6, b"second\n"),), final=True),
    ]


async def test_a_task_that_ends_within_its_first_second_costs_no_push() -> None:
    manager = Manager()
    async with pushing("t", 1, manager.push) as live:
        assert live is not None
        live.write("stdout", b"quick\n")  # its result carries it
    assert manager.pushes == []


async def test_output_nobody_follows_stays_on_the_volunteer_which_only_asks_now_and_then(
    quick: pytest.MonkeyPatch,
) -> None:
    manager = Manager(followed=False)
    async with pushing("t", 1, manager.push) as live:
        assert live is not None
        live.write("stdout", b"first\n")
        # Nobody follows: it asks again and again, and sends none of its output.
        await manager.until(lambda pushes: questions(pushes) >= 3)
        live.write("stdout", b"second\n")
        await manager.until(lambda pushes: questions(pushes) >= 5)
        assert all(push == LogPush("t", 1, ()) for push in manager.pushes)
        # Someone follows now: told so, it sends what is pending at once, not a period
        # later (a period of an hour would outlast the deadline).
        quick.setattr(volunteer_live_logs, "FOLLOWED_PUSH_SECONDS", 3600.0)
        manager.followed = True
        pushes = await manager.until(lambda pushes: any(push.chunks for push in pushes))
        assert pushes[-1] == LogPush("t", 1, (LogChunk("stdout", 0, b"first\nsecond\n"),))
        assert pushes[-2] == LogPush("t", 1, ())  # the question told it so
    # Followed at its end: the end is pushed.
    assert manager.pushes[-1] == LogPush("t", 1, (), final=True)


async def test_once_its_follower_left_output_stays_on_the_volunteer_again(
    quick: pytest.MonkeyPatch,
) -> None:
    manager = Manager(followed=True)
    async with pushing("t", 1, manager.push) as live:
        assert live is not None
        live.write("stdout", b"first\n")
        await manager.until(lambda pushes: any(push.chunks for push in pushes))
        # The follower left: the next push is told so, and then only questions go.
        manager.followed = False
        live.write("stdout", b"second\n")
        await manager.until(lambda pushes: sum(bool(push.chunks) for push in pushes) == 2)
        told = len(manager.pushes)
        live.write("stdout", b"third\n")
        await manager.until(lambda pushes: questions(pushes[told:]) >= 3)
        assert not any(push.chunks for push in manager.pushes[told:])
    # Nobody followed at the end: no last push either.
    assert not any(push.final for push in manager.pushes)


async def test_a_silent_task_asks_nothing(quick: pytest.MonkeyPatch) -> None:
    talking, silent = Manager(followed=False), Manager(followed=False)
    async with (
        pushing("a", 1, talking.push) as said,
        pushing("b", 1, silent.push) as quiet,
    ):
        assert said is not None
        assert quiet is not None
        said.write("stdout", b"a line\n")
        # While the one asked twice, the other wrote nothing and asked nothing: it has
        # nothing to show anyone.
        await talking.until(lambda pushes: questions(pushes) >= 2)
    assert silent.pushes == []


async def test_a_refused_push_stops_the_pushes_and_one_that_fails_does_not(
    quick: pytest.MonkeyPatch,
) -> None:
    refusing = Manager(refuse=True)
    async with pushing("t", 1, refusing.push) as live:
        assert live is not None
        live.write("stdout", b"x")
        await asyncio.wait_for(refusing.asked.wait(), DEADLINE_SECONDS)  # refused: it stops
    assert refusing.pushes == []  # and no final push either

    away = Manager(away=True)
    async with pushing("t", 1, away.push) as live:
        assert live is not None
        live.write("stdout", b"lost\n")
        await asyncio.wait_for(away.asked.wait(), DEADLINE_SECONDS)
        away.away = False  # back, and followed: it asks again and pushes what is pending
        live.write("stdout", b"kept\n")
        await away.until(lambda pushes: any(push.chunks for push in pushes))
    assert next(push for push in away.pushes if push.chunks) == LogPush(
        "t", 1, (LogChunk("stdout", 0, b"lost\nkept\n"),)
    )


async def test_a_cancelled_attempt_pushes_no_end() -> None:
    manager = Manager()

    inside = asyncio.Event()

    async def attempt() -> None:
        async with pushing("t", 1, manager.push) as live:
            assert live is not None
            live.write("stdout", b"cut short\n")
            inside.set()
            await asyncio.Event().wait()

    running = asyncio.get_running_loop().create_task(attempt())
    await asyncio.wait_for(inside.wait(), 5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not any(push.final for push in manager.pushes)


def test_the_volunteer_asks_as_often_as_the_manager_tells_followers() -> None:
    assert volunteer_live_logs.PROBE_SECONDS == manager_live_logs.PROBE_SECONDS
    assert manager_live_logs.LIVE_WITHIN_SECONDS >= (
        volunteer_live_logs.PROBE_SECONDS + volunteer_live_logs.FOLLOWED_PUSH_SECONDS
    )


# --- the manager: tails ----------------------------------------------------------------------


def chunk(offset: int, data: bytes, stream: str = "stdout") -> LogChunk:
    return LogChunk(stream, offset, data)


def test_a_tail_keeps_the_newest_bytes_and_drops_with_its_attempt() -> None:
    logs = LiveLogs(tail_bytes=8, budget_bytes=1024)
    assert logs.push("wf", "t", 1, "v", [chunk(0, b"abcdef")], final=False) is False
    logs.push("wf", "t", 1, "v", [chunk(3, b"defghij")], final=False)  # sent again, in part
    assert logs.held_bytes == 8  # "cdefghij": the newest 8 of 10
    logs.held("t", "v")  # still its volunteer's: nothing ends
    assert logs.held_bytes == 8
    logs.held("t", "")  # handed back or ended
    assert logs.held_bytes == 0
    # Nothing is kept of a task nobody follows and nobody runs.
    assert logs.push("wf", "t", 2, "v", [], final=True) is False
    assert logs.held_bytes == 0


def test_the_tails_share_a_budget() -> None:
    logs = LiveLogs(tail_bytes=100, budget_bytes=80)  # 40 a stream for one tail, 20 for two
    logs.push("wf", "a", 1, "v", [chunk(0, b"x" * 50)], final=False)
    assert logs.held_bytes == 40
    logs.push("wf", "b", 1, "v", [chunk(0, b"y" * 50)], final=False)
    assert logs.held_bytes == 40 + 20
    logs.workflow_ended("wf")
    assert logs.held_bytes == 0


def held_in_tails(logs: LiveLogs) -> int:
    return sum(slot.tail.size for slot in logs._slots.values() if slot.tail is not None)


def test_many_tails_never_hold_more_than_the_budget() -> None:
    # 5,000 attempts of 1 KiB each against 256 KiB: 5,000 of 1 MiB against 256 MiB, scaled.
    budget = 256 * 1024
    logs = LiveLogs(tail_bytes=512, budget_bytes=budget)
    for n in range(5000):
        out, err = chunk(0, b"o" * 512), chunk(0, b"e" * 512, "stderr")
        logs.push("wf", f"t{n}", 1, "v", [out, err], final=False)
        assert logs.held_bytes <= budget, f"over the budget after {n + 1} tails"
    assert logs.held_bytes == held_in_tails(logs)
    # The newest tail keeps its fair share: the older ones made room.
    newest = logs._slots["t4999"].tail
    assert newest is not None
    assert newest.size >= 2 * (budget // (2 * 5000))


def test_the_largest_tails_make_room_for_a_new_one() -> None:
    logs = LiveLogs(tail_bytes=100, budget_bytes=200)
    logs.push("wf", "big", 1, "v", [chunk(0, b"x" * 100), chunk(0, b"y" * 100, "stderr")], False)
    assert logs.held_bytes == 200
    logs.push("wf", "small", 1, "v", [chunk(0, b"z" * 10)], final=False)
    assert logs.held_bytes == 200 == held_in_tails(logs)
    big, small = logs._slots["big"].tail, logs._slots["small"].tail
    assert big is not None
    assert small is not None
    assert small.size == 10  # what came last is kept
    # The big one lost its oldest bytes, from its larger stream first, and says where its
    # bytes now begin.
    assert big.size == 190
    assert {name: stream.start for name, stream in big.streams.items()} == {
        "stdout": 5,
        "stderr": 5,
    }
    # Its volunteer pushes on: it is held to its fair share (50 a stream of two tails).
    logs.push("wf", "big", 1, "v", [chunk(100, b"x" * 100)], final=False)
    assert logs.held_bytes <= 200
    assert logs.held_bytes == held_in_tails(logs)


# --- the manager: followers ------------------------------------------------------------------


@dataclass
class Task:
    """What the manager knows of the followed task, changed by the test."""

    unit: Unit = field(default_factory=lambda: Unit(0, "", False, "queued", ""))
    stored: dict[int, bytes] = field(default_factory=dict)
    last: Sequence[Piece] = ()
    # The follower looked how the task stands (it is listening for changes since).
    looked: asyncio.Event = field(default_factory=asyncio.Event)

    def source(self, stream: str = "stdout") -> Source:
        async def now() -> Unit:
            self.looked.set()
            return self.unit

        async def stored(attempt: int) -> bytes | None:
            return self.stored.get(attempt)

        async def last() -> Sequence[Piece]:
            return self.last

        return Source("wf.t", "t", stream, now, stored, last)


class Reader:
    """A follower, read in the background as a client would."""

    def __init__(self, pieces: AsyncIterator[Piece]) -> None:
        self.pieces: list[Piece] = []
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read(pieces))

    async def _read(self, pieces: AsyncIterator[Piece]) -> None:
        async for piece in pieces:
            self.pieces.append(piece)
            self._changed.set()

    async def until(self, count: int) -> list[Piece]:
        async with asyncio.timeout(5):
            while len(self.pieces) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.pieces


def without_waiting(pieces: Sequence[Piece]) -> list[Piece]:
    """The pieces but the note saying when live output starts (a follower who came while
    an attempt ran is told it)."""
    return [p for p in pieces if not (isinstance(p, Note) and p.text.startswith("live output"))]


async def test_a_follower_sees_the_running_attempt_then_the_rest_then_the_end() -> None:
    logs = LiveLogs()
    task = Task()
    reader = Reader(logs.follow("wf", task.source()))
    await asyncio.wait_for(task.looked.wait(), 5)
    task.unit = Unit(1, "v", False, "running", "")
    logs.held("wf.t", "v")
    assert await reader.until(1) == [AttemptStarted("wf.t", 1, "v")]
    logs.push("wf", "wf.t", 1, "v", [chunk(0, b"first\n"), chunk(0, b"err", "stderr")], False)
    assert (await reader.until(2))[1] == Data(b"first\n")
    # It ends: its last line came only with the result.
    task.stored[1] = b"first\nsecond\n"
    task.unit = Unit(0, "", True, "completed", "")
    logs.held("wf.t", "")
    assert (await reader.until(4))[2:] == [Data(b"second\n"), Ended("wf.t", "t", "completed", "")]
    await asyncio.wait_for(reader.task, 5)
    assert logs._slots == {}  # nothing left behind


async def test_a_follower_of_an_attempt_nobody_followed_is_told_when_live_output_starts() -> None:
    logs = LiveLogs()
    task = Task(unit=Unit(1, "v", False, "running", ""))
    # Its volunteer asked a while ago and was told nobody follows: it asks again only now
    # and then.
    assert logs.push("wf", "wf.t", 1, "v", [], final=False) is False
    reader = Reader(logs.follow("wf", task.source()))
    within = manager_live_logs.LIVE_WITHIN_SECONDS
    assert await reader.until(2) == [
        AttemptStarted("wf.t", 1, "v"),
        Note(
            f"live output starts within {within:.0f} s: a volunteer asks every "
            f"{manager_live_logs.PROBE_SECONDS:.0f} s whether anyone follows its task; "
            "what attempt 1 wrote before is in `--attempt 1` once it ends"
        ),
    ]
    # It asks now: told someone follows, it pushes at once.
    assert logs.push("wf", "wf.t", 1, "v", [], final=False) is True
    logs.push("wf", "wf.t", 1, "v", [chunk(700, b"live\n")], final=False)
    assert (await reader.until(4))[2:] == [Skipped(700), Data(b"live\n")]
    # A second follower comes while the first is served every second: nothing to wait for.
    second = Reader(logs.follow("wf", task.source()))
    assert await second.until(3) == [AttemptStarted("wf.t", 1, "v"), Skipped(700), Data(b"live\n")]
    for each in (reader, second):
        each.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await each.task


async def test_a_follower_there_before_the_attempt_started_is_told_nothing_of_waiting() -> None:
    logs = LiveLogs()
    task = Task()
    reader = Reader(logs.follow("wf", task.source()))
    await asyncio.wait_for(task.looked.wait(), 5)
    task.unit = Unit(1, "v", False, "running", "")
    logs.held("wf.t", "v")
    assert await reader.until(1) == [AttemptStarted("wf.t", 1, "v")]
    # Its volunteer asks a second after the attempt's first output, and is told.
    assert logs.push("wf", "wf.t", 1, "v", [], final=False) is True
    logs.push("wf", "wf.t", 1, "v", [chunk(0, b"hi\n")], final=False)
    assert await reader.until(2) == [AttemptStarted("wf.t", 1, "v"), Data(b"hi\n")]
    reader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader.task


async def test_a_follower_goes_through_a_retry_and_says_what_was_skipped() -> None:
    logs = LiveLogs(tail_bytes=4)
    task = Task(unit=Unit(1, "v", False, "running", ""))
    logs.push("wf", "wf.t", 1, "v", [chunk(0, b"abcdef")], final=False)  # keeps "cdef"
    reader = Reader(logs.follow("wf", task.source()))
    assert without_waiting(await reader.until(4)) == [
        AttemptStarted("wf.t", 1, "v"),
        Skipped(2),
        Data(b"cdef"),
    ]
    # Attempt 1 failed and was lost on the way: no log of it arrived. Attempt 2 runs.
    task.unit = Unit(0, "", False, "queued", "")
    logs.held("wf.t", "")
    task.unit = Unit(2, "w", False, "running", "")
    logs.push("wf", "wf.t", 2, "w", [chunk(0, b"again")], final=False)
    logs.held("wf.t", "w")
    pieces = await reader.until(7)
    assert pieces[4:7] == [
        Note("attempt 1 ended and no log of it reached the manager"),
        AttemptStarted("wf.t", 2, "w"),
        Skipped(1),
    ]
    reader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader.task
    assert list(logs._slots) == ["wf.t"]  # the tail of attempt 2, and no follower
    assert logs._slots["wf.t"].followers == 0


async def test_the_end_of_a_log_longer_than_what_is_stored_is_placed_by_the_final_push() -> None:
    logs = LiveLogs()
    task = Task(unit=Unit(1, "v", False, "running", ""))
    reader = Reader(logs.follow("wf", task.source()))
    assert without_waiting(await reader.until(2)) == [AttemptStarted("wf.t", 1, "v")]
    # The stored log is its last LOG_BYTES: the stream's bytes 10 to LOG_BYTES + 10.
    stream = b"0123456789" + b"x" * (LOG_BYTES - 3) + b"end"
    logs.push("wf", "wf.t", 1, "v", [chunk(0, stream[:5])], final=False)
    assert (await reader.until(3))[2] == Data(b"01234")
    logs.push("wf", "wf.t", 1, "v", [chunk(len(stream) - 3, b"end")], final=True)
    assert (await reader.until(4))[3] == Skipped(len(stream) - 3 - 5)
    assert (await reader.until(5))[4] == Data(b"end")
    task.stored[1] = stream[-LOG_BYTES:]
    task.unit = Unit(0, "", True, "completed", "")
    logs.held("wf.t", "")
    assert (await reader.until(6))[5] == Ended("wf.t", "t", "completed", "")


async def test_a_task_that_ended_before_anyone_followed_shows_its_stored_log() -> None:
    logs = LiveLogs()
    last: list[Piece] = [AttemptStarted("wf.t", 2, ""), Data(b"all of it\n")]
    task = Task(unit=Unit(0, "", True, "failed", "exited with code 3"), last=last)
    pieces = [piece async for piece in logs.follow("wf", task.source())]
    assert pieces == [*last, Ended("wf.t", "t", "failed", "exited with code 3")]
    assert logs._slots == {}


async def test_followers_end_when_the_manager_stops() -> None:
    logs = LiveLogs()
    task = Task()
    reader = Reader(logs.follow("wf", task.source()))
    await asyncio.wait_for(task.looked.wait(), 5)
    logs.close()
    await asyncio.wait_for(reader.task, 5)
    assert reader.pieces == [Note("the manager is stopping: follow again once it is back")]
