"""The ml_training workflow's data: reading it, holding out a test split, standardizing,
and the initial model, all on the manager before any task runs.

Everything a shard task must agree on is fixed here, from the whole dataset: the feature
count, the class list (sorted; shards see class *indices*, so a shard that happens to lack a
class still has its output unit), the standardization (mean and std of the training split,
applied to every sample before sharding) and the initial model (drawn from `seed`).

The data is a CSV file (`.csv` or `.csv.gz`: numeric features and one label column) or an
`.npz` file with arrays `x` (samples x features) and `y` (labels); without one, the UCI
handwritten digits that ship in splitters/data (see its README.md). Labels may be numbers
or words; every feature must be a finite number.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from splitters.api import SplitterError
from splitters.workers import ml_worker

Matrix = NDArray[np.float64]
BUILTIN_DATA = "digits.csv.gz"
BUILTIN_NAME = "the built-in digits (splitters/data/digits.csv.gz)"
NUMERIC_KINDS = "biuf"
LABEL_KINDS = "biufU"
# Streams drawn from `seed`, one per purpose, so that none repeats another's numbers.
SHUFFLE_STREAM, INIT_STREAM, TASK_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Dataset:
    """Samples as read: features and one label each."""

    x: Matrix
    labels: NDArray[Any]
    source: str  # for messages
    class_key: str  # the parameter to fix when the labels are unusable


@dataclass(frozen=True)
class Prepared:
    """The dataset shuffled, split, standardized and with labels as class indices."""

    train_x: Matrix
    train_y: NDArray[np.int64]
    test_x: Matrix
    test_y: NDArray[np.int64]
    classes: NDArray[Any]  # sorted; class index i is classes[i]
    mean: Matrix  # per feature, of the training split
    std: Matrix  # per feature, of the training split (1 where a feature is constant)

    def description(self) -> dict[str, NDArray[Any]]:
        """What a user of the model needs: the class names and the standardization."""
        return {"classes": self.classes, "mean": self.mean, "std": self.std}


# --- reading ----------------------------------------------------------------------------


def load(data: Path | None, label_column: str | None) -> Dataset:
    """The `data` file, or the built-in digits; SplitterError naming the key to fix."""
    if data is None:
        if label_column is not None:
            raise SplitterError("label_column", "applies only to a CSV file given as data")
        return _builtin()
    name = data.name.lower()
    if name.endswith(".npz"):
        if label_column is not None:
            raise SplitterError("label_column", "applies only to CSV data; an .npz has y")
        return _read_npz(data)
    if name.endswith((".csv", ".csv.gz")):
        try:
            raw = data.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8-sig")
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as error:
            raise SplitterError("data", f"cannot read {data}: {error}") from error
        return _parse_csv(text, label_column, str(data))
    raise SplitterError("data", f"{data} is neither a .csv (or .csv.gz) nor an .npz file")


@functools.cache
def _builtin() -> Dataset:
    """The built-in digits, read once per process (estimate and split both ask)."""
    packed = resources.files("splitters").joinpath("data", BUILTIN_DATA).read_bytes()
    dataset = _parse_csv(gzip.decompress(packed).decode("ascii"), None, BUILTIN_NAME)
    dataset.x.setflags(write=False)  # shared by every caller
    dataset.labels.setflags(write=False)
    return dataset


def _read_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if name in ("x", "y")}
            names = sorted(archive.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # Object arrays need pickle, which is never used: they land here too.
        raise SplitterError("data", f"{path} is not a readable .npz file: {error}") from error
    if "x" not in arrays or "y" not in arrays:
        raise SplitterError("data", f"{path} needs arrays x and y; it has {', '.join(names)}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or x.dtype.kind not in NUMERIC_KINDS:
        raise SplitterError(
            "data", f"{path}: x must be a 2-D numeric array, not {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in LABEL_KINDS or y.shape[0] != x.shape[0]:
        raise SplitterError(
            "data",
            f"{path}: y must hold one number or string per row of x {x.shape}, not {y.shape}",
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise SplitterError("data", f"{path}: y holds labels that are not finite numbers")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise SplitterError(
            "data", f"{path}: x[{row}, {col}] is {x[row, col]}, not a finite number"
        )
    return _checked(Dataset(x, y, str(path), "data"))


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _label_position(
    first: Sequence[str], label_column: str | None, source: str
) -> tuple[int, bool]:
    """Where the label column is, and whether the first row is a header.

    The first row is a header when any of its cells outside the label column is not a
    number (so labels may be words in a file without a header). `label_column` is a header
    name, else a column number.
    """
    width = len(first)
    if label_column is None:
        position = width - 1
    elif label_column in first and not all(_is_number(cell) for cell in first):
        return first.index(label_column), True
    else:
        try:
            position = int(label_column)
        except ValueError:
            columns = ", ".join(repr(cell) for cell in first)
            raise SplitterError(
                "label_column",
                f"{source} has no column named {label_column!r} (its first row: {columns});"
                " give a header name or a column number (0 the first, -1 the last)",
            ) from None
        if not -width <= position < width:
            raise SplitterError(
                "label_column", f"column {position} does not exist: {source} has {width} columns"
            )
        position %= width
    header = any(not _is_number(cell) for index, cell in enumerate(first) if index != position)
    return position, header


def _parse_csv(text: str, label_column: str | None, source: str) -> Dataset:
    reader = csv.reader(io.StringIO(text))
    # (line number, stripped cells) of each row that is not blank
    rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader if row]
    if not rows:
        raise SplitterError("data", f"{source} is empty")
    width = len(rows[0][1])
    if width < 2:
        raise SplitterError("data", f"{source} needs at least one feature and a label column")
    position, header = _label_position(rows[0][1], label_column, source)
    names = rows[0][1] if header else [f"column {index}" for index in range(width)]
    body = rows[1:] if header else rows
    if not body:
        raise SplitterError("data", f"{source} has a header but no samples")
    for line, row in body:
        if len(row) != width:
            raise SplitterError("data", f"{source} line {line} has {len(row)} cells, not {width}")
        if not row[position]:
            raise SplitterError("data", f"{source} line {line} has no label ({names[position]})")
    features = [row[:position] + row[position + 1 :] for _, row in body]
    try:
        x = np.array(features, dtype=np.float64)  # numpy parses the strings, quickly
    except ValueError:
        x = None
    if x is None or not np.isfinite(x).all():
        _raise_at_bad_cell(body, position, names, source)
    assert x is not None
    class_key = "data" if label_column is None else "label_column"
    return _checked(Dataset(x, _label_array([row[position] for _, row in body]), source, class_key))


def _raise_at_bad_cell(
    body: Sequence[tuple[int, list[str]]], position: int, names: Sequence[str], source: str
) -> None:
    """SplitterError naming the first feature cell that is not a finite number."""
    for line, row in body:
        for index, cell in enumerate(row):
            if index != position and not _is_number(cell):
                raise SplitterError(
                    "data",
                    f"{source} line {line}, {names[index]}: {cell!r} is not a finite number"
                    " (every column but the label must be numeric)",
                )
    raise SplitterError("data", f"{source} holds a feature that is not a finite number")


def _label_array(labels: list[str]) -> NDArray[Any]:
    """Labels as integers when they all are, numbers when they all are, else strings."""
    if all(_is_number(label) for label in labels):
        numbers = np.array([float(label) for label in labels])
        if np.all(numbers == np.round(numbers)):
            return numbers.astype(np.int64)
        return numbers
    return np.array(labels)


def _checked(dataset: Dataset) -> Dataset:
    if dataset.x.shape[0] == 0 or dataset.x.shape[1] == 0:
        raise SplitterError("data", f"{dataset.source} holds no samples or no features")
    classes = np.unique(dataset.labels)
    if classes.size < 2:
        raise SplitterError(
            dataset.class_key,
            f"{dataset.source} has {classes.size} class ({classes[0]!r}):"
            " classification needs at least 2 (is the label column the right one?)",
        )
    return dataset


# --- preparing --------------------------------------------------------------------------


def stream(seed: int, *key: int) -> np.random.Generator:
    """The random numbers of one purpose (and round and shard) under `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def task_seed(seed: int, round_index: int, shard: int) -> int:
    """The seed a training task shuffles its mini-batches with."""
    sequence = np.random.SeedSequence(seed, spawn_key=(TASK_STREAM, round_index, shard))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def held_out_count(samples: int, test_fraction: float) -> int:
    return round(samples * test_fraction)


def check_split(samples: int, test_fraction: float, shards: int) -> tuple[int, int]:
    """Training and test sample counts; SplitterError when either side cannot be used."""
    held_out = held_out_count(samples, test_fraction)
    training = samples - held_out
    if held_out < 1:
        raise SplitterError(
            "test_fraction",
            f"{test_fraction:g} of {samples} samples holds none out for evaluation;"
            f" give at least {0.5 / samples:.3g}",
        )
    if training < 1:
        raise SplitterError(
            "test_fraction", f"{test_fraction:g} of {samples} samples leaves none to train on"
        )
    if shards > training:
        raise SplitterError(
            "shards",
            f"{shards} shards need at least {shards} training samples, but there are"
            f" {training} ({samples} less the {held_out} held out by test_fraction)",
        )
    return training, held_out


def prepare(dataset: Dataset, test_fraction: float, seed: int) -> Prepared:
    """Shuffles with `seed`, holds out the test split, standardizes with the training
    split's statistics, and turns labels into class indices."""
    samples = dataset.x.shape[0]
    held_out = held_out_count(samples, test_fraction)
    order = stream(seed, SHUFFLE_STREAM).permutation(samples)
    classes, indices = np.unique(dataset.labels, return_inverse=True)
    indices = indices.reshape(-1).astype(np.int64)  # numpy 2.0-2.1 kept the input's shape
    test, train = order[:held_out], order[held_out:]
    mean = dataset.x[train].mean(axis=0)
    std = dataset.x[train].std(axis=0)
    std[std == 0.0] = 1.0  # a constant feature stays 0 rather than dividing by zero
    return Prepared(
        train_x=(dataset.x[train] - mean) / std,
        train_y=indices[train],
        test_x=(dataset.x[test] - mean) / std,
        test_y=indices[test],
        classes=classes,
        mean=mean,
        std=std,
    )


def layer_sizes(features: int, classes: int, hidden: int | None) -> list[int]:
    """Units per layer, input first: [features, classes] or [features, hidden, classes]."""
    return [features, classes] if hidden is None else [features, hidden, classes]


def initial_model(sizes: Sequence[int], seed: int) -> dict[str, Matrix]:
    """Layers w0, b0, ...: He-scaled normal weights from `seed` (small for a lone softmax
    layer), zero biases."""
    rng = stream(seed, INIT_STREAM)
    model: dict[str, Matrix] = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        scale = 0.01 if len(sizes) == 2 else math.sqrt(2.0 / fan_in)
        model[f"w{index}"] = rng.normal(0.0, scale, (fan_in, fan_out))
        model[f"b{index}"] = np.zeros(fan_out)
    return model


def save_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> Path:
    """The worker's .npz writer (the same arrays always give the same bytes, so a
    re-submitted workflow's inputs dedupe by content hash); returns `path`."""
    ml_worker.save_npz(path, arrays)
    return path
