"""The supervisor reports a task that crashed and nothing else; work run together ends
together, with the error of the part that ended it."""

from __future__ import annotations

import asyncio

import pytest

from daemon.errors import NodeError, RejectedError
from daemon.supervision import Supervisor, run_together


async def crash(error: BaseException) -> None:
    raise error


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_crash_reaches_the_fatal_handler_named_after_its_task() -> None:
    fatal: list[NodeError] = []
    supervisor = Supervisor(fatal.append)
    task = supervisor.spawn(crash(ValueError("bad row")), "bookkeeping")
    await asyncio.wait([task])
    assert [str(error) for error in fatal] == ["bookkeeping crashed: ValueError('bad row')"]


async def test_a_node_error_is_reported_as_it_is_and_a_handler_of_its_own_comes_first() -> None:
    fatal: list[NodeError] = []
    crashes: list[BaseException] = []
    supervisor = Supervisor(fatal.append)
    refused = RejectedError("wrong cluster")
    first = supervisor.spawn(crash(refused), "link")
    second = supervisor.spawn(crash(KeyError("x")), "merge", on_crash=crashes.append)
    await asyncio.wait([first, second])
    assert fatal == [refused]
    assert [type(error) for error in crashes] == [KeyError]


async def test_cancelled_and_finished_tasks_report_nothing() -> None:
    fatal: list[NodeError] = []
    supervisor = Supervisor(fatal.append)
    done = supervisor.spawn(asyncio.sleep(0), "quick")
    running = supervisor.spawn(forever(), "loop")
    await asyncio.wait([done])
    await supervisor.stop()
    assert running.cancelled()
    assert fatal == []


async def test_run_together_ends_all_with_the_error_of_the_first_to_end() -> None:
    other = asyncio.Event()

    async def outlived() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other.set()

    with pytest.raises(ValueError, match="heartbeat"):
        await run_together(outlived(), crash(ValueError("heartbeat")))
    assert other.is_set(), "the other part was not cancelled and waited for"


async def test_run_together_returns_when_one_part_ends_cleanly() -> None:
    await asyncio.wait_for(run_together(forever(), asyncio.sleep(0)), 5)
