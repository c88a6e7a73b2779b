"""Freezing and thawing a running task (the owner pauses their machine), and the usage
figures a run reports (`vcnode history`): real Docker containers and real sandboxed
processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from daemon.runtime.docker import DockerRuntime
from daemon.runtime.on_demand import DockerOnDemand
from daemon.runtime.process import ProcessRuntime, process_tree, unavailable
from daemon.runtime.spec import RunResult, RunSpec, Runtime
from tests.integration.test_docker_runtime import containers_labelled, make_spec

pytestmark = pytest.mark.integration

# Counts in /output/count (written whole, then moved into place) every 50 ms until the test
# creates /input/stop: a task whose progress the test can watch and end when it wants.
COUNTER = (
    "i=0; while [ ! -e /input/stop ]; do i=$((i+1));"
    " echo $i > /output/count.new; mv /output/count.new /output/count; sleep 0.05; done;"
    " echo counted $i"
)
# Ample for a running counter to move several times; a frozen one must not move at all.
STILL_SECONDS = 0.6
START_SECONDS = 30.0


@pytest.fixture
async def docker_runtime() -> AsyncIterator[DockerRuntime]:
    runtime = DockerRuntime()
    yield runtime
    await runtime.close()


@pytest.fixture
def process_runtime() -> ProcessRuntime:
    problem = unavailable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but tasks cannot be sandboxed here: {problem}")
        pytest.skip(problem)
    return ProcessRuntime()


def process_spec(tmp_path: Path, script: str, **overrides: object) -> RunSpec:
    """A spec for the process runtime, whose sandbox shows the task its /input and /output
    as a container would (the task's uid writes /output: the runtime gives it to it)."""
    return make_spec(tmp_path, "ignored", script, **{"memory_mb": 256, **overrides})


def count(spec: RunSpec) -> int:
    try:
        return int((spec.output_dir / "count").read_text())
    except (OSError, ValueError):
        return 0


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = START_SECONDS
) -> None:
    """Polls `condition()` (sync or async) until true; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        answer = condition()
        if not isinstance(answer, bool):
            answer = await answer
        if answer:
            return
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


async def counting(spec: RunSpec, beyond: int = 0) -> None:
    await until(lambda: count(spec) > beyond, f"the counter to pass {beyond}")


async def start(runtime: Runtime, spec: RunSpec) -> asyncio.Task[RunResult]:
    """Starts a run; returns once the runtime says its task is up (it may be writing its
    output before the runtime hears that it started: until then, it cannot be frozen)."""
    started = asyncio.Event()
    running = asyncio.get_running_loop().create_task(
        runtime.run(spec, lambda _: None, on_started=started.set)
    )
    await asyncio.wait_for(started.wait(), START_SECONDS)
    return running


def stop_counting(spec: RunSpec) -> None:
    (spec.input_dir / "stop").touch()


async def container_state(run_id: str) -> dict[str, Any]:
    async with aiodocker.Docker() as docker:
        container = await docker.containers.get(f"vcnode-{run_id}")
        state: dict[str, Any] = (await container.show())["State"]
        return state


async def paused(run_id: str) -> bool:
    return bool((await container_state(run_id)).get("Paused"))


@pytest.mark.docker
async def test_a_frozen_container_is_paused_and_still_then_completes_once_thawed(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(tmp_path, worker_image, COUNTER)
    running = await start(docker_runtime, spec)
    await counting(spec)

    asked = time.monotonic()
    assert await docker_runtime.freeze(spec.run_id)
    await until(lambda: paused(spec.run_id), "docker inspect to say Paused")
    print(f"freeze took {1000 * (time.monotonic() - asked):.1f} ms to State.Paused")
    assert await docker_runtime.freeze(spec.run_id), "freezing a frozen run is no error"
    frozen_at = count(spec)
    await asyncio.sleep(STILL_SECONDS)  # a window in which a running counter moves
    assert count(spec) == frozen_at, "the counter moved while frozen"
    assert not running.done()

    assert await docker_runtime.thaw(spec.run_id)
    assert not await paused(spec.run_id)
    await counting(spec, beyond=frozen_at)
    stop_counting(spec)
    result = await running
    assert result.succeeded, result
    assert result.exit_code == 0
    assert result.stdout_tail.startswith("counted ")
    assert await containers_labelled(spec.run_id) == []


@pytest.mark.docker
async def test_time_frozen_does_not_count_against_the_timeout(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    timeout = 3.0
    spec = make_spec(tmp_path, worker_image, COUNTER, timeout_seconds=timeout)
    # Frozen as soon as it is up: what it has left of its timeout after the thaw is ample
    # for it to see the stop, however slowly this host starts it.
    running = await start(docker_runtime, spec)
    assert await docker_runtime.freeze(spec.run_id)
    await asyncio.sleep(timeout + 0.5)  # frozen for longer than its whole timeout
    assert not running.done(), "the run timed out while frozen"
    assert await docker_runtime.thaw(spec.run_id)
    await counting(spec)
    stop_counting(spec)
    result = await asyncio.wait_for(running, START_SECONDS)
    assert result.succeeded, result
    assert result.finished_at - result.started_at > timeout


@pytest.mark.docker
async def test_a_thawed_run_still_times_out_later_by_the_time_it_was_frozen(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    timeout, frozen_for = 1.5, 1.5
    spec = make_spec(tmp_path, worker_image, COUNTER, timeout_seconds=timeout)
    running = await start(docker_runtime, spec)
    assert await docker_runtime.freeze(spec.run_id)
    await asyncio.sleep(frozen_for)  # the frozen spell the deadline must move by
    assert await docker_runtime.thaw(spec.run_id)
    result = await asyncio.wait_for(running, START_SECONDS)
    assert result.failure == f"timed out after {timeout:g} s (killed)"
    assert result.finished_at - result.started_at >= timeout + frozen_for - 0.1


@pytest.mark.docker
async def test_a_frozen_container_that_is_cancelled_is_removed(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(tmp_path, worker_image, COUNTER)
    running = await start(docker_runtime, spec)
    await counting(spec)
    assert await docker_runtime.freeze(spec.run_id)
    assert await paused(spec.run_id)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await containers_labelled(spec.run_id) == []
    assert not await docker_runtime.thaw(spec.run_id), "a cancelled run is no longer there"


@pytest.mark.docker
async def test_freezing_a_run_that_is_not_in_progress_says_false(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    assert not await docker_runtime.freeze("no-such-run")
    assert not await docker_runtime.thaw("no-such-run")
    assert not await DockerOnDemand().freeze("no-such-run"), "no runtime made, no run"
    spec = make_spec(tmp_path, worker_image, "true")
    assert (await docker_runtime.run(spec, lambda _: None)).succeeded
    assert not await docker_runtime.freeze(spec.run_id), "an ended run cannot be frozen"
    assert not await docker_runtime.thaw(spec.run_id)


@pytest.mark.docker
async def test_freezing_as_the_container_ends_says_false_and_raises_nothing(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    """Freezes and thaws asked over and over while a container exits on its own: each says
    True (caught it running) or False (it had exited), none raises, and the run ends as it
    would have."""
    spec = make_spec(tmp_path, worker_image, "sleep 0.5")
    running = await start(docker_runtime, spec)
    answers: list[bool] = []
    while not running.done():
        answers.append(await docker_runtime.freeze(spec.run_id))
        if answers[-1]:
            # False too when it ended as it was frozen.
            await docker_runtime.thaw(spec.run_id)
        await asyncio.sleep(0)  # lets the run see its container's end
    result = await running
    assert result.succeeded, result
    assert answers[0], "the started container was not frozen"
    assert answers[-1] is False, "a run that ended was frozen"


@pytest.mark.docker
async def test_the_result_says_how_much_cpu_and_memory_the_container_used(
    docker_runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    # It lingers after its work: its cgroup is read once a second, and gone once it exits.
    burner = (
        "import time\n"
        "memory = bytearray(100 * 1024 * 1024)\n"
        "for page in range(0, len(memory), 4096): memory[page] = 1\n"
        "began = time.process_time()\n"
        "while time.process_time() - began < 1.0: pass\n"
        "time.sleep(1.2)\n"
    )
    spec = replace(
        make_spec(tmp_path, worker_image, "", memory_mb=256), command=("python3", "-c", burner)
    )
    result = await docker_runtime.run(spec, lambda _: None)
    assert result.succeeded, result
    assert result.peak_memory_mb is not None, result
    assert result.peak_memory_mb >= 90, result
    assert result.cpu_seconds is not None, result
    assert result.cpu_seconds >= 0.5, result


async def test_a_frozen_process_tree_is_stopped_and_still_then_completes_once_thawed(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = process_spec(tmp_path, COUNTER)
    running = await start(process_runtime, spec)
    await counting(spec)

    assert await process_runtime.freeze(spec.run_id)
    states = _tree_states(_started_by_us(spec))
    assert len(states) >= 2, states  # bwrap and the task at least
    assert set(states.values()) <= set("TZ"), f"a process of the task still runs: {states}"
    frozen_at = count(spec)
    await asyncio.sleep(STILL_SECONDS)  # a window in which a running counter moves
    assert count(spec) == frozen_at, "the counter moved while frozen"

    assert await process_runtime.thaw(spec.run_id)
    await counting(spec, beyond=frozen_at)
    stop_counting(spec)
    result = await running
    assert result.succeeded, result
    assert result.stdout_tail.startswith("counted ")
    assert not await process_runtime.freeze(spec.run_id), "an ended run cannot be frozen"
    assert not await process_runtime.thaw("no-such-run")


async def test_time_frozen_does_not_count_against_a_process_timeout(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    timeout = 3.0
    spec = process_spec(tmp_path, COUNTER, timeout_seconds=timeout)
    running = await start(process_runtime, spec)  # frozen as soon as it is up, as above
    assert await process_runtime.freeze(spec.run_id)
    await asyncio.sleep(timeout + 0.5)  # frozen for longer than its whole timeout
    assert not running.done(), "the run timed out while frozen"
    assert await process_runtime.thaw(spec.run_id)
    await counting(spec)
    stop_counting(spec)
    result = await asyncio.wait_for(running, START_SECONDS)
    assert result.succeeded, result


async def test_a_frozen_process_tree_that_is_cancelled_is_killed(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = process_spec(tmp_path, COUNTER)
    running = await start(process_runtime, spec)
    await counting(spec)
    assert await process_runtime.freeze(spec.run_id)
    tree = list(_tree_states(_started_by_us(spec)))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, START_SECONDS)
    await until(lambda: not any(_alive(pid) for pid in tree), f"the frozen tree {tree} to die")


def _proc_state(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0]


def _table() -> dict[int, tuple[int, str]]:
    return {
        int(entry.name): found
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and (found := _proc_state(int(entry.name))) is not None
    }


def _started_by_us(spec: RunSpec) -> int:
    """The process the runtime started for `spec`: ours, its command naming its /output."""
    for pid, (parent, _) in _table().items():
        if parent != os.getpid():
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(spec.output_dir).encode() in command:
            return pid
    raise AssertionError(f"no process of ours runs {spec.run_id}")


def _tree_states(root: int) -> dict[int, str]:
    table = _table()
    return {pid: table[pid][1] for pid in process_tree(root, table) if pid in table}


def _alive(pid: int) -> bool:
    found = _proc_state(pid)
    return found is not None and found[1] not in "ZX"
