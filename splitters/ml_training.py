"""Data-parallel training with federated averaging: a small numpy classifier trained on
`shards` slices of the data for `rounds` rounds, as a DAG of tasks.

Round r has one task `train-r-s` per shard s: it reads the worker script, its shard and the
round's starting model, runs `epochs` of gradient descent on the shard, and writes the
trained layers with its sample count (update.npz). Then `average-r`, depending on all of
round r's shard tasks and reading their updates as TaskOutputs, writes their sample-weighted
mean (model.npz: FedAvg) and its accuracy and loss on the held-out test split (metrics.json).
Round r+1's shard tasks start from that model: they depend on `average-r` and read its
model.npz. Round 0 starts from the model the splitter writes from `seed`.

    train-0-0 ─┐                 train-1-0 ─┐
    train-0-1 ─┼─> average-0 ──> train-1-1 ─┼─> average-1 ──> ...
    train-0-2 ─┘                 train-1-2 ─┘

Every shard agrees on the model's shape because the splitter fixes it from the whole
dataset (feature count and sorted class list; see splitters/ml_data.py) and standardizes
every sample with the training split's statistics before sharding. The model is softmax
regression (`model = "softmax"`) or an MLP with one ReLU layer of `hidden` units
(`model = "mlp"`); both run in splitters/workers/ml_worker.py, which travels as a task input
and runs in the generic worker image. Shards are shipped once and read by every round.

Merge writes model.npz (the last round's model: layers w0, b0[, w1, b1], plus classes, mean
and std: predict with argmax(layers((x - mean) / std)) and look the index up in classes),
and metrics.json (a list, one object per round) and metrics.csv with each round's test
accuracy and loss. It needs nothing from split's folder (the manager may have restarted).

Two volunteers' copies of an update, a model or metrics agree when their numbers are equal
within rounding (see `MlTraining.equivalent`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitters import blocks, ml_data
from splitters.api import (
    Estimate,
    MergeError,
    Parameter,
    ResourceRequest,
    SplitterError,
    TaskOutput,
    TaskTemplate,
    same_bytes,
)
from splitters.equivalence import EXACT, Tolerance, close_json, close_npz
from splitters.workers.ml_worker import LAYER_KEY

WORKER = "ml_worker.py"
MODEL = "model.npz"
SHARD = "shard.npz"
TEST = "test.npz"
UPDATE = "update.npz"
METRICS = "metrics.json"
METRICS_CSV = "metrics.csv"
METRIC_FIELDS = (
    "round",
    "accuracy",
    "loss",
    "train_loss",
    "train_samples",
    "test_samples",
    "shards",
)
MODELS = ("softmax", "mlp")
_TASK_NAME = re.compile(r"(?:train-(\d+)-(\d+)|average-(\d+))")
# Rough guesses for the estimate, slow on purpose (a busy volunteer, reference BLAS): a
# dense layer costs 2 flops per weight per sample forward and 4 more backward.
FLOPS_PER_SECOND = 1e9
STARTUP_SECONDS = 2.0  # python3 and numpy starting, the files loading
# numpy's temporaries (logits, softmax, gradients) ride on top of the data.
MEMORY_HEADROOM = 3.0
MIN_MEMORY_MB = 128
FLOAT_BYTES = 8

# Units in an mlp's hidden layer unless the workflow says.
DEFAULT_HIDDEN = 32

# How far two volunteers' copies of a trained value may be apart: see MlTraining.equivalent.
WEIGHT_TOLERANCE = Tolerance(rtol=1e-4, scaled_atol=1e-6)
METRIC_TOLERANCE = Tolerance(rtol=1e-4, atol=1e-12)
# Members of update.npz and model.npz that training computes; the others (samples, and
# classes, mean and std copied from the inputs) must be equal.
TRAINED_MEMBERS = ("train_loss",)


def train_name(round_index: int, shard: int) -> str:
    return f"train-{round_index}-{shard}"


def average_name(round_index: int) -> str:
    return f"average-{round_index}"


# --- checking and sizing ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the parameters make of the data: sizes, before anything is written."""

    dataset: ml_data.Dataset
    training: int  # samples
    held_out: int
    sizes: list[int]  # units per layer, input first

    @property
    def weights(self) -> int:
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(self.sizes))

    @property
    def activations(self) -> int:
        """Units per sample past the input: hidden and output layers."""
        return sum(self.sizes[1:])


def _plan(params: Mapping[str, Any]) -> Plan:
    """Reads and checks the data against the parameters; SplitterError naming the key."""
    if not params["learning_rate"] > 0:
        raise SplitterError("learning_rate", f"must be positive, got {params['learning_rate']}")
    dataset = ml_data.load(params["data"], params["label_column"])
    samples, features = dataset.x.shape
    training, held_out = ml_data.check_split(samples, params["test_fraction"], params["shards"])
    hidden = params["hidden"]
    if params["model"] == "mlp":
        hidden = hidden or DEFAULT_HIDDEN
    elif hidden is not None:
        raise SplitterError(
            "hidden", f'only model = "mlp" has a hidden layer, not model = "{params["model"]}"'
        )
    classes = int(np.unique(dataset.labels).size)
    return Plan(dataset, training, held_out, ml_data.layer_sizes(features, classes, hidden))


def _task_bytes(plan: Plan, params: Mapping[str, Any]) -> int:
    """Data in memory of the largest task: a shard or the test split, models and activations."""
    features = plan.sizes[0]
    shard_count: int = params["shards"]
    shard = blocks.largest(plan.training, params["shards"])
    batch: int = shard if params["batch_size"] is None else min(shard, params["batch_size"])
    train = (
        shard * (features + 1)  # the shard
        + 3 * plan.weights  # the model, its gradient, the update
        + 2 * batch * plan.activations  # activations and their gradients
        + shard * plan.activations  # the closing loss on the whole shard
    )
    average = (
        plan.held_out * (features + 1)  # the test split
        + (shard_count + 2) * plan.weights  # every update, stacked, and the mean
        + plan.held_out * plan.activations
    )
    return FLOAT_BYTES * max(train, average)


def _resources(plan: Plan, params: Mapping[str, Any]) -> ResourceRequest:
    data_bytes = _task_bytes(plan, params)
    memory_mb = params["memory_mb"]
    if memory_mb is None:
        needed = math.ceil(data_bytes * MEMORY_HEADROOM / blocks.MIB) + blocks.WORKER_OVERHEAD_MB
        memory_mb = max(MIN_MEMORY_MB, needed)
    elif memory_mb < (floor := math.ceil(data_bytes / blocks.MIB) + blocks.WORKER_OVERHEAD_MB):
        raise SplitterError(
            "memory_mb",
            f"{memory_mb} MiB cannot hold a task's {floor - blocks.WORKER_OVERHEAD_MB} MiB of"
            f" data and the worker; give at least {floor}",
        )
    output_mb = math.ceil(FLOAT_BYTES * plan.weights * 2 / blocks.MIB)
    return ResourceRequest(cpus=1.0, memory_mb=memory_mb, disk_mb=output_mb + 1)


def _seconds(plan: Plan, params: Mapping[str, Any]) -> float:
    """The slower of a training and an averaging task."""
    shard = blocks.largest(plan.training, params["shards"])
    per_sample = 2 * plan.weights
    epochs: int = params["epochs"]
    train = (3 * epochs + 1) * shard * per_sample
    shards: int = params["shards"]
    average = plan.held_out * per_sample + shards * plan.weights
    return STARTUP_SECONDS + max(train, average) / FLOPS_PER_SECOND


# --- the input files --------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The files split writes, each shared by every task that reads it."""

    worker: Path
    model_0: Path  # round 0's starting model
    test: Path  # the held-out split, for every averaging task
    shards: list[Path]  # one per training task of a round, the same every round


def _write_inputs(plan: Plan, params: Mapping[str, Any], workdir: Path) -> Inputs:
    seed: int = params["seed"]
    data = ml_data.prepare(plan.dataset, params["test_fraction"], seed)
    described = data.description()  # classes, mean, std: travel with every model
    bounds = blocks.bounds(plan.training, params["shards"])
    return Inputs(
        worker=blocks.ship_worker(workdir, WORKER),
        model_0=ml_data.save_npz(
            workdir / "model_0.npz", {**ml_data.initial_model(plan.sizes, seed), **described}
        ),
        test=ml_data.save_npz(workdir / TEST, {"x": data.test_x, "y": data.test_y, **described}),
        shards=[
            ml_data.save_npz(
                workdir / f"shard_{index}.npz",
                {"x": data.train_x[start:stop], "y": data.train_y[start:stop]},
            )
            for index, (start, stop) in enumerate(bounds)
        ],
    )


# --- the splitter -----------------------------------------------------------------------


class MlTraining:
    name = "ml_training"
    description = (
        "data-parallel training of a small numpy classifier (softmax or MLP) on shards,"
        " federated averaging after each round"
    )
    # `node init`: the built-in digits, 4 shards x 5 rounds of softmax regression; 25 tasks
    # of well under a second each, about 0.95 test accuracy after the last round.
    example: Mapping[str, Any] = {
        "model": "softmax",
        "shards": 4,
        "rounds": 5,
        "epochs": 10,
        "learning_rate": 0.5,
        "seed": 0,
    }
    parameters: tuple[Parameter, ...] = (
        Parameter(
            "data",
            Path,
            "training data: a .csv (or .csv.gz) of numeric features and a label column, or an"
            " .npz with arrays x (samples x features) and y (labels); without it, the built-in"
            " UCI handwritten digits (1797 8x8 images, 10 classes)",
        ),
        Parameter(
            "label_column",
            str,
            "CSV only: the label column, by header name or as a number in quotes"
            ' ("0" the first, "-1" the last); default: the last column',
        ),
        Parameter(
            "test_fraction",
            float,
            "share of the samples held out to evaluate the model after every round",
            default=0.2,
            minimum=0.0,
            maximum=1.0,
        ),
        Parameter("model", str, "the classifier", default="softmax", choices=MODELS),
        Parameter(
            "hidden",
            int,
            f"mlp only: units in the hidden layer (default {DEFAULT_HIDDEN})",
            minimum=1,
        ),
        Parameter(
            "shards", int, "training tasks per round, each on its slice", default=4, minimum=1
        ),
        Parameter("rounds", int, "rounds of training then averaging", default=5, minimum=1),
        Parameter("epochs", int, "passes over its shard per task and round", default=10, minimum=1),
        Parameter("learning_rate", float, "gradient descent step size", default=0.5),
        Parameter(
            "batch_size",
            int,
            "samples per gradient step (default: the whole shard, full-batch descent)",
            minimum=1,
        ),
        Parameter(
            "seed", int, "random seed: test split, shards, initial model", default=0, minimum=0
        ),
        Parameter(
            "memory_mb", int, "memory per task (default: from the data size)", minimum=MIN_MEMORY_MB
        ),
        Parameter("timeout_seconds", int, "wall-clock limit per task", default=600, minimum=1),
    )

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return self._estimate(params, _plan(params))

    def _estimate(self, params: Mapping[str, Any], plan: Plan) -> Estimate:
        return Estimate(
            task_count=params["rounds"] * (params["shards"] + 1),
            resources=_resources(plan, params),
            seconds_per_task=_seconds(plan, params),
        )

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        plan = _plan(params)
        estimate = self._estimate(params, plan)  # every check before anything is written
        files = _write_inputs(plan, params, workdir)
        tasks: list[TaskTemplate] = []
        for round_index in range(params["rounds"]):
            previous = average_name(round_index - 1)
            model = files.model_0 if round_index == 0 else TaskOutput(previous, MODEL)
            depends = () if round_index == 0 else (previous,)
            for shard_index, shard in enumerate(files.shards):
                tasks.append(
                    TaskTemplate(
                        name=train_name(round_index, shard_index),
                        command=self._train_command(params, round_index, shard_index),
                        inputs={WORKER: files.worker, MODEL: model, SHARD: shard},
                        outputs=(UPDATE,),
                        resources=estimate.resources,
                        timeout_seconds=params["timeout_seconds"],
                        depends_on=depends,
                    )
                )
            tasks.append(self._average_task(params, round_index, files, estimate))
        return tasks

    def _train_command(
        self, params: Mapping[str, Any], round_index: int, shard: int
    ) -> tuple[str, ...]:
        return (
            "python3",
            f"/input/{WORKER}",
            "train",
            f"/input/{MODEL}",
            f"/input/{SHARD}",
            f"/output/{UPDATE}",
            "--epochs",
            str(params["epochs"]),
            "--learning-rate",
            repr(float(params["learning_rate"])),
            "--batch-size",
            str(params["batch_size"] or 0),
            "--seed",
            str(ml_data.task_seed(params["seed"], round_index, shard)),
        )

    def _average_task(
        self,
        params: Mapping[str, Any],
        round_index: int,
        files: Inputs,
        estimate: Estimate,
    ) -> TaskTemplate:
        shards = range(params["shards"])
        updates = {
            f"update_{s}.npz": TaskOutput(train_name(round_index, s), UPDATE) for s in shards
        }
        return TaskTemplate(
            name=average_name(round_index),
            command=(
                "python3",
                f"/input/{WORKER}",
                "average",
                "--round",
                str(round_index),
                f"/input/{TEST}",
                f"/output/{MODEL}",
                f"/output/{METRICS}",
                *(f"/input/{name}" for name in updates),
            ),
            inputs={WORKER: files.worker, TEST: files.test, **updates},
            outputs=(MODEL, METRICS),
            resources=estimate.resources,
            timeout_seconds=params["timeout_seconds"],
            depends_on=tuple(train_name(round_index, s) for s in shards),
        )

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies of update.npz or model.npz agree when they hold the same arrays, of
        one shape and dtype, the trained ones (layers w0, b0, ... and train_loss) within
        WEIGHT_TOLERANCE and the rest (samples, and classes, mean and std, copied from the
        inputs) equal; two copies of metrics.json when they hold the same keys and
        integers, and floats (accuracy, loss, train_loss) within METRIC_TOLERANCE.

        Why they differ: the worker's arithmetic is matrix products (BLAS, which adds them
        up in an order of its own on each CPU) and exp and log (whose last bit depends on
        numpy's SIMD paths), repeated for every step of every epoch; a volunteer without
        Docker runs its host's numpy, another version. Each step's rounding is ulps;
        gradient descent on this loss damps rather than amplifies it: weights trained from
        models 1 ulp apart (MLP and softmax on the digits, up to 1000 epochs, full and
        mini-batch) ended about 1e-15 of the layer's largest weight apart, 3e-13 at most
        relative. And .npz bytes differ anyway with another numpy's .npy headers.

        Tolerance: a weight within 1e-4 relative, or 1e-6 of its layer's largest |weight|
        (the smaller copy's: a forged huge weight does not widen it), so small weights,
        whose relative error is larger, are measured against the layer. That is about 1e9
        times what rounding was seen to do, room for longer and less stable training,
        and still a change that no prediction but a near tie notices: agreeing copies are
        one model. A corrupted byte fails the member's CRC, and with the CRC rewritten is
        caught unless it hit the lowest bits of a weight, where it changes nothing; a
        forged update, or weights of another data set, seed or learning rate, are
        different models. Metrics: floats within 1e-4 relative (1e-12 absolute for a loss
        of about 0), integers and the JSON's keys exact. Accuracy counts test samples
        whose prediction is right, so rounding would change it only by a test sample
        whose two best classes tie to 1e-13: that is taken as a disagreement.
        """
        if output in (UPDATE, MODEL):
            return close_npz(a, b, _member_tolerance)
        if output == METRICS:
            return close_json(a, b, METRIC_TOLERANCE)
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        averages = _average_outputs(outputs)
        rounds = [_read_metrics(round_index, files) for round_index, files in enumerate(averages)]
        final = averages[-1]
        _check_model(len(averages) - 1, final[MODEL])
        model = workdir / MODEL
        shutil.copyfile(final[MODEL], model)
        metrics_json = workdir / METRICS
        metrics_json.write_text(json.dumps(rounds, indent=2) + "\n", encoding="utf-8")
        metrics_csv = workdir / METRICS_CSV
        metrics_csv.write_text(_csv(rounds), encoding="utf-8")
        return [model, metrics_json, metrics_csv]


def _member_tolerance(member: str, dtype: np.dtype[Any]) -> Tolerance:
    if LAYER_KEY.fullmatch(member) or member in TRAINED_MEMBERS:
        return WEIGHT_TOLERANCE
    return EXACT


# --- merge ------------------------------------------------------------------------------


def _average_outputs(outputs: Mapping[str, Mapping[str, Path]]) -> list[Mapping[str, Path]]:
    """The averaging tasks' outputs, by round; MergeError unless every round is there."""
    found: dict[int, Mapping[str, Path]] = {}
    for task, files in outputs.items():
        match = _TASK_NAME.fullmatch(task)
        if match is None:
            raise MergeError(f"{task} is not a task of an ml_training workflow")
        if match[3] is None:
            continue  # a training task: its update lives on in the round's average
        for name in (MODEL, METRICS):
            if name not in files:
                raise MergeError(f"{task} produced no {name}")
        found[int(match[3])] = files
    if not found:
        raise MergeError("no averaging task's outputs to merge")
    missing = [average_name(r) for r in range(max(found) + 1) if r not in found]
    if missing:
        raise MergeError(f"missing the output of {', '.join(missing)}")
    return [found[r] for r in range(len(found))]


def _read_metrics(round_index: int, files: Mapping[str, Path]) -> dict[str, Any]:
    task = average_name(round_index)
    try:
        metrics = json.loads(files[METRICS].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MergeError(f"{task}: {METRICS} is not readable JSON: {error}") from error
    if not isinstance(metrics, dict):
        raise MergeError(f"{task}: {METRICS} is not a JSON object")
    missing = [field for field in METRIC_FIELDS if field not in metrics]
    if missing:
        raise MergeError(f"{task}: {METRICS} lacks {', '.join(missing)}")
    if metrics["round"] != round_index:
        raise MergeError(f"{task}: {METRICS} is of round {metrics['round']!r}")
    return {field: metrics[field] for field in METRIC_FIELDS}


def _check_model(round_index: int, path: Path) -> None:
    task = average_name(round_index)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MergeError(f"{task}: {MODEL} is not a readable .npz file: {error}") from error
    if not {"w0", "b0", "classes", "mean", "std"} <= names:
        raise MergeError(f"{task}: {MODEL} lacks the layers or the data description")


def _csv(rounds: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rounds)
    return text.getvalue()
