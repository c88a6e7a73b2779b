"""A volunteer says a task is accepted (it is `fetching`) apart from when its container starts
(`running`): a task fetched ahead while the one slot is busy is accepted, not started; and it
never says more tasks run than it has slots, though a slot frees before the task that held it
has delivered its result."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from daemon.models import (
    FileRef,
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskResult,
    TaskSpec,
)
from daemon.runtime.spec import OutputCallback, ProgressCallback, RunResult, RunSpec
from volunteer_node.blobs import ManagerPeer
from volunteer_node.store import AttemptState, VolunteerStore
from volunteer_node.worker import TaskWorker, WorkerConfig

WAIT_SECONDS = 10.0


class Said:
    """The coordinator link: what the worker told it, in order."""

    def __init__(self) -> None:
        self.words: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def _say(self, word: str, task_id: str) -> None:
        self.words.append((word, task_id))
        self._changed.set()

    def send_accept(self, task_id: str, attempt: int) -> None:
        self._say("accept", task_id)

    def send_started(self, task_id: str, attempt: int) -> None:
        self._say("started", task_id)

    def send_decline(self, task_id: str, attempt: int, reason: str) -> None:
        self._say("decline", task_id)

    def send_progress(self, task_id: str, attempt: int, percent: float) -> None:
        self._say("progress", task_id)

    def send_result(self, result: TaskResult) -> None:
        self._say("result", result.task_id)

    def send_heartbeat(self) -> None:
        self._say("heartbeat", "")

    async def until(self, word: str, task_id: str = "") -> str:
        """Waits until `word` was said of `task_id` (of any task if ""); returns the task."""

        async def said() -> str:
            while True:
                for spoken, about in self.words:
                    if spoken == word and task_id in ("", about):
                        return about
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(said(), WAIT_SECONDS)


class GatedRuntime:
    """Runs each task until the test lets it end."""

    name = "process"
    isolated = False

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.ran: list[str] = []  # the tasks whose container started, in order

    def gate(self, task_id: str) -> asyncio.Event:
        return self.release.setdefault(task_id, asyncio.Event())

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> RunResult:
        task_id = spec.run_id.split(".")[0]
        self.ran.append(task_id)
        if on_started is not None:
            on_started()
        await self.gate(task_id).wait()
        return RunResult(0, "", "", "", 1.0, 2.0)

    async def freeze(self, run_id: str) -> bool:
        return False

    async def thaw(self, run_id: str) -> bool:
        return False


class NoTransfers:
    @contextlib.asynccontextmanager
    async def fetched(self, manager: ManagerPeer, ref: FileRef) -> AsyncIterator[Path]:
        raise AssertionError("these tasks have no inputs to fetch")
        yield Path()

    async def send(self, manager: ManagerPeer, path: Path, purpose: str) -> FileRef:
        raise AssertionError("these tasks write no outputs")

    async def image_archive(self, manager: ManagerPeer, image: str, image_id: str) -> FileRef:
        raise AssertionError("the process runtime has no images")


async def no_image(image: str) -> str | None:
    return None


def task(task_id: str) -> TaskSpec:
    return TaskSpec(
        task_id, "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60, attempt=1,
        manager_address="127.0.0.1:7451", manager_id="manager-1",
    )  # fmt: skip


async def until_ready(store: VolunteerStore, task_id: str) -> None:
    """Polls the volunteer's record until the task is fetched (ready, waiting for a slot)."""

    def state(db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT state FROM tasks WHERE id = ?", [task_id]).fetchone()
        return row[0] if row else None

    deadline = time.monotonic() + WAIT_SECONDS
    while await store.database.read(state) != AttemptState.READY:
        assert time.monotonic() < deadline, f"{task_id} was not fetched in time"
        await asyncio.sleep(0.01)


async def test_a_task_held_for_the_busy_slot_is_accepted_and_starts_only_when_the_slot_frees(
    tmp_path: Path,
) -> None:
    store = VolunteerStore(tmp_path)
    await store.open()
    runtime = GatedRuntime()
    worker = TaskWorker(
        WorkerConfig(tmp_path / "tasks", OwnerLimits(max_concurrent_tasks=1)),
        store,
        NoTransfers(),
        runtime,
        resources=lambda: Resources(4, 8192, 10_000, docker_available=True),
        image_id=no_image,
    )
    said = Said()
    worker.attach(said)
    try:
        await worker.on_offer(task("a"))
        await worker.on_offer(task("b"))
        assert said.words == [("accept", "a"), ("accept", "b")], "both held, neither started"
        first = await said.until("started")  # whichever took the slot
        second = "b" if first == "a" else "a"
        await until_ready(store, second)
        # Fetched, and waiting for the slot the first holds: accepted, not started.
        assert ("started", second) not in said.words
        assert runtime.ran == [first]
        runtime.gate(first).set()  # its container ends: the slot frees
        await said.until("started", second)
        assert runtime.ran == [first, second]
        runtime.gate(second).set()
        await said.until("result", second)
        assert said.words[2:] == [
            ("started", first),
            # The first counts as running till its result is sent: one slot, one running.
            ("result", first),
            ("started", second),
            ("result", second),
        ]
    finally:
        for gate in runtime.release.values():
            gate.set()
        await worker.stop()
        await store.close()


async def test_a_new_session_hears_again_which_tasks_run_and_not_of_one_fetched_ahead(
    tmp_path: Path,
) -> None:
    """A coordinator that crashed after hearing that a task started but before saving it
    would keep it `fetching` till its result: the volunteer says it again as it reconnects
    (the coordinator ignores word it had)."""
    store = VolunteerStore(tmp_path)
    await store.open()
    runtime = GatedRuntime()
    worker = TaskWorker(
        WorkerConfig(tmp_path / "tasks", OwnerLimits(max_concurrent_tasks=1)),
        store,
        NoTransfers(),
        runtime,
        resources=lambda: Resources(4, 8192, 10_000, docker_available=True),
        image_id=no_image,
    )
    said = Said()
    worker.attach(said)
    try:
        await worker.on_offer(task("a"))
        await worker.on_offer(task("b"))
        first = await said.until("started")
        second = "b" if first == "a" else "a"
        await until_ready(store, second)
        said.words.clear()
        await worker.on_connected()
        assert said.words == [("started", first)], "the fetched-ahead one is not running"
        runtime.gate(first).set()
        await said.until("started", second)
        said.words.clear()
        await worker.on_connected()
        # The first ended: its result, not acknowledged yet, is what is said of it.
        assert said.words == [("started", second), ("result", first)]
    finally:
        for gate in runtime.release.values():
            gate.set()
        await worker.stop()
        await store.close()


def test_a_throttled_task_gets_its_share_of_the_cpu_never_below_dockers_least_and_more_time(
    tmp_path: Path,
) -> None:
    def run_spec(percent: int, cpus: float) -> tuple[float, float]:
        worker = TaskWorker(
            WorkerConfig(tmp_path / "tasks", OwnerLimits(cpu_throttle_percent=percent)),
            VolunteerStore(tmp_path),
            NoTransfers(),
            GatedRuntime(),
            resources=lambda: Resources(4, 8192, 10_000, docker_available=True),
            image_id=no_image,
        )
        spec = replace(task("t"), resources=ResourceRequest(cpus=cpus))
        made = worker._run_spec(spec, tmp_path / "in", tmp_path / "out")
        return made.cpus, made.timeout_seconds

    assert run_spec(0, 2.0) == (2.0, 60.0)
    assert run_spec(25, 2.0) == (0.5, 240.0), "a quarter of the CPUs, four times the time"
    assert run_spec(1, 0.5) == (0.01, 6000.0), "Docker refuses less than 0.01 of a CPU"
