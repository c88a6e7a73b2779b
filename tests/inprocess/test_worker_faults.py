"""The volunteer's worker when things go wrong around it: an owner's command cancelled while
an earlier step is slow (the CLI's deadline, Ctrl-C), a runtime whose clean-up swallows the
cancel of a task called off, and the history of a task stopped as it ran."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.runtime.spec import RunResult, RunSpec
from tests.inprocess.mesh import (
    Decline,
    GatedRuntime,
    MeshVolunteer,
    Result,
    Started,
    running_mesh,
    workflow,
)
from tests.inprocess.test_lifecycle_mesh import coordinator_task, one_running_one_ahead
from volunteer_node.history import Outcome


class SlowFreezes:
    """Makes the volunteer's runtime freeze only when the test lets it (a busy dockerd)."""

    def __init__(self, volunteer: MeshVolunteer) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        runtime = volunteer.runtime
        plain = runtime.freeze

        async def freeze(run_id: str) -> bool:
            self.entered.set()
            await self.release.wait()
            return await plain(run_id)

        runtime.freeze = freeze  # type: ignore[method-assign]


async def cancelled_while_queued(step: Callable[[], Any], taken: Callable[[], bool]) -> None:
    """Starts an owner's command and cancels it once the lifecycle took it (`taken`), while
    its instructions wait behind a slow step: as a CLI deadline would."""
    command = asyncio.get_running_loop().create_task(step())
    await asyncio.sleep(0)  # one turn of the loop, no time: the command reaches the lifecycle
    assert taken(), "the command did not reach the lifecycle in its first turn"
    command.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await command


async def test_a_drain_cancelled_behind_a_slow_freeze_still_hands_the_task_back(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        _, running, ahead = await one_running_one_ahead(mesh, volunteer)
        slow = SlowFreezes(volunteer)
        pausing = asyncio.get_running_loop().create_task(volunteer.worker.pause())
        await asyncio.wait_for(slow.entered.wait(), 5)
        await cancelled_while_queued(
            volunteer.worker.drain, lambda: volunteer.worker.view().draining
        )
        slow.release.set()
        await pausing
        await volunteer.worker.resume()
        volunteer.runtime.finish(running)

        async def handed_back() -> bool:
            task = await coordinator_task(mesh, ahead)
            return (
                not volunteer.worker.view().attempts
                and bool(volunteer.wire.told_about(ahead, Decline))
                and task.state == "queued"
            )

        await mesh.until(handed_back, "the drain's hand-back, though its caller was cancelled")
        await asyncio.wait_for(volunteer.worker.stop(), 5)


async def test_a_resume_cancelled_behind_a_slow_freeze_still_thaws(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: volunteer.runtime.running() == [task], "the task to run")
        slow = SlowFreezes(volunteer)
        pausing = asyncio.get_running_loop().create_task(volunteer.worker.pause())
        await asyncio.wait_for(slow.entered.wait(), 5)
        await cancelled_while_queued(
            volunteer.worker.resume, lambda: not volunteer.worker.view().holds
        )
        slow.release.set()
        await pausing
        await volunteer.worker.resume()  # the owner tries again: returns once it is done
        runtime = volunteer.runtime
        assert (len(runtime.freezes), len(runtime.thaws)) == (1, 1), "frozen, then thawed"
        runtime.finish(task)


class CleanupTakesTheCancel(GatedRuntime):
    """As DockerRuntime.run ends: its helper tasks are cancelled and awaited in a `finally`
    that suppresses CancelledError, which takes a cancel aimed at the run itself too."""

    def __init__(self) -> None:
        super().__init__()
        self.cleaning = asyncio.Event()
        self.cleaned = asyncio.Event()

    async def run(
        self, spec: RunSpec, on_progress: Any, on_output: Any = None, *, on_started: Any = None
    ) -> RunResult:
        async def helper() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await self.cleaned.wait()  # closing a response, say
                raise

        following = asyncio.get_running_loop().create_task(helper())
        try:
            return await super().run(spec, on_progress, on_output, on_started=on_started)
        finally:
            following.cancel()
            self.cleaning.set()
            with contextlib.suppress(asyncio.CancelledError):
                await following


async def test_a_task_called_off_as_its_run_ends_delivers_nothing_and_frees_its_word(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        runtime = CleanupTakesTheCancel()
        volunteer.runtime = runtime
        volunteer.worker._runtime = runtime
        _, running, ahead = await one_running_one_ahead(mesh, volunteer)
        runtime.finish(running)
        await asyncio.wait_for(runtime.cleaning.wait(), 5)
        cancelling = asyncio.get_running_loop().create_task(
            volunteer.worker.on_cancel(running, "cancelled by its manager")
        )
        await cancelling
        runtime.cleaned.set()

        async def next_one_runs() -> bool:
            said = [m for m in volunteer.wire.told_about(ahead) if isinstance(m, Started)]
            return bool(said) and (await coordinator_task(mesh, ahead)).state == "running"

        await mesh.until(next_one_runs, "the next task to be said to run")
        assert volunteer.wire.told_about(running, Result) == []
        [entry] = [e for e in await volunteer.store.history(0) if e.task_id == running]
        assert entry.outcome is Outcome.CANCELLED, "it went on as if it had not been called off"
        runtime.finish(ahead)


async def test_history_keeps_the_start_of_a_task_stopped_as_it_ran(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        volunteer = await mesh.volunteer("vol-a")
        workflow_id = await mesh.submit(workflow("t1"))
        task = f"{workflow_id}.t1"
        await mesh.until(lambda: volunteer.runtime.running() == [task], "the task to run")
        await mesh.cancel(workflow_id)

        async def recorded() -> bool:
            return bool(await volunteer.store.history(0))

        await mesh.until(recorded, "the history record")
        [entry] = await volunteer.store.history(0)
        assert entry.outcome is Outcome.CANCELLED
        assert entry.started_at is not None, "it ran: its start is kept"
        assert entry.started_at <= entry.finished_at
