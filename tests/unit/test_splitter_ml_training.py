"""The ml_training splitter end to end: split, run every task's real command in dependency
order, merge (tasks run as local subprocesses: see tests/splitter_runner.py).

Each task is a python3 + numpy start (0.2-0.4 s here), so the runs are small: softmax on
the built-in digits in 3 shards x 3 rounds (12 tasks, shared by most tests), an MLP in
2 x 2, and a few one- or two-round runs on generated CSV and NPZ data.

Accuracy thresholds, from the same configurations run in-process with seeds 0-9 (the tests
use seed 0): softmax 3 x 3 reached 0.928-0.961 after the last round (seed 0: 0.933), so
>= 0.90; the MLP 2 x 2 with mini-batches 0.939-0.989 (seed 0: 0.975), so >= 0.92. The
margins cover other numpy and BLAS builds rounding differently, not a broken trainer: an
untrained model scores about 0.1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from splitters import ml_data
from splitters.api import DEFAULT_IMAGE, MergeError, SplitterError, TaskOutput, TaskTemplate
from splitters.ml_training import MlTraining
from splitters.registry import get_splitter
from tests.splitter_runner import LocalRun, prepare, run_locally

ML = MlTraining()
DIGITS_RUN = {"shards": 3, "rounds": 3, "seed": 0}
SOFTMAX_THRESHOLD = 0.90
MLP_THRESHOLD = 0.92


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    """Softmax regression on the built-in digits, 3 shards x 3 rounds, every task run."""
    return run_locally(ML, DIGITS_RUN, tmp_path_factory.mktemp("digits"))


def by_name(tasks: list[TaskTemplate]) -> dict[str, TaskTemplate]:
    return {task.name: task for task in tasks}


def load(path: Path) -> dict[str, NDArray[Any]]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def fresh(path: Path) -> Path:
    path.mkdir()
    return path


def metrics_of(run: LocalRun) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = json.loads(
        (run.workdir.parent / "merge" / "metrics.json").read_text()
    )
    return rounds


# --- the DAG ----------------------------------------------------------------------------


def test_the_registry_knows_ml_training() -> None:
    assert isinstance(get_splitter("ml_training"), MlTraining)


def test_rounds_form_a_dag_wired_by_task_outputs(digits: LocalRun) -> None:
    tasks = by_name(digits.tasks)
    assert sorted(tasks) == sorted(
        [f"train-{r}-{s}" for r in range(3) for s in range(3)] + [f"average-{r}" for r in range(3)]
    )
    for r in range(3):
        average = tasks[f"average-{r}"]
        assert average.depends_on == tuple(f"train-{r}-{s}" for s in range(3))
        assert average.outputs == ("model.npz", "metrics.json")
        for s in range(3):
            assert average.inputs[f"update_{s}.npz"] == TaskOutput(f"train-{r}-{s}", "update.npz")
            train = tasks[f"train-{r}-{s}"]
            assert train.outputs == ("update.npz",)
            if r == 0:
                assert train.depends_on == ()
                assert train.inputs["model.npz"] == digits.workdir / "model_0.npz"
            else:
                assert train.depends_on == (f"average-{r - 1}",)
                assert train.inputs["model.npz"] == TaskOutput(f"average-{r - 1}", "model.npz")
    # Each shard and the test split are written once and read by every round.
    for s in range(3):
        assert {tasks[f"train-{r}-{s}"].inputs["shard.npz"] for r in range(3)} == {
            digits.workdir / f"shard_{s}.npz"
        }
    assert {tasks[f"average-{r}"].inputs["test.npz"] for r in range(3)} == {
        digits.workdir / "test.npz"
    }


def test_tasks_ship_the_worker_and_run_in_the_worker_image(digits: LocalRun) -> None:
    shipped = (Path(ml_data.__file__).parent / "workers" / "ml_worker.py").read_bytes()
    for task in digits.tasks:
        assert task.image == DEFAULT_IMAGE
        assert task.command[:2] == ("python3", "/input/ml_worker.py")
        worker = task.inputs["ml_worker.py"]
        assert isinstance(worker, Path)
        assert worker.read_bytes() == shipped


def test_every_shard_agrees_on_the_model_shape(digits: LocalRun) -> None:
    model_0 = load(digits.workdir / "model_0.npz")
    assert model_0["w0"].shape == (64, 10)
    assert model_0["b0"].shape == (10,)
    test = load(digits.workdir / "test.npz")
    shards = [load(digits.workdir / f"shard_{s}.npz") for s in range(3)]
    sizes = [shard["y"].size for shard in shards]
    assert sum(sizes) + test["y"].size == 1797
    assert test["y"].size == round(1797 * 0.2)
    assert max(sizes) - min(sizes) <= 1
    for part in [*shards, test]:
        assert part["x"].shape == (part["y"].size, 64)
        assert part["y"].min() >= 0
        assert part["y"].max() <= 9
    # Standardized with the training split's statistics: mean 0 over all shards together.
    training = np.concatenate([shard["x"] for shard in shards])
    assert np.allclose(training.mean(axis=0), 0.0)
    updates = [
        load(files["update.npz"]) for name, files in digits.outputs.items() if "train" in name
    ]
    assert {(u["w0"].shape, u["b0"].shape) for u in updates} == {((64, 10), (10,))}


# --- training ---------------------------------------------------------------------------


def test_softmax_on_the_digits_reaches_the_threshold(digits: LocalRun) -> None:
    rounds = metrics_of(digits)
    assert [entry["round"] for entry in rounds] == [0, 1, 2]
    assert rounds[-1]["accuracy"] >= SOFTMAX_THRESHOLD, rounds
    assert rounds[-1]["loss"] < rounds[0]["loss"]
    assert {entry["test_samples"] for entry in rounds} == {359}
    assert {entry["train_samples"] for entry in rounds} == {1797 - 359}
    with (digits.workdir.parent / "merge" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [float(row["accuracy"]) for row in rows] == [entry["accuracy"] for entry in rounds]
    assert [float(row["loss"]) for row in rows] == [entry["loss"] for entry in rounds]


def test_the_averaged_model_is_the_sample_weighted_mean_of_the_updates(digits: LocalRun) -> None:
    for r in range(3):
        updates = [load(digits.outputs[f"train-{r}-{s}"]["update.npz"]) for s in range(3)]
        samples = [int(update["samples"]) for update in updates]
        averaged = load(digits.outputs[f"average-{r}"]["model.npz"])
        for key in ("w0", "b0"):
            expected = np.average([u[key] for u in updates], axis=0, weights=samples)
            assert np.allclose(averaged[key], expected, rtol=1e-12, atol=1e-14)
        # Unequal shards (1438 = 480 + 479 + 479) make this differ from the plain mean.
        assert len(set(samples)) == 2


def test_the_merged_model_predicts_the_reported_accuracy(digits: LocalRun) -> None:
    merge_dir = digits.workdir.parent / "merge"
    assert [path.name for path in digits.results] == ["model.npz", "metrics.json", "metrics.csv"]
    final = digits.outputs["average-2"]["model.npz"]
    assert (merge_dir / "model.npz").read_bytes() == final.read_bytes()
    model = load(merge_dir / "model.npz")
    test = load(digits.workdir / "test.npz")
    assert model["classes"].tolist() == list(range(10))
    for key in ("classes", "mean", "std"):
        assert np.array_equal(model[key], test[key]), key
    logits = test["x"] @ model["w0"] + model["b0"]
    accuracy = float((logits.argmax(axis=1) == test["y"]).mean())
    assert accuracy == metrics_of(digits)[-1]["accuracy"]


def test_an_mlp_with_mini_batches_on_the_digits_reaches_the_threshold(tmp_path: Path) -> None:
    raw = {"model": "mlp", "hidden": 32, "batch_size": 64, "epochs": 5, "shards": 2, "rounds": 2}
    run = run_locally(ML, raw, tmp_path)
    model = load(tmp_path / "merge" / "model.npz")
    assert [model[key].shape for key in ("w0", "b0", "w1", "b1")] == [
        (64, 32),
        (32,),
        (32, 10),
        (10,),
    ]
    rounds = metrics_of(run)
    assert rounds[-1]["accuracy"] >= MLP_THRESHOLD, rounds


# --- the user's data --------------------------------------------------------------------


def blobs(samples: int, seed: int = 5) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Three well-separated clusters in 4 features; labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 3
    centres = np.array([[0.0, 0.0, 5.0, 5.0], [5.0, 0.0, 0.0, 5.0], [0.0, 5.0, 5.0, 0.0]])
    return centres[labels] + rng.standard_normal((samples, 4)), labels


def test_a_csv_with_a_header_and_word_labels_in_a_named_column(tmp_path: Path) -> None:
    x, labels = blobs(150)
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    lines = ["a,b,species,c,d"]
    lines += [f"{r[0]},{r[1]},{name},{r[2]},{r[3]}" for r, name in zip(x, names, strict=True)]
    (tmp_path / "flowers.csv").write_text("\n".join(lines) + "\n")
    raw = {"data": "flowers.csv", "label_column": "species", "shards": 2, "rounds": 2}
    run = run_locally(ML, raw, tmp_path)
    model = load(tmp_path / "merge" / "model.npz")
    assert model["classes"].tolist() == ["setosa", "versicolor", "virginica"]
    assert model["w0"].shape == (4, 3)
    assert metrics_of(run)[-1]["accuracy"] >= 0.95


def test_an_npz_runs_and_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    x, labels = blobs(90)
    np.savez(tmp_path / "blobs.npz", x=x.astype(np.float32), y=np.array([3, 7, 9])[labels])
    raw = {
        "data": str(tmp_path / "blobs.npz"),
        "shards": 2,
        "rounds": 1,
        "batch_size": 8,
        "seed": 4,
    }
    first = run_locally(ML, raw, fresh(tmp_path / "one"))
    second = run_locally(ML, raw, fresh(tmp_path / "two"))
    model = load(first.results[0])
    assert model["classes"].tolist() == [3, 7, 9]
    assert metrics_of(first)[-1]["accuracy"] >= 0.95
    for one, two in zip(first.results, second.results, strict=True):
        assert one.read_bytes() == two.read_bytes(), one.name


def test_a_headerless_csv_takes_its_label_column_by_number(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("1,0.5,2\n0,1.5,3\n1,2.5,4\n")
    dataset = ml_data.load(path, "0")
    assert dataset.x.tolist() == [[0.5, 2.0], [1.5, 3.0], [2.5, 4.0]]
    assert dataset.labels.tolist() == [1, 0, 1]
    assert ml_data.load(path, None).labels.tolist() == [2, 3, 4]


# --- determinism ------------------------------------------------------------------------


def split_digests(workdir: Path, seed: int) -> dict[str, str]:
    workdir.mkdir()
    ML.split(prepare(ML, {"seed": seed, "rounds": 2}, workdir), workdir)
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in workdir.iterdir()}


def test_the_same_seed_splits_into_byte_identical_inputs(tmp_path: Path) -> None:
    first = split_digests(tmp_path / "one", seed=3)
    assert first == split_digests(tmp_path / "two", seed=3)
    other = split_digests(tmp_path / "three", seed=4)
    assert first["ml_worker.py"] == other["ml_worker.py"]
    for name in ("model_0.npz", "test.npz", "shard_0.npz"):
        assert first[name] != other[name], name


def test_training_tasks_get_their_own_seeds_from_the_seed(tmp_path: Path) -> None:
    tasks = ML.split(prepare(ML, {"seed": 3, "rounds": 2}, tmp_path), tmp_path)
    seeds = [task.command[-1] for task in tasks if task.name.startswith("train")]
    assert len(set(seeds)) == len(seeds) == 8
    again = ML.split(prepare(ML, {"seed": 3, "rounds": 2}, tmp_path), tmp_path)
    assert [task.command for task in again] == [task.command for task in tasks]


# --- estimate ---------------------------------------------------------------------------


def test_the_estimate_matches_the_split_and_writes_nothing(tmp_path: Path) -> None:
    params = prepare(ML, {"shards": 3, "rounds": 4}, tmp_path)
    estimate = ML.estimate(params)
    assert list(tmp_path.iterdir()) == []
    assert estimate.task_count == 4 * (3 + 1)
    assert estimate.resources.memory_mb == 128
    assert estimate.resources.cpus == 1.0
    assert 1.0 < estimate.seconds_per_task < 60.0
    tasks = ML.split(params, tmp_path)
    assert len(tasks) == estimate.task_count
    assert {task.resources for task in tasks} == {estimate.resources}


def test_memory_grows_with_the_model_and_a_given_one_is_used(tmp_path: Path) -> None:
    big = ML.estimate(prepare(ML, {"model": "mlp", "hidden": 20000, "shards": 1}, tmp_path))
    assert big.resources.memory_mb > 1000  # 1438 x 20000 activations alone are 230 MB
    given = ML.estimate(prepare(ML, {"memory_mb": 300, "timeout_seconds": 30}, tmp_path))
    assert given.resources.memory_mb == 300


# --- bad parameters ---------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    x, labels = blobs(10)
    rows = [
        ",".join(f"{v}" for v in row) + f",{label}" for row, label in zip(x, labels, strict=True)
    ]
    (tmp_path / "ten.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "words.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    (tmp_path / "nan.csv").write_text("a,b,label\n1,2,x\n3,nan,y\n")
    (tmp_path / "ragged.csv").write_text("a,b,label\n1,2,x\n3,y\n")
    (tmp_path / "one_class.csv").write_text("a,label\n1,x\n2,x\n3,x\n")
    (tmp_path / "notes.txt").write_text("1,2,3\n")
    np.savez(tmp_path / "no_y.npz", x=np.ones((4, 2)))
    np.savez(tmp_path / "objects.npz", x=np.ones((2, 2)), y=np.array([{}, []], dtype=object))
    np.savez(tmp_path / "short_y.npz", x=np.ones((4, 2)), y=np.array([0, 1]))
    return tmp_path


BAD_PARAMETERS = [
    pytest.param({"data": "ten.csv", "shards": 9}, "shards", id="shards>training-samples"),
    pytest.param({"model": "svm"}, "model", id="unknown-model"),
    pytest.param({"data": "words.csv"}, "data", id="non-numeric-cell"),
    pytest.param({"data": "nan.csv"}, "data", id="nan-cell"),
    pytest.param({"data": "ragged.csv"}, "data", id="ragged-row"),
    pytest.param({"data": "ten.csv", "label_column": "kind"}, "label_column", id="no-such-label"),
    pytest.param({"data": "ten.csv", "label_column": "7"}, "label_column", id="label-out-of-range"),
    pytest.param({"data": "one_class.csv"}, "data", id="one-class"),
    pytest.param(
        {"data": "one_class.csv", "label_column": "label"}, "label_column", id="one-class-named"
    ),
    pytest.param({"data": "notes.txt"}, "data", id="not-csv-or-npz"),
    pytest.param({"data": "missing.csv"}, "data", id="missing-file"),
    pytest.param({"data": "no_y.npz"}, "data", id="npz-without-y"),
    pytest.param({"data": "objects.npz"}, "data", id="npz-object-arrays"),
    pytest.param({"data": "short_y.npz"}, "data", id="npz-y-length"),
    pytest.param({"data": "no_y.npz", "label_column": "y"}, "label_column", id="label-for-npz"),
    pytest.param({"label_column": "label"}, "label_column", id="label-for-builtin"),
    pytest.param({"test_fraction": 0.0}, "test_fraction", id="nothing-held-out"),
    pytest.param({"test_fraction": 1.0}, "test_fraction", id="nothing-to-train"),
    pytest.param({"learning_rate": 0.0}, "learning_rate", id="learning-rate-zero"),
    pytest.param({"epochs": 0}, "epochs", id="epochs-zero"),
    pytest.param({"rounds": 0}, "rounds", id="rounds-zero"),
    pytest.param({"shards": 0}, "shards", id="shards-zero"),
    pytest.param({"model": "mlp", "hidden": 0}, "hidden", id="hidden-zero"),
    pytest.param({"model": "softmax", "hidden": 8}, "hidden", id="hidden-for-softmax"),
    pytest.param({"batch_size": 0}, "batch_size", id="batch-size-zero"),
    pytest.param({"seed": -1}, "seed", id="seed-negative"),
    pytest.param({"memory_mb": 100}, "memory_mb", id="memory-below-128"),
    pytest.param(
        {"model": "mlp", "hidden": 20000, "memory_mb": 200}, "memory_mb", id="memory-below-data"
    ),
]


@pytest.mark.parametrize(("raw", "key"), BAD_PARAMETERS)
def test_bad_parameters_raise_splitter_error_naming_the_key(
    raw: dict[str, Any], key: str, bad_files: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SplitterError) as caught:
        ML.split(prepare(ML, raw, bad_files), workdir)
    assert caught.value.key == key, caught.value
    assert list(workdir.iterdir()) == [], "nothing is written for a workflow that cannot run"
    with pytest.raises(SplitterError) as estimated:
        ML.estimate(prepare(ML, raw, bad_files))
    assert estimated.value.key == key


def test_a_bad_cell_is_named_by_line_and_column(bad_files: Path) -> None:
    with pytest.raises(SplitterError, match=r"line 3, b: 'oops' is not a finite number"):
        ML.estimate(prepare(ML, {"data": "words.csv"}, bad_files))


# --- the worker and merge ---------------------------------------------------------------


def test_a_diverging_training_task_fails_and_says_why(digits: LocalRun, tmp_path: Path) -> None:
    worker = digits.workdir / "ml_worker.py"
    argv = [sys.executable, str(worker), "train", str(digits.workdir / "model_0.npz")]
    argv += [str(digits.workdir / "shard_0.npz"), str(tmp_path / "update.npz")]
    argv += ["--epochs", "3", "--learning-rate", "1e308"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "training diverged" in result.stderr
    assert "learning_rate" in result.stderr


def test_merge_without_every_round_names_the_missing_one(digits: LocalRun, tmp_path: Path) -> None:
    outputs = {name: files for name, files in digits.outputs.items() if name != "average-1"}
    with pytest.raises(MergeError, match="average-1"):
        ML.merge(outputs, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_merge_refuses_a_task_of_another_workflow(digits: LocalRun, tmp_path: Path) -> None:
    outputs = {**digits.outputs, "block-0-0": {"c_block.npy": tmp_path / "c.npy"}}
    with pytest.raises(MergeError, match="block-0-0"):
        ML.merge(outputs, tmp_path)


def test_merge_refuses_metrics_of_the_wrong_round(digits: LocalRun, tmp_path: Path) -> None:
    wrong = tmp_path / "metrics.json"
    wrong.write_text(digits.outputs["average-0"]["metrics.json"].read_text())
    outputs = {
        **digits.outputs,
        "average-2": {**digits.outputs["average-2"], "metrics.json": wrong},
    }
    with pytest.raises(MergeError, match="average-2"):
        ML.merge(outputs, fresh(tmp_path / "merge"))
