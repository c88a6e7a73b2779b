"""The Docker runtime against a real engine: results, limits, lockdown, cleanup."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from daemon.runtime.docker import DockerRuntime
from daemon.runtime.spec import RunResult, RunSpec

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    docker_runtime = DockerRuntime()
    yield docker_runtime
    await docker_runtime.close()


def make_spec(tmp_path: Path, image: str, script: str, **overrides: object) -> RunSpec:
    input_dir = tmp_path / "input"
    output_dir = tmp_path / "output"
    input_dir.mkdir(exist_ok=True)
    output_dir.mkdir(exist_ok=True)
    output_dir.chmod(0o777)  # the task runs as nobody
    fields: dict[str, object] = {
        "run_id": f"test-{uuid.uuid4().hex[:12]}",
        "image": image,
        "command": ("sh", "-c", script),
        "input_dir": input_dir,
        "output_dir": output_dir,
        "cpus": 1.0,
        "memory_mb": 128,
        "timeout_seconds": 30.0,
    }
    fields.update(overrides)
    return RunSpec(**fields)  # type: ignore[arg-type]


async def containers_labelled(run_id: str) -> list[object]:
    async with aiodocker.Docker() as docker:
        return list(
            await docker.containers.list(all=True, filters={"label": [f"vcnode.run={run_id}"]})
        )


async def run(runtime: DockerRuntime, spec: RunSpec) -> tuple[RunResult, list[float]]:
    progress: list[float] = []
    result = await runtime.run(spec, progress.append)
    assert await containers_labelled(spec.run_id) == [], "container left behind"
    return result, progress


async def test_task_reads_input_writes_output_and_reports_progress(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(
        tmp_path,
        worker_image,
        "echo 40 > /output/.progress; sleep 0.6; tr a-z A-Z < /input/in.txt > /output/out.txt;"
        " echo 100 > /output/.progress; echo done; echo warn >&2",
    )
    (spec.input_dir / "in.txt").write_text("hello")
    result, progress = await run(runtime, spec)
    assert result.succeeded, result
    assert result.exit_code == 0
    assert (spec.output_dir / "out.txt").read_text().strip() == "HELLO"
    assert result.stdout_tail.strip() == "done"
    assert result.stderr_tail.strip() == "warn"
    assert 40.0 in progress
    assert result.finished_at >= result.started_at


async def test_non_zero_exit_fails_with_its_code(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    result, _ = await run(runtime, make_spec(tmp_path, worker_image, "echo oops >&2; exit 3"))
    assert result.exit_code == 3
    assert result.failure == "exited with code 3: oops"
    assert "oops" in result.stderr_tail


async def test_timeout_kills_the_task(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(tmp_path, worker_image, "sleep 60", timeout_seconds=1.0)
    started = asyncio.get_running_loop().time()
    result, _ = await run(runtime, spec)
    assert result.failure == "timed out after 1 s (killed)"
    assert asyncio.get_running_loop().time() - started < 15


async def test_memory_limit_kills_the_task_and_says_so(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(
        tmp_path,
        worker_image,
        "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'",
        memory_mb=64,
    )
    result, _ = await run(runtime, spec)
    assert result.failure == "out of memory: needed more than its 64 MiB limit (killed)"


async def test_task_is_locked_down(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    script = (
        "id -u; id -g;"
        " grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status;"
        " cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ';"
        " touch /etc/x 2>/dev/null && echo wrote-root || echo root-readonly;"
        " touch /input/x 2>/dev/null && echo wrote-input || echo input-readonly;"
        " touch /tmp/x && echo tmp-writable;"
        " touch /output/x && echo output-writable"
    )
    result, _ = await run(runtime, make_spec(tmp_path, worker_image, script))
    assert result.succeeded, result
    lines = result.stdout_tail.split()
    assert lines[:2] == ["65534", "65534"], "not running as nobody"
    status = dict(zip(lines[2:8:2], lines[3:8:2], strict=True))
    assert status == {
        "CapPrm:": "0000000000000000",
        "CapEff:": "0000000000000000",
        "NoNewPrivs:": "1",
    }
    assert lines[8:] == [
        "lo",
        "root-readonly",
        "input-readonly",
        "tmp-writable",
        "output-writable",
    ], "a network interface other than lo, or a writable path that must not be"


async def test_cancelling_a_run_removes_its_container(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(tmp_path, worker_image, "echo started > /output/flag; sleep 60")
    task = asyncio.get_running_loop().create_task(runtime.run(spec, lambda _: None))
    flag = spec.output_dir / "flag"
    deadline = asyncio.get_running_loop().time() + 20
    while not flag.exists():
        assert asyncio.get_running_loop().time() < deadline, "task never started"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await containers_labelled(spec.run_id) == []


async def test_a_task_writing_past_its_output_cap_is_stopped_and_says_why(
    runtime: DockerRuntime, tmp_path: Path, worker_image: str
) -> None:
    spec = make_spec(
        tmp_path,
        worker_image,
        "while true; do head -c 1048576 /dev/zero >> /output/big; sleep 0.01; done",
        output_mb=2,
    )
    result, _ = await run(runtime, spec)
    assert result.failure.startswith("wrote more than its 2 MiB of output ("), result
