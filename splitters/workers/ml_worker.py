"""One task of the ml_training workflow: train on a shard, or average a round's updates.

Usage:
  python3 ml_worker.py train MODEL.npz SHARD.npz UPDATE.npz
      --epochs E --learning-rate LR [--batch-size B] [--seed N]
  python3 ml_worker.py average --round R TEST.npz MODEL.npz METRICS.json UPDATE.npz...

A model is a stack of dense layers, arrays w0, b0, w1, b1, ... in an .npz file: ReLU between
layers, softmax on the last one. One layer is multinomial logistic regression ("softmax"),
two are an MLP with one hidden layer. Other arrays in a model file (classes, mean, std: what
the splitter records for whoever uses the final model) are not the model's and are ignored.

`train` runs `epochs` of gradient descent on the shard's x (standardized features) and y
(class indices), full-batch or in mini-batches shuffled by `seed`, starting from MODEL, and
writes the trained layers plus `samples` (the shard's size, the weight of this update in the
average) and `train_loss` (cross-entropy on the shard after training) to UPDATE.

`average` is federated averaging: the sample-weighted mean of the updates' layers. It
evaluates that model on the held-out TEST split (x, y, and the classes, mean and std it
copies into the model) and writes the model and METRICS (round, accuracy, loss, ...).

Self-contained on purpose: it travels as the task input /input/ml_worker.py and runs in
vcnode/worker:1 (Debian's python3 and numpy 1.24), so it imports nothing from vcnode and no
numpy 2 API. Arrays are never pickled. Progress (0-100) goes to .progress beside the first
output, i.e. /output/.progress.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# The task asks for one CPU: a BLAS spawning a thread per host core would only contend
# (and, under the process runtime, reserve address space per thread). Set before numpy loads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

Matrix = NDArray[np.float64]
Layers = list[tuple[Matrix, Matrix]]  # (weights, bias) per layer, input to output
LAYER_KEY = re.compile(r"([wb])(\d+)")
# Arrays of the held-out split that describe the data, copied into the averaged model.
DESCRIPTION_KEYS = ("classes", "mean", "std")
# Dates in a zip entry; fixed so that the same arrays always make the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class TaskError(Exception):
    """Inputs this task cannot use; the message goes to stderr and the task fails."""


def report(output: Path, percent: float) -> None:
    (output.parent / ".progress").write_text(f"{int(percent)}\n")


# --- files ------------------------------------------------------------------------------


def load_npz(path: Path) -> dict[str, NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise TaskError(f"{path.name} is not a readable .npz file: {error}") from error


def save_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> None:
    """As numpy.savez, but the same arrays always give the same bytes (fixed dates, sorted
    names), so a re-run's outputs are identical and dedupe by content hash."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            with archive.open(info, "w", force_zip64=True) as entry:
                array = np.asarray(arrays[name], order="C")  # keeps 0-d arrays 0-d
                np.lib.format.write_array(entry, array, allow_pickle=False)


def layers_of(arrays: Mapping[str, NDArray[Any]], source: str) -> Layers:
    """The model's layers w0, b0, w1, b1, ...; TaskError unless they chain together."""
    indices = {int(m[2]) for key in arrays if (m := LAYER_KEY.fullmatch(key))}
    if not indices or indices != set(range(len(indices))):
        raise TaskError(f"{source} has no layers w0, b0, w1, b1, ... (it has {sorted(arrays)})")
    layers: Layers = []
    for index in range(len(indices)):
        if f"w{index}" not in arrays or f"b{index}" not in arrays:
            raise TaskError(f"{source} has only one of w{index} and b{index}")
        weights = np.asarray(arrays[f"w{index}"], dtype=np.float64)
        bias = np.asarray(arrays[f"b{index}"], dtype=np.float64)
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise TaskError(f"{source}: w{index} {weights.shape} and b{index} {bias.shape} differ")
        if layers and layers[-1][0].shape[1] != weights.shape[0]:
            raise TaskError(f"{source}: layer {index} does not take layer {index - 1}'s output")
        layers.append((weights, bias))
    return layers


def layer_arrays(layers: Layers) -> dict[str, NDArray[Any]]:
    arrays: dict[str, NDArray[Any]] = {}
    for index, (weights, bias) in enumerate(layers):
        arrays[f"w{index}"] = weights
        arrays[f"b{index}"] = bias
    return arrays


def samples_of(arrays: Mapping[str, NDArray[Any]], source: str) -> tuple[Matrix, NDArray[Any]]:
    """x (samples x features) and y (class indices) of a shard or the held-out split."""
    if "x" not in arrays or "y" not in arrays:
        raise TaskError(f"{source} needs arrays x and y (it has {sorted(arrays)})")
    x = np.asarray(arrays["x"], dtype=np.float64)
    y = np.asarray(arrays["y"])
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or y.dtype.kind not in "iu":
        raise TaskError(f"{source}: x {x.shape} and y {y.shape} ({y.dtype}) do not match")
    return x, y.astype(np.int64)


def check_fit(layers: Layers, x: Matrix, y: NDArray[Any], source: str) -> None:
    features, classes = layers[0][0].shape[0], layers[-1][0].shape[1]
    if x.shape[1] != features:
        raise TaskError(f"{source} has {x.shape[1]} features; the model takes {features}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise TaskError(f"{source} has class indices outside 0..{classes - 1}")


# --- the model --------------------------------------------------------------------------


def forward(layers: Layers, x: Matrix) -> tuple[list[Matrix], Matrix]:
    """Each layer's input (x, then the hidden activations) and the output logits."""
    inputs = [x]
    for weights, bias in layers[:-1]:
        inputs.append(np.maximum(inputs[-1] @ weights + bias, 0.0))
    weights, bias = layers[-1]
    return inputs, inputs[-1] @ weights + bias


def log_softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: Matrix = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def evaluate(layers: Layers, x: Matrix, y: NDArray[Any]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y)."""
    _, logits = forward(layers, x)
    log_probabilities = log_softmax(logits)
    loss = -float(log_probabilities[np.arange(y.size), y].mean())
    accuracy = float((logits.argmax(axis=1) == y).mean())
    return loss, accuracy


def gradients(layers: Layers, x: Matrix, y: NDArray[Any]) -> Layers:
    """The gradient of the mean cross-entropy on (x, y), per layer."""
    inputs, logits = forward(layers, x)
    delta = np.exp(log_softmax(logits))
    delta[np.arange(y.size), y] -= 1.0
    delta /= y.size
    grads: Layers = []
    for index in range(len(layers) - 1, -1, -1):
        grads.append((inputs[index].T @ delta, delta.sum(axis=0)))
        if index:
            # Back through the ReLU: its input was positive exactly where its output is.
            delta = (delta @ layers[index][0].T) * (inputs[index] > 0.0)
    grads.reverse()
    return grads


def train(
    layers: Layers,
    x: Matrix,
    y: NDArray[Any],
    epochs: int,
    learning_rate: float,
    batch_size: int,
    rng: np.random.Generator,
    on_epoch: Callable[[int], None],
) -> Layers:
    """Gradient descent: one step per epoch (batch_size 0), or per shuffled mini-batch."""
    layers = [(weights.copy(), bias.copy()) for weights, bias in layers]
    samples = y.size
    full_batch = batch_size <= 0 or batch_size >= samples
    for epoch in range(epochs):
        if full_batch:
            batches = [np.arange(samples)]
        else:
            order = rng.permutation(samples)
            batches = [order[start : start + batch_size] for start in range(0, samples, batch_size)]
        for batch in batches:
            grads = gradients(layers, x[batch], y[batch])
            for (weights, bias), (grad_weights, grad_bias) in zip(layers, grads, strict=True):
                weights -= learning_rate * grad_weights
                bias -= learning_rate * grad_bias
        on_epoch(epoch + 1)
    return layers


def weighted_average(updates: Sequence[Layers], weights: Sequence[int]) -> Layers:
    """Federated averaging: each layer's sample-weighted mean over the updates."""
    fractions = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    averaged: Layers = []
    for index in range(len(updates[0])):
        layer_weights = np.stack([update[index][0] for update in updates])
        layer_bias = np.stack([update[index][1] for update in updates])
        averaged.append((np.tensordot(fractions, layer_weights, axes=1), fractions @ layer_bias))
    return averaged


# --- the two subcommands ----------------------------------------------------------------


def run_train(args: argparse.Namespace) -> None:
    update_path: Path = args.update
    report(update_path, 0)
    layers = layers_of(load_npz(args.model), args.model.name)
    x, y = samples_of(load_npz(args.shard), args.shard.name)
    check_fit(layers, x, y, args.shard.name)
    if y.size == 0:
        raise TaskError(f"{args.shard.name} holds no samples")
    report(update_path, 5)
    epochs: int = args.epochs

    def on_epoch(done: int) -> None:
        report(update_path, 5 + 90 * done // epochs)

    rng = np.random.default_rng(args.seed)
    trained = train(layers, x, y, epochs, args.learning_rate, args.batch_size, rng, on_epoch)
    loss, _ = evaluate(trained, x, y)
    if not math.isfinite(loss) or not all(np.isfinite(w).all() for w, _ in trained):
        raise TaskError(f"training diverged (loss {loss}): give a smaller learning_rate")
    update = layer_arrays(trained)
    update["samples"] = np.array(y.size, dtype=np.int64)
    update["train_loss"] = np.array(loss, dtype=np.float64)
    save_npz(update_path, update)
    report(update_path, 100)


def run_average(args: argparse.Namespace) -> None:
    model_path: Path = args.model
    report(model_path, 0)
    test = load_npz(args.test)
    x, y = samples_of(test, args.test.name)
    updates: list[Layers] = []
    counts: list[int] = []
    train_losses: list[float] = []
    for number, path in enumerate(args.updates, start=1):
        arrays = load_npz(path)
        layers = layers_of(arrays, path.name)
        if updates and [w.shape for w, _ in layers] != [w.shape for w, _ in updates[0]]:
            raise TaskError(f"{path.name}'s layers differ in shape from {args.updates[0].name}'s")
        samples = int(arrays.get("samples", np.array(0)))
        if samples <= 0:
            raise TaskError(f"{path.name} has no positive sample count")
        updates.append(layers)
        counts.append(samples)
        train_losses.append(float(arrays.get("train_loss", np.array(np.nan))))
        report(model_path, 60 * number // len(args.updates))
    check_fit(updates[0], x, y, args.test.name)
    averaged = weighted_average(updates, counts)
    report(model_path, 70)
    loss, accuracy = evaluate(averaged, x, y)
    report(model_path, 90)
    model = layer_arrays(averaged)
    model.update({key: test[key] for key in DESCRIPTION_KEYS if key in test})
    save_npz(model_path, model)
    metrics = {
        "round": args.round,
        "accuracy": accuracy,
        "loss": loss,
        "train_loss": float(np.average(train_losses, weights=counts)),
        "train_samples": sum(counts),
        "test_samples": int(y.size),
        "shards": len(counts),
    }
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    report(model_path, 100)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ml_worker.py", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    train_command = commands.add_parser("train", help="train a model on one shard")
    train_command.add_argument("model", type=Path)
    train_command.add_argument("shard", type=Path)
    train_command.add_argument("update", type=Path)
    train_command.add_argument("--epochs", type=int, required=True)
    train_command.add_argument("--learning-rate", type=float, required=True)
    train_command.add_argument("--batch-size", type=int, default=0, help="0: full batch")
    train_command.add_argument("--seed", type=int, default=0)
    average_command = commands.add_parser("average", help="average a round's updates")
    average_command.add_argument("--round", type=int, required=True)
    average_command.add_argument("test", type=Path)
    average_command.add_argument("model", type=Path)
    average_command.add_argument("metrics", type=Path)
    average_command.add_argument("updates", type=Path, nargs="+")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "train" and (args.epochs < 1 or not args.learning_rate > 0):
        print("train needs --epochs >= 1 and --learning-rate > 0", file=sys.stderr)
        return 2
    try:
        if args.command == "train":
            run_train(args)
        else:
            run_average(args)
    except TaskError as error:
        print(f"ml_worker.py {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
