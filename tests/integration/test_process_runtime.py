"""The process runtime (for hosts without Docker) with real subprocesses."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from daemon.runtime.process import ProcessRuntime, rewrite_paths
from daemon.runtime.spec import RunSpec

pytestmark = pytest.mark.integration


def make_spec(tmp_path: Path, *command: str, **overrides: object) -> RunSpec:
    (tmp_path / "input").mkdir(exist_ok=True)
    (tmp_path / "output").mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "run_id": f"test-{uuid.uuid4().hex[:12]}",
        "image": "ignored",
        "command": command,
        "input_dir": tmp_path / "input",
        "output_dir": tmp_path / "output",
        "cpus": 1.0,
        "memory_mb": 256,
        "timeout_seconds": 30.0,
    }
    fields.update(overrides)
    return RunSpec(**fields)  # type: ignore[arg-type]


def test_paths_under_input_and_output_are_rewritten(tmp_path: Path) -> None:
    assert rewrite_paths("/input/a.npy", tmp_path / "i", tmp_path / "o") == f"{tmp_path}/i/a.npy"
    assert rewrite_paths("/output", tmp_path / "i", tmp_path / "o") == f"{tmp_path}/o"
    assert rewrite_paths("/inputs/x", tmp_path / "i", tmp_path / "o") == "/inputs/x"


async def test_task_runs_in_a_scratch_dir_with_its_files(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "scratch")
    spec = make_spec(
        tmp_path,
        "sh", "-c",
        'tr a-z A-Z < "$VCNODE_INPUT/in.txt" > "$1"; pwd; echo 70 > "$VCNODE_OUTPUT/.progress";'
        " sleep 0.6",
        "sh", "/output/out.txt",
    )  # fmt: skip
    (spec.input_dir / "in.txt").write_text("hello")
    progress: list[float] = []
    result = await runtime.run(spec, progress.append)
    assert result.succeeded, result
    assert (spec.output_dir / "out.txt").read_text().strip() == "HELLO"
    assert result.stdout_tail.strip() == str(tmp_path / "scratch" / spec.run_id)
    assert 70.0 in progress
    assert not (tmp_path / "scratch" / spec.run_id).exists(), "scratch dir left behind"


async def test_non_zero_exit_and_timeout(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "scratch")
    failed = await runtime.run(make_spec(tmp_path, "sh", "-c", "exit 4"), lambda _: None)
    assert failed.failure == "exited with code 4"
    timed_out = await runtime.run(
        make_spec(tmp_path, "sh", "-c", "sleep 60", timeout_seconds=0.5), lambda _: None
    )
    assert timed_out.failure == "timed out after 0.5 s (killed)"


async def test_memory_limit_applies(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "scratch")
    spec = make_spec(tmp_path, sys.executable, "-c", "x = bytearray(2 * 1024**3)", memory_mb=64)
    result = await runtime.run(spec, lambda _: None)
    assert result.failure == "out of memory: needed more than its 64 MiB limit"
