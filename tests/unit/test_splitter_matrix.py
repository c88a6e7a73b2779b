"""The matrix splitters end to end: split, run every task's real command, merge, compare
(tasks run as local subprocesses: see tests/splitter_runner.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from splitters import blocks
from splitters.api import (
    DEFAULT_IMAGE,
    MergeError,
    Splitter,
    SplitterError,
    TaskOutput,
    TaskTemplate,
)
from splitters.matrix_addition import MatrixAddition
from splitters.matrix_multiplication import MatrixMultiplication
from tests.splitter_runner import prepare, run_locally

MULTIPLY = MatrixMultiplication()
ADD = MatrixAddition()


def run_workflow(
    splitter: Splitter, raw: Mapping[str, Any], tmp_path: Path
) -> tuple[list[TaskTemplate], NDArray[Any]]:
    """Split, run every task, merge; the tasks and the merged C."""
    run = run_locally(splitter, raw, tmp_path)
    assert [path.name for path in run.results] == ["C.npy"]
    return run.tasks, np.load(run.results[0])


def save_operands(tmp_path: Path, a: NDArray[Any], b: NDArray[Any]) -> dict[str, str]:
    """Writes A and B under tmp_path/data; the parameters naming them relative to tmp_path."""
    (tmp_path / "data").mkdir(exist_ok=True)
    np.save(tmp_path / "data" / "a.npy", a)
    np.save(tmp_path / "data" / "b.npy", b)
    return {"a": "data/a.npy", "b": "data/b.npy"}


def test_generated_64x64_in_2x2_blocks_multiplies_to_a_times_b(tmp_path: Path) -> None:
    tasks, c = run_workflow(MULTIPLY, {"size": "64", "blocks": "2", "seed": "7"}, tmp_path)
    a, b = blocks.generate(64, 7)
    assert len(tasks) == 4
    assert c.shape == (64, 64)
    assert np.allclose(c, a @ b)


def test_uneven_files_in_3x3_blocks_multiply_to_a_times_b(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 30)), rng.standard_normal((30, 70))
    raw = {**save_operands(tmp_path, a, b), "blocks": 3}
    tasks, c = run_workflow(MULTIPLY, raw, tmp_path)
    assert sorted(task.name for task in tasks) == sorted(
        f"block-{i}-{j}" for i in range(3) for j in range(3)
    )
    assert c.shape == (50, 70)
    assert np.allclose(c, a @ b)


def test_integer_matrices_multiply_exactly_and_keep_their_type(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-9, 9, (7, 5), dtype=np.int64)
    b = rng.integers(-9, 9, (5, 6), dtype=np.int64)
    _, c = run_workflow(MULTIPLY, {**save_operands(tmp_path, a, b), "blocks": 2}, tmp_path)
    assert c.dtype == np.int64
    assert np.array_equal(c, a @ b)


def test_uneven_files_in_3x3_blocks_add_to_a_plus_b(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 70)), rng.standard_normal((50, 70))
    tasks, c = run_workflow(ADD, {**save_operands(tmp_path, a, b), "blocks": 3}, tmp_path)
    assert len(tasks) == 9
    assert c.shape == (50, 70)
    assert np.allclose(c, a + b)


def test_generated_addition_adds_the_generated_matrices(tmp_path: Path) -> None:
    _, c = run_workflow(ADD, {"size": 33, "blocks": 4}, tmp_path)
    a, b = blocks.generate(33, 0)
    assert np.allclose(c, a + b)


def test_panels_are_written_once_and_shared_by_the_tasks_that_need_them(tmp_path: Path) -> None:
    tasks = MULTIPLY.split(prepare(MULTIPLY, {"size": 12, "blocks": 3}, tmp_path), tmp_path)
    mappings = [path for task in tasks for path in task.inputs.values() if isinstance(path, Path)]
    files = set(mappings)
    assert len(mappings) == 27  # 9 tasks x (worker, A panel, B panel)
    assert len(files) == 7  # one worker, 3 A panels, 3 B panels
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(p.name for p in files)
    by_name = {task.name: task.inputs for task in tasks}
    for i in range(3):
        row = {by_name[f"block-{i}-{j}"]["a_panel.npy"] for j in range(3)}
        column = {by_name[f"block-{j}-{i}"]["b_panel.npy"] for j in range(3)}
        assert row == {tmp_path / f"a_panel_{i}.npy"}
        assert column == {tmp_path / f"b_panel_{i}.npy"}


def test_the_same_problem_splits_into_byte_identical_inputs(tmp_path: Path) -> None:
    """Same panel, same bytes: a re-submitted workflow's inputs dedupe by content hash."""

    def digests(workdir: Path) -> dict[str, str]:
        workdir.mkdir()
        MULTIPLY.split(prepare(MULTIPLY, {"size": 20, "blocks": 3}, tmp_path), workdir)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in workdir.iterdir()}

    first, second = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert first == second
    assert len(set(first.values())) == len(first), "different panels, different bytes"


@pytest.mark.parametrize(
    ("splitter", "script"), [(MULTIPLY, "matmul_block.py"), (ADD, "matadd_block.py")]
)
def test_tasks_ship_their_worker_script_as_an_input_and_run_in_the_worker_image(
    splitter: Splitter, script: str, tmp_path: Path
) -> None:
    tasks = splitter.split(prepare(splitter, {"size": 8}, tmp_path), tmp_path)
    shipped = resources.files("splitters.workers").joinpath(script).read_bytes()
    for task in tasks:
        assert task.image == DEFAULT_IMAGE
        assert task.command[:2] == ("python3", f"/input/{script}")
        worker = task.inputs[script]
        assert isinstance(worker, Path)
        assert worker.read_bytes() == shipped
        assert task.outputs == ("c_block.npy",)
        assert task.timeout_seconds == 600


def test_estimate_matches_the_tasks_and_covers_three_float64_blocks(tmp_path: Path) -> None:
    params = prepare(MULTIPLY, {"size": 1000, "blocks": 2}, tmp_path)
    estimate = MULTIPLY.estimate(params)
    assert list(tmp_path.iterdir()) == [], "an estimate writes nothing"
    three_blocks_mb = 3 * 500 * 1000 * 8 / 2**20  # A panel 500x1000, B panel, C block
    assert estimate.task_count == 4
    assert estimate.resources.memory_mb > three_blocks_mb
    assert estimate.resources.cpus == 1.0
    assert estimate.seconds_per_task > 1.0
    tasks = MULTIPLY.split(params, tmp_path)
    assert len(tasks) == estimate.task_count
    assert {task.resources for task in tasks} == {estimate.resources}


def test_memory_and_timeout_given_are_what_the_tasks_ask_for(tmp_path: Path) -> None:
    raw = {"size": 16, "memory_mb": "900", "timeout_seconds": "30"}
    tasks = MULTIPLY.split(prepare(MULTIPLY, raw, tmp_path), tmp_path)
    assert {task.resources.memory_mb for task in tasks} == {900}
    assert {task.timeout_seconds for task in tasks} == {30}


def test_bounds_give_the_remainder_to_the_first_blocks() -> None:
    assert blocks.bounds(50, 3) == ((0, 17), (17, 34), (34, 50))
    assert blocks.bounds(4, 4) == ((0, 1), (1, 2), (2, 3), (3, 4))


@pytest.fixture
def operand_files(tmp_path: Path) -> Path:
    """Matrices and non-matrices to name in bad workflows, relative to tmp_path."""
    ones = np.ones
    np.save(tmp_path / "a.npy", ones((4, 3)))
    np.save(tmp_path / "b.npy", ones((3, 5)))
    np.save(tmp_path / "b_tall.npy", ones((4, 5)))
    np.save(tmp_path / "b_narrow.npy", ones((3, 2)))
    np.save(tmp_path / "cube.npy", ones((2, 2, 2)))
    np.save(tmp_path / "words.npy", np.array([["x", "y"], ["z", "w"]]))
    np.save(tmp_path / "empty.npy", ones((0, 3)))
    (tmp_path / "notes.txt").write_text("not an array")
    return tmp_path


BAD_PARAMETERS = [
    pytest.param(MULTIPLY, {"a": "missing.npy", "b": "b.npy"}, "a", id="a-missing-file"),
    pytest.param(MULTIPLY, {"a": "a.npy", "b": "b_tall.npy"}, "b", id="b-rows-not-a-cols"),
    pytest.param(MULTIPLY, {"a": "cube.npy", "b": "b.npy"}, "a", id="a-3d"),
    pytest.param(MULTIPLY, {"a": "a.npy", "b": "cube.npy"}, "b", id="b-3d"),
    pytest.param(MULTIPLY, {"a": "words.npy", "b": "b.npy"}, "a", id="a-not-numeric"),
    pytest.param(MULTIPLY, {"a": "notes.txt", "b": "b.npy"}, "a", id="a-not-npy"),
    pytest.param(MULTIPLY, {"a": "empty.npy", "b": "b.npy"}, "a", id="a-empty"),
    pytest.param(MULTIPLY, {"a": "a.npy"}, "b", id="b-missing"),
    pytest.param(MULTIPLY, {}, "a", id="neither-files-nor-size"),
    pytest.param(MULTIPLY, {"size": 4, "a": "a.npy"}, "size", id="size-and-files"),
    pytest.param(MULTIPLY, {"a": "a.npy", "b": "b.npy", "blocks": 5}, "blocks", id="blocks>rows"),
    pytest.param(
        MULTIPLY, {"a": "a.npy", "b": "b_narrow.npy", "blocks": 3}, "blocks", id="blocks>cols"
    ),
    pytest.param(MULTIPLY, {"size": 3, "blocks": 4}, "blocks", id="blocks>size"),
    pytest.param(MULTIPLY, {"size": 8, "blocks": 0}, "blocks", id="blocks-zero"),
    pytest.param(MULTIPLY, {"size": "eight"}, "size", id="size-not-int"),
    pytest.param(MULTIPLY, {"size": 8, "colour": "red"}, "colour", id="unknown-key"),
    pytest.param(MULTIPLY, {"size": 8, "seed": -1}, "seed", id="seed-negative"),
    pytest.param(MULTIPLY, {"size": 8, "memory_mb": 1}, "memory_mb", id="memory-too-small"),
    pytest.param(MULTIPLY, {"size": 8, "timeout_seconds": 0}, "timeout_seconds", id="timeout-0"),
    pytest.param(ADD, {"a": "a.npy", "b": "b.npy"}, "b", id="add-shapes-differ"),
    pytest.param(ADD, {"a": "a.npy", "b": "a.npy", "blocks": 4}, "blocks", id="add-blocks>cols"),
]


@pytest.mark.parametrize(("splitter", "raw", "key"), BAD_PARAMETERS)
def test_bad_parameters_raise_splitter_error_naming_the_key(
    splitter: Splitter, raw: dict[str, Any], key: str, operand_files: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SplitterError) as caught:
        splitter.split(prepare(splitter, raw, operand_files), workdir)
    assert caught.value.key == key, caught.value
    assert str(caught.value).startswith(f"{key}: ")
    assert list(workdir.iterdir()) == [], "nothing is written for a workflow that cannot run"
    with pytest.raises(SplitterError) as estimated:
        splitter.estimate(prepare(splitter, raw, operand_files))
    assert estimated.value.key == key


def block_outputs(tmp_path: Path, shapes: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for name, shape in shapes.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, np.ones(shape))
        outputs[name] = {"c_block.npy": path}
    return outputs


def test_merge_without_every_block_names_the_missing_one(tmp_path: Path) -> None:
    outputs = block_outputs(
        tmp_path, {"block-0-0": (2, 2), "block-0-1": (2, 2), "block-1-1": (2, 2)}
    )
    with pytest.raises(MergeError, match="block-1-0"):
        MULTIPLY.merge(outputs, tmp_path)
    assert not (tmp_path / "C.npy").exists()


def test_merge_of_blocks_that_do_not_fit_together_fails(tmp_path: Path) -> None:
    shapes = {"block-0-0": (2, 2), "block-0-1": (2, 3), "block-1-0": (1, 2), "block-1-1": (2, 3)}
    with pytest.raises(MergeError, match="block-1-1 is 2x3"):
        MULTIPLY.merge(block_outputs(tmp_path, shapes), tmp_path)
    assert not (tmp_path / "C.npy").exists()


def test_a_k_split_sums_partial_products_in_reduce_tasks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((20, 31)), rng.standard_normal((31, 17))
    raw = {**save_operands(tmp_path, a, b), "blocks": 2, "inner_blocks": 3}
    tasks, c = run_workflow(MULTIPLY, raw, tmp_path)
    assert np.allclose(c, a @ b)
    by_name = {task.name: task for task in tasks}
    assert len(tasks) == 2 * 2 * (3 + 1)
    reduce = by_name["block-1-0"]
    assert reduce.depends_on == ("partial-1-0-0", "partial-1-0-1", "partial-1-0-2")
    assert reduce.inputs["partial-2.npy"] == TaskOutput("partial-1-0-2", "partial.npy")
    assert MULTIPLY.estimate(prepare(MULTIPLY, raw, tmp_path)).task_count == len(tasks)


def test_memory_mb_too_small_for_whole_panels_chooses_a_k_split(tmp_path: Path) -> None:
    # 2000x2000 float64 in a 2x2 grid: whole panels are 2 x 15.3 MiB in, 7.6 MiB out.
    params = prepare(MULTIPLY, {"size": 2000, "blocks": 2, "memory_mb": 90}, tmp_path)
    estimate = MULTIPLY.estimate(params)
    assert estimate.task_count > 4, "the shared dimension was cut"
    assert estimate.resources.memory_mb == 90
    whole = MULTIPLY.estimate(prepare(MULTIPLY, {"size": 2000, "blocks": 2}, tmp_path))
    assert whole.task_count == 4
    assert whole.resources.memory_mb > 90


def test_more_inner_parts_than_columns_is_refused_on_inner_blocks(tmp_path: Path) -> None:
    params = prepare(MULTIPLY, {"size": 4, "blocks": 1, "inner_blocks": 5}, tmp_path)
    with pytest.raises(SplitterError) as refused:
        MULTIPLY.estimate(params)
    assert refused.value.key == "inner_blocks"
