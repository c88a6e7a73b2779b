"""The coordinator's pool over a real SQLite store: a volunteer's acceptance and its word that
the task started reach the manager as `fetching` then `running`; a manager that predates
`fetching` hears `running` instead (it would skip the kind, and refuse the volunteer the
task's inputs)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from coordinator_node.pool import Pool, PoolSession
from coordinator_node.registry import VolunteerRegistry
from coordinator_node.scheduler import Scheduler, SendOffer
from coordinator_node.store import CoordinatorStore
from daemon.errors import NodeError
from daemon.models import EventKind, OwnerLimits, Registration, Resources, TaskState
from daemon.supervision import Supervisor
from tests.unit.test_scheduler import MANAGER, spec

REGISTRATION = Registration(
    volunteer_id="v1",
    hostname="lab-1",
    cluster="lab",
    protocol_version=1,
    version="0.1.0",
    resources=Resources(cpu_cores=4, memory_mb=8192, disk_free_mb=10_000, docker_available=True),
    limits=OwnerLimits(),
)


def fatal(error: NodeError) -> None:
    raise AssertionError(f"the pool stopped: {error}")


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[tuple[Pool, Scheduler]]:
    store = CoordinatorStore(tmp_path)
    await store.open()
    scheduler = Scheduler()
    yield Pool(store, VolunteerRegistry(0.5), scheduler, "lab", 1, Supervisor(fatal)), scheduler
    await store.close()


async def offered(pool: Pool) -> PoolSession:
    session = await pool.join(REGISTRATION)
    await pool.submit(MANAGER, [spec("t1")])
    while not isinstance(session.outbox.get_nowait(), SendOffer):
        pass  # the welcome's trust record, then the offer: both queued already
    return session


async def kinds(pool: Pool, knows_fetching: bool, count: int) -> list[EventKind]:
    watch = pool.watch(MANAGER, "wf", 0, knows_fetching)
    assert isinstance(watch, AsyncGenerator)
    try:
        return [(await anext(watch)).kind for _ in range(count)]
    finally:
        await watch.aclose()


async def test_accepted_is_fetching_and_started_is_running(
    pool: tuple[Pool, Scheduler],
) -> None:
    shell, scheduler = pool
    session = await offered(shell)
    await shell.accepted(session, "t1", 1, says_started=True)
    assert scheduler.state_of("t1") is TaskState.FETCHING
    await shell.started(session, "t1", 1)
    assert scheduler.state_of("t1") is TaskState.RUNNING
    assert await kinds(shell, True, 4) == [
        EventKind.QUEUED,
        EventKind.OFFERED,
        EventKind.FETCHING,
        EventKind.RUNNING,
    ]


async def test_a_manager_that_predates_fetching_hears_running_at_acceptance(
    pool: tuple[Pool, Scheduler],
) -> None:
    shell, _ = pool
    session = await offered(shell)
    await shell.accepted(session, "t1", 1, says_started=True)
    assert await kinds(shell, False, 3) == [
        EventKind.QUEUED,
        EventKind.OFFERED,
        EventKind.RUNNING,
    ]


async def test_an_older_volunteers_acceptance_is_running(pool: tuple[Pool, Scheduler]) -> None:
    shell, scheduler = pool
    session = await offered(shell)
    await shell.accepted(session, "t1", 1)
    assert scheduler.state_of("t1") is TaskState.RUNNING
    assert (await kinds(shell, True, 3))[-1] is EventKind.RUNNING
