"""The matrix worker scripts in the real worker image (Debian python3, numpy 1.24), locked
down as the Docker runtime runs tasks: no network, read-only root, user nobody, and the
memory the splitter estimated."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from daemon.runtime.spec import read_progress
from splitters import blocks
from splitters.api import Splitter, TaskTemplate, validate_parameters
from splitters.matrix_addition import MatrixAddition
from splitters.matrix_multiplication import MatrixMultiplication

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def run_in_worker_image(image: str, task: TaskTemplate, root: Path) -> Path:
    """Runs the task's own command in the image; the directory it saw as /output."""
    input_dir = root / task.name / "input"
    output_dir = root / task.name / "output"
    input_dir.mkdir(parents=True)
    output_dir.mkdir(parents=True)
    output_dir.chmod(0o777)  # the task runs as nobody
    for name, source in task.inputs.items():
        assert isinstance(source, Path), "a block task reads only files of the split"
        shutil.copyfile(source, input_dir / name)
        (input_dir / name).chmod(0o444)
    memory = task.resources.memory_mb
    argv = [
        *("docker", "run", "--rm", "--network", "none", "--read-only"),
        *("--user", "65534:65534", "--cap-drop", "ALL"),
        *("--security-opt", "no-new-privileges"),
        # The splitter's own estimate, without swap: the block must fit in what it asks for.
        *("--memory", f"{memory}m", "--memory-swap", f"{memory}m", "--cpus", "1"),
        *("-v", f"{input_dir}:/input:ro", "-v", f"{output_dir}:/output"),
        image,
        *task.command,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{task.name} failed in {image}:\n{result.stderr}"
    assert read_progress(output_dir) == 100.0
    return output_dir


def split(splitter: Splitter, a: NDArray[Any], b: NDArray[Any], tmp_path: Path) -> list[Any]:
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    workdir = tmp_path / "work"
    workdir.mkdir()
    raw = {"a": "a.npy", "b": "b.npy", "blocks": 3}
    return splitter.split(validate_parameters(splitter.parameters, raw, tmp_path), workdir)


def test_a_matmul_block_in_the_worker_image_is_that_block_of_a_times_b(
    worker_image: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((50, 30)), rng.standard_normal((30, 70))
    tasks = split(MatrixMultiplication(), a, b, tmp_path)
    task = next(task for task in tasks if task.name == "block-2-1")  # uneven: 16 x 23
    output_dir = run_in_worker_image(worker_image, task, tmp_path / "runs")
    rows, cols = blocks.bounds(50, 3)[2], blocks.bounds(70, 3)[1]
    block = np.load(output_dir / "c_block.npy", allow_pickle=False)
    assert block.shape == (16, 23)
    assert np.allclose(block, (a @ b)[rows[0] : rows[1], cols[0] : cols[1]])


def test_a_matadd_block_in_the_worker_image_is_that_block_of_a_plus_b(
    worker_image: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((50, 70)), rng.standard_normal((50, 70))
    tasks = split(MatrixAddition(), a, b, tmp_path)
    task = next(task for task in tasks if task.name == "block-0-2")
    output_dir = run_in_worker_image(worker_image, task, tmp_path / "runs")
    rows, cols = blocks.bounds(50, 3)[0], blocks.bounds(70, 3)[2]
    block = np.load(output_dir / "c_block.npy", allow_pickle=False)
    assert np.allclose(block, (a + b)[rows[0] : rows[1], cols[0] : cols[1]])
