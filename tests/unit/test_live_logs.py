"""Live logs as pure logic: the volunteer's pending bytes and pushes, the manager's bounded
tails, and a follower's way through attempts to the end of its task (fakes stand for the
manager's records and the network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from daemon.errors import AccessDeniedError, UnreachableError
from daemon.runtime.spec import LOG_BYTES, LogChunk
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
    """Takes pushes; `refuse` or `away` as a real one might."""

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


async def test_new_output_is_pushed_as_it_comes_and_the_rest_at_the_end() -> None:
    manager = Manager()
    async with pushing("t", 2, manager.push) as live:
        assert live is not None
        live.write("stdout", b"first\n")
        await asyncio.wait_for(manager.arrived.wait(), 5)
        live.write("stdout", b"second\n")  # waits for the next second: the end comes first
    assert manager.pushes == [
        LogPush("t", 2, (LogChunk("stdout", 0, b"first\n"),)),
        LogPush("t", 2, (LogChunk("stdout", 6, b"second\n"),), final=True),
    ]


async def test_a_task_that_ends_within_its_first_second_costs_no_push() -> None:
    manager = Manager()
    async with pushing("t", 1, manager.push) as live:
        assert live is not None
        live.write("stdout", b"quick\n")  # its result carries it
    assert manager.pushes == []


async def test_a_refused_push_stops_the_pushes_and_one_that_fails_does_not() -> None:
    refusing = Manager(refuse=True)
    async with pushing("t", 1, refusing.push) as live:
        assert live is not None
        live.write("stdout", b"x")
        await asyncio.wait_for(refusing.asked.wait(), 5)  # refused: it stops at once
    assert refusing.pushes == []  # and no final push either

    away = Manager(away=True)
    async with pushing("t", 1, away.push) as live:
        assert live is not None
        live.write("stdout", b"lost\n")
        await asyncio.wait_for(away.asked.wait(), 5)
        away.away = False
        live.write("stdout", b"kept\n")
    # What did not get there is gone from the live view (the result has it); the end came.
    assert away.pushes == [LogPush("t", 1, (LogChunk("stdout", 5, b"kept\n"),), final=True)]


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


async def test_a_follower_goes_through_a_retry_and_says_what_was_skipped() -> None:
    logs = LiveLogs(tail_bytes=4)
    task = Task(unit=Unit(1, "v", False, "running", ""))
    logs.push("wf", "wf.t", 1, "v", [chunk(0, b"abcdef")], final=False)  # keeps "cdef"
    reader = Reader(logs.follow("wf", task.source()))
    assert await reader.until(3) == [
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
    pieces = await reader.until(6)
    assert pieces[3:6] == [
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
    assert await reader.until(1) == [AttemptStarted("wf.t", 1, "v")]
    # The stored log is its last LOG_BYTES: the stream's bytes 10 to LOG_BYTES + 10.
    stream = b"0123456789" + b"x" * (LOG_BYTES - 3) + b"end"
    logs.push("wf", "wf.t", 1, "v", [chunk(0, stream[:5])], final=False)
    assert (await reader.until(2))[1] == Data(b"01234")
    logs.push("wf", "wf.t", 1, "v", [chunk(len(stream) - 3, b"end")], final=True)
    assert (await reader.until(3))[2] == Skipped(len(stream) - 3 - 5)
    assert (await reader.until(4))[3] == Data(b"end")
    task.stored[1] = stream[-LOG_BYTES:]
    task.unit = Unit(0, "", True, "completed", "")
    logs.held("wf.t", "")
    assert (await reader.until(5))[4] == Ended("wf.t", "t", "completed", "")


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
