"""A running task's output, sent to its manager as it comes (`vcnode logs -f`).

The runtime tells every piece the task writes; what came since the last push waits here, the
newest LOG_PUSH_BYTES of each stream at most (a task writing faster loses the oldest, and
the offsets say how much). Only while someone follows the task does any of it travel: a
sender then pushes what is new at most once a second. While nobody does, it sends none of
it: once the task wrote something, it asks the manager whether anyone follows now (an empty
push) a second in, then every PROBE_SECONDS, and pushes at once when told someone does. The
manager cannot call a volunteer, so a follower arriving mid-attempt waits up to
PROBE_SECONDS for live output (the manager tells them so). At the attempt's end it pushes
what is left, marked final, if someone followed at its last word. A task that ends within
its first second costs no push at all, nor does one that writes nothing. The whole log still
travels with the result (the last 8 MiB of each stream): a push lost or refused costs only
the live view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from daemon.errors import NodeError, UnreachableError
from daemon.runtime.spec import LogChunk
from daemon.transport.caps import LOG_PUSH_BYTES

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
# Between two pushes while someone follows the task.
FOLLOWED_PUSH_SECONDS = 1.0
# Between two questions whether anyone follows, while nobody did at the last: the wait of a
# follower who arrives mid-attempt, against an empty push per running attempt that wrote
# something; 10,000 busy slots ask one manager about 330 times a second. The manager tells
# its followers this wait: manager_node/live_logs.py holds the same number (a test pins it).
PROBE_SECONDS = 30.0
# How long the attempt's last push may hold up its result.
FINAL_PUSH_SECONDS = 2.0


@dataclass(frozen=True)
class LogPush:
    task_id: str
    attempt: int
    chunks: tuple[LogChunk, ...]
    final: bool = False


# Sends a push to the task's manager; returns whether someone follows the task there.
PushLog = Callable[[LogPush], Awaitable[bool]]


class LiveLog:
    """What the running attempt wrote since its last push, per stream: the newest `cap`
    bytes, and where they begin in the stream."""

    def __init__(self, cap: int = LOG_PUSH_BYTES) -> None:
        self._cap = cap
        self._pending = {stream: bytearray() for stream in STREAMS}
        self._offset = dict.fromkeys(STREAMS, 0)  # where the pending bytes begin
        self._new = asyncio.Event()

    def write(self, stream: str, data: bytes) -> None:
        """The runtime's `on_output`: called on the event loop, so it never blocks."""
        pending = self._pending[stream]
        pending += data
        if len(pending) > self._cap:
            dropped = len(pending) - self._cap
            del pending[:dropped]
            self._offset[stream] += dropped
        self._new.set()

    async def wait(self) -> None:
        await self._new.wait()

    def take(self) -> tuple[LogChunk, ...]:
        """What is pending, which is then no more."""
        chunks = []
        for stream, pending in self._pending.items():
            if pending:
                chunks.append(LogChunk(stream, self._offset[stream], bytes(pending)))
                self._offset[stream] += len(pending)
                pending.clear()
        self._new.clear()
        return tuple(chunks)


@dataclass
class _Word:
    """What the manager said last: whether someone follows; refused, it will refuse again
    (this volunteer does not hold the attempt, as the manager sees it, or the manager is too
    old to take live logs)."""

    followed: bool = False
    refused: bool = False


@contextlib.asynccontextmanager
async def pushing(
    task_id: str, attempt: int, push: PushLog | None
) -> AsyncIterator[LiveLog | None]:
    """A LiveLog for the attempt's runtime, pushed to its manager while the block runs and
    someone follows it, and once more at its end; None when there is nobody to push to."""
    if push is None:
        yield None
        return
    live = LiveLog()
    word = _Word()
    sender = asyncio.get_running_loop().create_task(
        _push_while_running(task_id, attempt, live, push, word)
    )
    try:
        yield live
    finally:
        sender.cancel()
        [outcome] = await asyncio.gather(sender, return_exceptions=True)
    # Only once the block ended by itself: a cancelled attempt's end is awaited by nobody.
    if isinstance(outcome, Exception):  # a bug here must not end the attempt
        log.error("pushing the live log of %s failed", task_id, exc_info=outcome)
    elif word.followed and not word.refused:
        await _send(LogPush(task_id, attempt, live.take(), final=True), push, FINAL_PUSH_SECONDS)


async def _push_while_running(
    task_id: str, attempt: int, live: LiveLog, push: PushLog, word: _Word
) -> None:
    """Pushes what is new, paced, while someone follows; only asks, now and then, while
    nobody does; returns once the manager refused."""
    period = FOLLOWED_PUSH_SECONDS  # the first question, a second into the attempt
    while True:
        # A period between two words (and before the first), not a wait for something.
        await asyncio.sleep(period)
        await live.wait()  # nothing new, nothing to show anyone: nothing to ask
        if not word.followed:
            answer = await _send(LogPush(task_id, attempt, ()), push, None)
            if answer is None:
                word.refused = True
                return
            word.followed = answer
            if not answer:
                period = PROBE_SECONDS
                continue
        # Someone follows: what is pending goes at once (it was held back until now).
        answer = await _send(LogPush(task_id, attempt, live.take()), push, None)
        if answer is None:
            word.refused = True
            return
        word.followed = answer
        period = FOLLOWED_PUSH_SECONDS if answer else PROBE_SECONDS


async def _send(message: LogPush, push: PushLog, within: float | None) -> bool | None:
    """Whether someone follows the task (False when the push did not get there); None when
    the manager refused it."""
    try:
        async with asyncio.timeout(within):
            return await push(message)
    except (UnreachableError, TimeoutError) as error:
        # Those bytes are missing from the live view only: the result carries the log.
        log.debug("live log of %s not pushed: %s", message.task_id, error)
        return False
    except NodeError as error:
        log.info("the manager takes no live log of %s: %s", message.task_id, error)
        return None
