"""`Splitter.equivalent`: whether two volunteers' copies of a task's output agree.

Every splitter's outputs here are real: its tasks run with their real commands (locally,
see tests/splitter_runner.py), and the second copy is the first one changed the way a
different CPU, a different numpy, a broken transfer or a forger would change it. Each test
asserts the exact answer, True or False.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from splitters import equivalence
from splitters.api import Splitter, outputs_agree, same_bytes
from splitters.equivalence import Tolerance, arrays_agree, close_arrays
from splitters.image_batch import ImageBatch
from splitters.matrix_addition import MatrixAddition
from splitters.matrix_multiplication import MatrixMultiplication, block_tolerance
from splitters.ml_training import MlTraining
from splitters.openmalaria import OpenMalaria
from splitters.parameter_sweep import ParameterSweep
from splitters.registry import BUILTIN, get_splitter
from splitters.workers import ml_worker
from tests.splitter_runner import LocalRun, run_locally

MATMUL = MatrixMultiplication()
MATADD = MatrixAddition()
ML = MlTraining()
SWEEP = ParameterSweep()
BATCH = ImageBatch()
OM = OpenMalaria()
FAKE_OPENMALARIA = Path(__file__).parent.parent / "fixtures" / "fake_openmalaria.py"


# --- running the splitters --------------------------------------------------------------


@pytest.fixture(scope="module")
def python3_on_path() -> Iterator[None]:
    """The user-command wrappers run `python3` from PATH: this interpreter (with numpy)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin")
        yield


def run(
    splitter: Splitter, raw: Mapping[str, Any], factory: pytest.TempPathFactory, name: str
) -> LocalRun:
    return run_locally(splitter, raw, factory.mktemp(name))


@pytest.fixture(scope="module")
def matmul(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    return run(MATMUL, {"size": 40, "blocks": 2, "seed": 3}, tmp_path_factory, "matmul")


@pytest.fixture(scope="module")
def matmul_k_split(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    raw = {"size": 30, "blocks": 1, "inner_blocks": 2, "seed": 4}
    return run(MATMUL, raw, tmp_path_factory, "matmul_k")


@pytest.fixture(scope="module")
def matadd(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    return run(MATADD, {"size": 30, "blocks": 2, "seed": 5}, tmp_path_factory, "matadd")


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    """An MLP (two layers) on the built-in digits: 2 shards, 1 round."""
    raw = {"model": "mlp", "hidden": 8, "shards": 2, "rounds": 1, "epochs": 3, "seed": 0}
    return run(ML, raw, tmp_path_factory, "ml")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, python3_on_path: None) -> LocalRun:
    code = (
        "import json, sys; x = float(sys.argv[2]);"
        " json.dump(dict(square=x * x, third=x / 3), open(sys.argv[1], 'w'))"
    )
    raw = {
        "command": ["python3", "-c", code, "/output/result.json", "{x}"],
        "grid": {"x": [1.5, 2.0]},
    }
    return run(SWEEP, raw, tmp_path_factory, "sweep")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, python3_on_path: None) -> LocalRun:
    return run(BATCH, BATCH.example, tmp_path_factory, "batch")


@pytest.fixture(scope="module")
def openmalaria(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    """A sweep run by the stand-in for openMalaria (see test_splitter_openmalaria.py)."""
    root = tmp_path_factory.mktemp("openmalaria")
    extra = root / "extra"
    extra.mkdir()
    shutil.copyfile(FAKE_OPENMALARIA, extra / FAKE_OPENMALARIA.name)
    om_dir = root / "om"
    om_dir.mkdir()
    (om_dir / "scenario_48.xsd").write_text("<schema/>\n")
    (om_dir / "densities.csv").write_text("density\n")
    raw = {
        "image": "openmalaria:test",
        "command": [
            "python3",
            f"/input/{FAKE_OPENMALARIA.name}",
            "--resource-path",
            "{resource_dir}",
            "--scenario",
            "{scenario}",
            "--output",
            "{output}",
        ],
        "extra_inputs": str(extra),
        "resource_dir": str(om_dir),
        "population": 100,
        "sweep": {"eir": [5], "coverage": [0.0]},
    }
    return run_locally(OM, raw, fresh(root / "run"), expect_progress=False)


# --- copies -----------------------------------------------------------------------------


@pytest.fixture
def copies(tmp_path: Path) -> Callable[[str], Path]:
    """A fresh path for a second copy, named like the output."""
    counter = iter(range(1_000_000))

    def path(name: str) -> Path:
        folder = tmp_path / f"copy-{next(counter)}"
        folder.mkdir()
        return folder / name

    return path


def copy_of(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


def with_bytes(target: Path, data: bytes) -> Path:
    target.write_bytes(data)
    return target


def truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    return with_bytes(target, data[: int(len(data) * keep)])


def garbage(source: Path, target: Path) -> Path:
    """Random bytes of the same size."""
    return with_bytes(target, random.Random(7).randbytes(source.stat().st_size))


def flipped(source: Path, target: Path, offset: int, mask: int = 0x40) -> Path:
    """One byte changed."""
    data = bytearray(source.read_bytes())
    data[offset] ^= mask
    return with_bytes(target, bytes(data))


def npy_data_offset(path: Path) -> int:
    with path.open("rb") as file:
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        return file.tell()


def saved(target: Path, array: NDArray[Any]) -> Path:
    np.save(target, array, allow_pickle=False)
    return target


def fresh(path: Path) -> Path:
    path.mkdir()
    return path


def load(path: Path) -> NDArray[Any]:
    array: NDArray[Any] = np.load(path, allow_pickle=False)
    return array


def output(run: LocalRun, task: str, name: str) -> Path:
    return run.outputs[task][name]


# --- matrix_multiplication --------------------------------------------------------------


@pytest.fixture
def block(matmul: LocalRun) -> Path:
    return output(matmul, "block-0-1", "c_block.npy")


def test_matmul_block_is_a_real_product_of_floats(block: Path) -> None:
    c = load(block)
    assert c.dtype == np.float64
    assert c.shape == (20, 20)
    assert np.abs(c).max() > 1.0  # sums of 40 products of standard normals


def test_matmul_identical_copy_agrees(block: Path, copies: Callable[[str], Path]) -> None:
    assert MATMUL.equivalent("c_block.npy", block, copy_of(block, copies("c_block.npy"))) is True


def test_matmul_another_summation_order_agrees(
    matmul: LocalRun, block: Path, copies: Callable[[str], Path]
) -> None:
    """The block computed again, adding the k products in reverse order (as another BLAS
    may): not the same bytes, within the tolerance."""
    task = next(t for t in matmul.tasks if t.name == "block-0-1")
    a_panel, b_panel = (
        load(Path(str(task.inputs[name]))) for name in ("a_panel.npy", "b_panel.npy")
    )
    reverse = np.zeros((a_panel.shape[0], b_panel.shape[1]))
    for k in reversed(range(a_panel.shape[1])):
        reverse += np.outer(a_panel[:, k], b_panel[k, :])
    other = saved(copies("c_block.npy"), reverse)
    assert other.read_bytes() != block.read_bytes()
    assert MATMUL.equivalent("c_block.npy", block, other) is True


def test_matmul_values_1e_12_apart_agree(block: Path, copies: Callable[[str], Path]) -> None:
    c = load(block)
    other = saved(copies("c_block.npy"), c * (1 + 1e-12))
    assert MATMUL.equivalent("c_block.npy", block, other) is True
    assert MATMUL.equivalent("c_block.npy", other, block) is True


def test_matmul_a_flip_in_the_last_bits_agrees(block: Path, copies: Callable[[str], Path]) -> None:
    other = flipped(block, copies("c_block.npy"), npy_data_offset(block), mask=0x01)
    assert MATMUL.equivalent("c_block.npy", block, other) is True


def test_matmul_values_1e_7_apart_disagree(block: Path, copies: Callable[[str], Path]) -> None:
    c = load(block)
    c[3, 4] *= 1 + 1e-7
    assert MATMUL.equivalent("c_block.npy", block, saved(copies("c_block.npy"), c)) is False


def test_matmul_a_small_element_is_measured_against_the_block(
    block: Path, copies: Callable[[str], Path]
) -> None:
    """An element that is what is left of a cancelling sum carries an error relative to
    the block's magnitude, not its own."""
    c = load(block)
    scale = float(np.abs(c).max())
    c[0, 0] = 1e-6
    honest = saved(copies("c_block.npy"), c)
    c[0, 0] = 1e-6 + 1e-11 * scale  # 1e-5 relative to itself, 1e-11 of the block
    assert MATMUL.equivalent("c_block.npy", honest, saved(copies("c_block.npy"), c)) is True
    c[0, 0] = 1e-6 + 1e-7 * scale
    assert MATMUL.equivalent("c_block.npy", honest, saved(copies("c_block.npy"), c)) is False


def test_matmul_a_corrupted_byte_disagrees(block: Path, copies: Callable[[str], Path]) -> None:
    # The most significant byte (sign and exponent) of the 6th element, little-endian.
    offset = npy_data_offset(block) + 5 * 8 + 7
    other = flipped(block, copies("c_block.npy"), offset)
    assert MATMUL.equivalent("c_block.npy", block, other) is False


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_matmul_a_truncated_copy_disagrees(
    block: Path, copies: Callable[[str], Path], keep: float
) -> None:
    other = truncated(block, copies("c_block.npy"), keep)
    assert MATMUL.equivalent("c_block.npy", block, other) is False
    assert MATMUL.equivalent("c_block.npy", other, block) is False


def test_matmul_garbage_disagrees(block: Path, copies: Callable[[str], Path]) -> None:
    other = garbage(block, copies("c_block.npy"))
    assert MATMUL.equivalent("c_block.npy", block, other) is False
    assert MATMUL.equivalent("c_block.npy", other, block) is False


def test_matmul_an_empty_file_disagrees(block: Path, copies: Callable[[str], Path]) -> None:
    assert MATMUL.equivalent("c_block.npy", block, with_bytes(copies("c_block.npy"), b"")) is False


@pytest.mark.parametrize(
    "reshape",
    [
        pytest.param(lambda c: c.reshape(40, 10), id="same-size"),
        pytest.param(lambda c: c.T[:-1], id="fewer-rows"),
        pytest.param(lambda c: c[np.newaxis], id="3-d"),
    ],
)
def test_matmul_the_wrong_shape_disagrees(
    block: Path,
    copies: Callable[[str], Path],
    reshape: Callable[[NDArray[Any]], NDArray[Any]],
) -> None:
    other = saved(copies("c_block.npy"), np.ascontiguousarray(reshape(load(block))))
    assert MATMUL.equivalent("c_block.npy", block, other) is False


def test_matmul_another_dtype_disagrees(block: Path, copies: Callable[[str], Path]) -> None:
    other = saved(copies("c_block.npy"), load(block).astype(np.float32))
    assert MATMUL.equivalent("c_block.npy", block, other) is False


def test_matmul_big_endian_and_another_header_agree(
    block: Path, copies: Callable[[str], Path]
) -> None:
    c = load(block)
    big_endian = saved(copies("c_block.npy"), c.astype(">f8"))
    assert MATMUL.equivalent("c_block.npy", block, big_endian) is True
    # As an older numpy lays a .npy out: the data aligned to 16 bytes, not 64.
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (20, 20), }".ljust(69) + "\n"
    older = with_bytes(
        copies("c_block.npy"),
        b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + c.tobytes(),
    )
    assert npy_data_offset(older) == 80
    np.testing.assert_array_equal(load(older), c)
    assert MATMUL.equivalent("c_block.npy", block, older) is True


def test_matmul_trailing_bytes_disagree(block: Path, copies: Callable[[str], Path]) -> None:
    other = with_bytes(copies("c_block.npy"), block.read_bytes() + b"\0" * 8)
    assert MATMUL.equivalent("c_block.npy", block, other) is False


def test_matmul_a_pickled_object_array_disagrees(
    block: Path, copies: Callable[[str], Path]
) -> None:
    other = copies("c_block.npy")
    np.save(other, load(block).astype(object), allow_pickle=True)
    assert MATMUL.equivalent("c_block.npy", block, other) is False


def test_matmul_an_infinity_for_a_number_disagrees(
    block: Path, copies: Callable[[str], Path]
) -> None:
    c = load(block)
    c[1, 1] = np.inf
    infinite = saved(copies("c_block.npy"), c)
    assert MATMUL.equivalent("c_block.npy", block, infinite) is False
    assert MATMUL.equivalent("c_block.npy", infinite, block) is False
    both = copy_of(infinite, copies("c_block.npy"))
    assert MATMUL.equivalent("c_block.npy", infinite, both) is True


def test_matmul_partial_products_are_compared_the_same_way(
    matmul_k_split: LocalRun, copies: Callable[[str], Path]
) -> None:
    partial = output(matmul_k_split, "partial-0-0-1", "partial.npy")
    assert load(partial).shape == (30, 30)
    close = saved(copies("partial.npy"), load(partial) * (1 + 1e-12))
    assert MATMUL.equivalent("partial.npy", partial, close) is True
    assert MATMUL.equivalent("partial.npy", partial, truncated(partial, copies("p.npy"))) is False
    summed = output(matmul_k_split, "block-0-0", "c_block.npy")
    close = saved(copies("c_block.npy"), load(summed) * (1 + 1e-12))
    assert MATMUL.equivalent("c_block.npy", summed, close) is True


def test_matmul_float32_blocks_get_float32_rounding(
    tmp_path: Path, copies: Callable[[str], Path]
) -> None:
    rng = np.random.default_rng(1)
    raw = {}
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((16, 16)).astype(np.float32))
        raw[name] = str(tmp_path / f"{name}.npy")
    run = run_locally(MATMUL, {**raw, "blocks": 1}, fresh(tmp_path / "run"))
    block = output(run, "block-0-0", "c_block.npy")
    c = load(block)
    assert c.dtype == np.float32
    within = saved(copies("c_block.npy"), c * np.float32(1 + 1e-6))  # ~8 float32 ulps
    assert MATMUL.equivalent("c_block.npy", block, within) is True
    c[2, 2] *= np.float32(1.001)
    assert MATMUL.equivalent("c_block.npy", block, saved(copies("c_block.npy"), c)) is False


def test_matmul_integer_blocks_must_be_equal(tmp_path: Path, copies: Callable[[str], Path]) -> None:
    rng = np.random.default_rng(2)
    raw = {}
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.integers(-1000, 1000, (12, 12)))
        raw[name] = str(tmp_path / f"{name}.npy")
    run = run_locally(MATMUL, {**raw, "blocks": 1}, fresh(tmp_path / "run"))
    block = output(run, "block-0-0", "c_block.npy")
    c = load(block)
    assert c.dtype == np.int64
    same = saved(copies("c_block.npy"), c.astype(">i8"))
    assert MATMUL.equivalent("c_block.npy", block, same) is True
    c[5, 5] += 1
    assert MATMUL.equivalent("c_block.npy", block, saved(copies("c_block.npy"), c)) is False


def test_block_tolerance_follows_the_precision() -> None:
    assert block_tolerance(np.dtype(np.float64)) == Tolerance(rtol=1e-9, scaled_atol=1e-9)
    assert block_tolerance(np.dtype(np.complex128)) == Tolerance(rtol=1e-9, scaled_atol=1e-9)
    assert block_tolerance(np.dtype(np.float32)) == Tolerance(rtol=1e-4, scaled_atol=1e-4)
    assert block_tolerance(np.dtype(np.float16)) == Tolerance(rtol=1e-2, scaled_atol=1e-2)
    assert block_tolerance(np.dtype(np.int32)) == equivalence.EXACT


def test_matmul_large_blocks_are_compared_chunk_by_chunk(
    block: Path, copies: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With chunks of 7 elements a block is many chunks: a difference in the last row is
    still found, and values within tolerance in every chunk still agree."""
    monkeypatch.setattr(equivalence, "CHUNK_ELEMENTS", 7)
    c = load(block)
    close = saved(copies("c.npy"), c * (1 + 1e-12))
    assert MATMUL.equivalent("c_block.npy", block, close) is True
    c[-1, -1] += 1.0
    assert MATMUL.equivalent("c_block.npy", block, saved(copies("c.npy"), c)) is False


# --- matrix_addition --------------------------------------------------------------------


@pytest.fixture
def sum_block(matadd: LocalRun) -> Path:
    return output(matadd, "block-1-0", "c_block.npy")


def test_matadd_identical_copy_agrees(sum_block: Path, copies: Callable[[str], Path]) -> None:
    other = copy_of(sum_block, copies("c_block.npy"))
    assert MATADD.equivalent("c_block.npy", sum_block, other) is True


def test_matadd_values_are_exact_even_in_the_last_bit(
    sum_block: Path, copies: Callable[[str], Path]
) -> None:
    last_bit = flipped(sum_block, copies("c_block.npy"), npy_data_offset(sum_block), mask=0x01)
    assert MATADD.equivalent("c_block.npy", sum_block, last_bit) is False
    close = saved(copies("c_block.npy"), load(sum_block) * (1 + 1e-15))
    assert MATADD.equivalent("c_block.npy", sum_block, close) is False


def test_matadd_another_byte_order_agrees(sum_block: Path, copies: Callable[[str], Path]) -> None:
    other = saved(copies("c_block.npy"), load(sum_block).astype(">f8"))
    assert other.read_bytes() != sum_block.read_bytes()
    assert MATADD.equivalent("c_block.npy", sum_block, other) is True


def test_matadd_nans_agree_whatever_their_sign_bit(
    sum_block: Path, copies: Callable[[str], Path]
) -> None:
    """inf + -inf is a NaN with the sign bit set on x86 and clear on ARM."""
    c = load(sum_block)
    c[0, :3] = np.inf + -np.inf
    x86 = saved(copies("c_block.npy"), np.copysign(c, np.where(np.isnan(c), -1.0, c)))
    arm = saved(copies("c_block.npy"), np.where(np.isnan(c), np.abs(c), c))
    assert x86.read_bytes() != arm.read_bytes()
    assert MATADD.equivalent("c_block.npy", x86, arm) is True
    assert MATADD.equivalent("c_block.npy", sum_block, arm) is False


def test_matadd_a_corrupted_byte_disagrees(sum_block: Path, copies: Callable[[str], Path]) -> None:
    other = flipped(sum_block, copies("c_block.npy"), npy_data_offset(sum_block) + 7)
    assert MATADD.equivalent("c_block.npy", sum_block, other) is False


def test_matadd_truncated_garbage_and_wrong_shape_disagree(
    sum_block: Path, copies: Callable[[str], Path]
) -> None:
    assert MATADD.equivalent("c_block.npy", sum_block, truncated(sum_block, copies("c"))) is False
    assert MATADD.equivalent("c_block.npy", sum_block, garbage(sum_block, copies("c"))) is False
    wrong = saved(copies("c_block.npy"), load(sum_block).reshape(-1))
    assert MATADD.equivalent("c_block.npy", sum_block, wrong) is False


# --- ml_training ------------------------------------------------------------------------


@pytest.fixture
def update(ml: LocalRun) -> Path:
    return output(ml, "train-0-1", "update.npz")


@pytest.fixture
def model(ml: LocalRun) -> Path:
    return output(ml, "average-0", "model.npz")


@pytest.fixture
def metrics(ml: LocalRun) -> Path:
    return output(ml, "average-0", "metrics.json")


def arrays_of(path: Path) -> dict[str, NDArray[Any]]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def rewritten(
    source: Path, target: Path, change: Callable[[dict[str, NDArray[Any]]], None]
) -> Path:
    """The archive written again by the worker's own writer (valid CRCs), changed."""
    arrays = arrays_of(source)
    change(arrays)
    ml_worker.save_npz(target, arrays)
    return target


def scaled_layers(factor: float) -> Callable[[dict[str, NDArray[Any]]], None]:
    def change(arrays: dict[str, NDArray[Any]]) -> None:
        for name in ("w0", "b0", "w1", "b1"):
            arrays[name] = arrays[name] * factor

    return change


def test_ml_outputs_are_real_trained_layers(update: Path, model: Path) -> None:
    trained = arrays_of(update)
    assert sorted(trained) == ["b0", "b1", "samples", "train_loss", "w0", "w1"]
    assert trained["w0"].shape == (64, 8)
    assert sorted(arrays_of(model)) == ["b0", "b1", "classes", "mean", "std", "w0", "w1"]


@pytest.mark.parametrize("name", ["update.npz", "model.npz"])
def test_ml_identical_copy_agrees(
    name: str, update: Path, model: Path, copies: Callable[[str], Path]
) -> None:
    source = update if name == "update.npz" else model
    assert ML.equivalent(name, source, copy_of(source, copies(name))) is True


@pytest.mark.parametrize("factor", [1 + 1e-12, 1 - 1e-9, 1 + 5e-5])
def test_ml_weights_within_tolerance_agree(
    update: Path, copies: Callable[[str], Path], factor: float
) -> None:
    other = rewritten(update, copies("update.npz"), scaled_layers(factor))
    assert other.read_bytes() != update.read_bytes()
    assert ML.equivalent("update.npz", update, other) is True
    assert ML.equivalent("update.npz", other, update) is True


def test_ml_training_from_a_model_1_ulp_away_agrees(
    ml: LocalRun, update: Path, copies: Callable[[str], Path]
) -> None:
    """The worker's own training, from a starting model 1 ulp away in every weight (as
    another CPU's rounding would leave it): a different update, within the tolerance."""
    task = next(t for t in ml.tasks if t.name == "train-0-1")
    model_0 = arrays_of(Path(str(task.inputs["model.npz"])))
    for name in ("w0", "w1"):
        model_0[name] = np.nextafter(model_0[name], np.inf)
    nudged = copies("model_0.npz")
    ml_worker.save_npz(nudged, model_0)
    other = copies("update.npz")
    index = task.command.index("--epochs")
    assert (
        ml_worker.main(
            ["train", str(nudged), str(task.inputs["shard.npz"]), str(other), *task.command[index:]]
        )
        == 0
    )
    assert other.read_bytes() != update.read_bytes()
    assert ML.equivalent("update.npz", update, other) is True


def test_ml_forged_weights_disagree(update: Path, copies: Callable[[str], Path]) -> None:
    other = rewritten(update, copies("update.npz"), scaled_layers(1.01))
    assert ML.equivalent("update.npz", update, other) is False

    def one_weight(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["w1"] = arrays["w1"].copy()
        arrays["w1"][3, 2] += 1e-3 * np.abs(arrays["w1"]).max()

    other = rewritten(update, copies("update.npz"), one_weight)
    assert ML.equivalent("update.npz", update, other) is False


def test_ml_a_changed_sample_count_disagrees(update: Path, copies: Callable[[str], Path]) -> None:
    def more(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["samples"] = arrays["samples"] + 1

    assert ML.equivalent("update.npz", update, rewritten(update, copies("u.npz"), more)) is False


def test_ml_the_data_description_must_be_equal(model: Path, copies: Callable[[str], Path]) -> None:
    """mean, std and classes are copied from the inputs: not even the last bit may move."""

    def nudge(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["mean"] = np.nextafter(arrays["mean"], np.inf)

    assert ML.equivalent("model.npz", model, rewritten(model, copies("m.npz"), nudge)) is False
    unchanged = rewritten(model, copies("m.npz"), lambda arrays: None)
    assert ML.equivalent("model.npz", model, unchanged) is True


def test_ml_a_missing_or_extra_member_disagrees(
    update: Path, copies: Callable[[str], Path]
) -> None:
    def drop(arrays: dict[str, NDArray[Any]]) -> None:
        del arrays["train_loss"]

    def add(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["w2"] = np.zeros((10, 10))

    for change in (drop, add):
        other = rewritten(update, copies("update.npz"), change)
        assert ML.equivalent("update.npz", update, other) is False


def test_ml_the_wrong_shape_disagrees(update: Path, copies: Callable[[str], Path]) -> None:
    def fewer_units(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["w0"] = arrays["w0"][:, :-1]

    def transposed(arrays: dict[str, NDArray[Any]]) -> None:
        arrays["w1"] = np.ascontiguousarray(arrays["w1"].T)

    for change in (fewer_units, transposed):
        other = rewritten(update, copies("update.npz"), change)
        assert ML.equivalent("update.npz", update, other) is False


def test_ml_a_corrupted_byte_in_the_weights_disagrees(
    update: Path, copies: Callable[[str], Path]
) -> None:
    """Any byte of a stored member: the member's CRC no longer matches, even for the
    lowest bits of a weight."""
    with zipfile.ZipFile(update) as archive:
        info = archive.getinfo("w0.npy")
    data = update.read_bytes()
    local = info.header_offset  # a local file header: 30 bytes, the name, an extra field
    name_length = int.from_bytes(data[local + 26 : local + 28], "little")
    extra_length = int.from_bytes(data[local + 28 : local + 30], "little")
    start = local + 30 + name_length + extra_length
    member = data[start : start + info.compress_size]
    assert member.startswith(b"\x93NUMPY")
    offset = start + npy_data_offset_of(member) + 8 * 10  # the lowest byte of w0's 11th
    other = flipped(update, copies("update.npz"), offset, mask=0x01)
    assert ML.equivalent("update.npz", update, other) is False


def npy_data_offset_of(data: bytes) -> int:
    file = io.BytesIO(data)
    np.lib.format.read_magic(file)
    np.lib.format.read_array_header_1_0(file)
    return file.tell()


@pytest.mark.parametrize("name", ["update.npz", "model.npz"])
def test_ml_truncated_and_garbage_archives_disagree(
    name: str, update: Path, model: Path, copies: Callable[[str], Path]
) -> None:
    source = update if name == "update.npz" else model
    for keep in (0.5, 0.99):
        assert ML.equivalent(name, source, truncated(source, copies(name), keep)) is False
    assert ML.equivalent(name, source, garbage(source, copies(name))) is False
    assert ML.equivalent(name, garbage(source, copies(name)), source) is False


def test_ml_an_npy_for_an_npz_disagrees(update: Path, copies: Callable[[str], Path]) -> None:
    other = saved(copies("update.npz"), arrays_of(update)["w0"])
    assert ML.equivalent("update.npz", update, other) is False


def test_ml_a_pickled_member_disagrees(update: Path, copies: Callable[[str], Path]) -> None:
    arrays: dict[str, Any] = arrays_of(update)
    arrays["samples"] = np.array([int(arrays["samples"])], dtype=object)
    other = copies("update.npz")
    np.savez(other, **arrays)
    assert ML.equivalent("update.npz", update, other) is False


def test_ml_a_member_larger_than_its_array_is_not_read(
    update: Path, copies: Callable[[str], Path]
) -> None:
    """A member far larger than the other copy's is refused before it is read, although
    numpy would read the same array from it (and ignore the rest)."""
    arrays = arrays_of(update)
    other = copies("update.npz")
    with zipfile.ZipFile(other, "w") as archive:
        for name, array in sorted(arrays.items()):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            padding = b"\0" * 100_000 if name == "w0" else b""
            archive.writestr(f"{name}.npy", buffer.getvalue() + padding)
    assert arrays_of(other).keys() == arrays.keys()
    np.testing.assert_array_equal(arrays_of(other)["w0"], arrays["w0"])
    assert ML.equivalent("update.npz", update, other) is False


def test_ml_metrics_equal_within_rounding_agree(
    metrics: Path, copies: Callable[[str], Path]
) -> None:
    values = json.loads(metrics.read_text())
    assert {"round", "accuracy", "loss", "train_loss"} <= set(values)
    assert ML.equivalent("metrics.json", metrics, copy_of(metrics, copies("m.json"))) is True
    values["loss"] *= 1 + 1e-12
    values["train_loss"] *= 1 - 1e-10
    other = with_bytes(copies("metrics.json"), json.dumps(values).encode())  # other layout
    assert ML.equivalent("metrics.json", metrics, other) is True


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.update(loss=m["loss"] * 1.001), id="loss"),
        pytest.param(lambda m: m.update(accuracy=m["accuracy"] - 1 / 360), id="accuracy"),
        pytest.param(lambda m: m.update(round=1), id="round"),
        pytest.param(lambda m: m.update(test_samples=float(m["test_samples"])), id="int-float"),
        pytest.param(lambda m: m.pop("shards"), id="missing-key"),
        pytest.param(lambda m: m.update(extra=1), id="extra-key"),
    ],
)
def test_ml_metrics_that_differ_disagree(
    metrics: Path, copies: Callable[[str], Path], change: Callable[[dict[str, Any]], object]
) -> None:
    values = json.loads(metrics.read_text())
    change(values)
    other = with_bytes(copies("metrics.json"), json.dumps(values, indent=2).encode())
    assert ML.equivalent("metrics.json", metrics, other) is False


def test_ml_malformed_metrics_disagree(metrics: Path, copies: Callable[[str], Path]) -> None:
    assert ML.equivalent("metrics.json", metrics, truncated(metrics, copies("m.json"))) is False
    assert ML.equivalent("metrics.json", metrics, garbage(metrics, copies("m.json"))) is False
    as_list = with_bytes(copies("m.json"), json.dumps([json.loads(metrics.read_text())]).encode())
    assert ML.equivalent("metrics.json", metrics, as_list) is False
    deep = with_bytes(copies("m.json"), b"[" * 100_000 + b"]" * 100_000)
    assert ML.equivalent("metrics.json", metrics, deep) is False


# --- parameter_sweep, image_batch, openmalaria: byte for byte ---------------------------


def exact_outputs() -> list[Any]:
    return [
        pytest.param("sweep", SWEEP, "point-0", "result.json", id="sweep-result"),
        pytest.param("sweep", SWEEP, "point-1", "point.json", id="sweep-point"),
        pytest.param("batch", BATCH, "batch-1", "demo-2-gray.npy", id="batch-output"),
        pytest.param("batch", BATCH, "batch-0", "batch.json", id="batch-record"),
        pytest.param("openmalaria", OM, "run-0000", "output.txt", id="openmalaria-output"),
        pytest.param("openmalaria", OM, "manifest", "runs.json", id="openmalaria-runs"),
    ]


@pytest.mark.parametrize(("fixture", "splitter", "task", "name"), exact_outputs())
def test_exact_outputs_agree_only_byte_for_byte(
    request: pytest.FixtureRequest,
    copies: Callable[[str], Path],
    fixture: str,
    splitter: Splitter,
    task: str,
    name: str,
) -> None:
    source = output(request.getfixturevalue(fixture), task, name)
    data = source.read_bytes()
    assert len(data) > 20
    assert splitter.equivalent(name, source, copy_of(source, copies(name))) is True
    for offset in (0, len(data) // 2, len(data) - 1):
        assert splitter.equivalent(name, source, flipped(source, copies(name), offset, 1)) is False
    assert splitter.equivalent(name, source, truncated(source, copies(name))) is False
    assert splitter.equivalent(name, source, truncated(source, copies(name), 0.99)) is False
    assert splitter.equivalent(name, source, garbage(source, copies(name))) is False
    longer = with_bytes(copies(name), data + b"\n")
    assert splitter.equivalent(name, source, longer) is False


def test_sweep_results_with_the_same_numbers_laid_out_otherwise_disagree(
    sweep: LocalRun, copies: Callable[[str], Path]
) -> None:
    """The user's command's output has no known format: the same JSON in another layout
    is not the same output."""
    source = output(sweep, "point-1", "result.json")
    values = json.loads(source.read_text())
    assert values == {"square": 4.0, "third": 2.0 / 3}
    other = with_bytes(copies("result.json"), json.dumps(values, indent=1).encode())
    assert SWEEP.equivalent("result.json", source, other) is False


def test_batch_an_array_of_another_shape_disagrees(
    batch: LocalRun, copies: Callable[[str], Path]
) -> None:
    source = output(batch, "batch-1", "demo-3-gray.npy")
    gray = load(source)
    assert gray.shape == (32, 32)
    other = saved(copies("demo-3-gray.npy"), gray.reshape(16, 64))
    assert BATCH.equivalent("demo-3-gray.npy", source, other) is False


# --- every splitter ---------------------------------------------------------------------


def test_every_builtin_splitter_has_equivalent() -> None:
    for name in BUILTIN:
        assert callable(getattr(get_splitter(name), "equivalent", None)), name


@pytest.mark.parametrize(
    ("splitter", "name"),
    [
        (MATMUL, "c_block.npy"),
        (MATMUL, "partial.npy"),
        (MATADD, "c_block.npy"),
        (ML, "update.npz"),
        (ML, "model.npz"),
        (ML, "metrics.json"),
        (SWEEP, "result.json"),
        (BATCH, "out.png"),
        (OM, "output.txt"),
    ],
)
def test_no_splitter_raises_on_what_a_volunteer_may_send(
    tmp_path: Path, splitter: Splitter, name: str
) -> None:
    """Missing files, folders, empty files and garbage: False, never an exception."""
    good = tmp_path / "good"
    good.write_bytes(b"\x93NUMPY" + random.Random(1).randbytes(200))
    folder = tmp_path / "folder"
    folder.mkdir()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    not_an_npz = tmp_path / "zip"
    with zipfile.ZipFile(not_an_npz, "w") as archive:
        archive.writestr("w0.npy", b"not an array")
    missing = tmp_path / "missing"
    for other in (folder, empty, not_an_npz, missing):
        assert splitter.equivalent(name, good, other) is False
        assert splitter.equivalent(name, other, good) is False


def test_an_unknown_output_name_is_compared_byte_for_byte(
    block: Path, copies: Callable[[str], Path]
) -> None:
    close = saved(copies("x.npy"), load(block) * (1 + 1e-12))
    assert MATMUL.equivalent("other.npy", block, close) is False
    assert MATMUL.equivalent("other.npy", block, copy_of(block, copies("x.npy"))) is True


# --- the shared helpers -----------------------------------------------------------------


def test_same_bytes_reads_past_the_first_chunk(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 5)
    a = with_bytes(tmp_path / "a", data)
    assert same_bytes(a, with_bytes(tmp_path / "b", data)) is True
    changed = bytearray(data)
    changed[-2] ^= 1
    assert same_bytes(a, with_bytes(tmp_path / "c", bytes(changed))) is False
    assert same_bytes(a, with_bytes(tmp_path / "d", data[:-1])) is False
    assert same_bytes(a, tmp_path / "missing") is False


def test_arrays_agree_is_symmetric_and_strict_about_infinities_and_nans() -> None:
    tolerance = Tolerance(rtol=1e-9, scaled_atol=1e-9)
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0])
    assert arrays_agree(x, x.copy(), tolerance) is True
    for changed in ([1.0, 0.0, np.inf, -np.inf, 0.0], [1.0, np.nan, -np.inf, -np.inf, 0.0]):
        y = np.array(changed)
        assert arrays_agree(x, y, tolerance) is False
        assert arrays_agree(y, x, tolerance) is False
    assert arrays_agree(np.array(2.0), np.array(2.0 + 1e-12), tolerance) is True
    assert arrays_agree(np.array(["a"]), np.array(["b"]), tolerance) is False


def test_close_arrays_defaults_to_exact(tmp_path: Path) -> None:
    a = saved(tmp_path / "a.npy", np.arange(5.0))
    assert close_arrays(a, saved(tmp_path / "b.npy", np.arange(5.0) * (1 + 1e-15))) is False
    assert close_arrays(a, saved(tmp_path / "c.npy", np.arange(5.0).astype(">f8"))) is True


class Plain:
    """A plugin splitter written before `equivalent` existed."""

    name = "plain"


class Broken(Plain):
    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        raise RuntimeError("a bug")


def test_outputs_agree_compares_bytes_for_a_splitter_without_equivalent(tmp_path: Path) -> None:
    a = with_bytes(tmp_path / "a", b"same")
    plain: Any = Plain()
    assert outputs_agree(plain, "out", a, with_bytes(tmp_path / "b", b"same")) is True
    assert outputs_agree(plain, "out", a, with_bytes(tmp_path / "c", b"diff")) is False


def test_outputs_agree_takes_a_raising_equivalent_as_disagreement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = with_bytes(tmp_path / "a", b"same")
    broken: Any = Broken()
    with caplog.at_level(logging.ERROR, logger="splitters.api"):
        assert outputs_agree(broken, "out", a, a) is False
    assert "splitter plain: equivalent raised on out" in caplog.text


def test_outputs_agree_asks_the_splitter(block: Path, copies: Callable[[str], Path]) -> None:
    close = saved(copies("c_block.npy"), load(block) * (1 + 1e-12))
    assert outputs_agree(MATMUL, "c_block.npy", block, close) is True
    assert outputs_agree(MATADD, "c_block.npy", block, close) is False
