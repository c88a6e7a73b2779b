"""Every built-in splitter through real daemons and Docker, on a small instance, its merged
result checked independently of the splitter's own code."""

from __future__ import annotations

import csv
import gzip
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitters.blocks import generate
from tests.integration.harness import Daemon, Daemons, run_cli
from tests.integration.test_tasks_end_to_end import start_mesh, submit

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def init(tmp_path: Path, workflow_type: str) -> Path:
    workflow = tmp_path / f"{workflow_type}.toml"
    written = run_cli("init", workflow_type, "-o", str(workflow))
    assert written.returncode == 0, written.stderr
    return workflow


def run_to_results(manager: Daemon, workflow: Path, out: Path, *sets: str) -> dict[str, Any]:
    """Submits with --wait, expects completion, fetches the merged results into `out`."""
    extra = [word for pair in sets for word in ("--set", pair)]
    reply = submit(manager, workflow, "--wait", *extra)
    assert reply["exit_code"] == 0, reply
    assert reply["state"] == "completed", reply
    fetched = run_cli(
        "results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out)
    )
    assert fetched.returncode == 0, fetched.stderr
    return reply


def test_matrix_addition_from_node_init_adds(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = init(tmp_path, "matrix_addition")
    run_to_results(manager, workflow, tmp_path / "out", "size=96", "blocks=3", "seed=5")
    a, b = generate(96, 5)
    assert np.allclose(np.load(tmp_path / "out" / "C.npy"), a + b)


POINT = """\
import json, sys
x, y = int(sys.argv[1]), sys.argv[2]
json.dump({"product": x * len(y), "word": y.upper()}, open("/output/result.json", "w"))
"""


def test_parameter_sweep_gathers_one_row_per_point(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    (tmp_path / "point.py").write_text(POINT)
    workflow = tmp_path / "sweep.toml"
    workflow.write_text(
        '[workflow]\ntype = "parameter_sweep"\n\n[parameters]\nscript = "point.py"\n'
        'command = ["python3", "{script}", "{x}", "{y}"]\n'
        'grid = { x = [1, 2, 3], y = ["ab", "cde"] }\n'
    )
    reply = run_to_results(manager, workflow, tmp_path / "out")
    assert reply["counts"]["total"] == 6
    with (tmp_path / "out" / "results.csv").open() as table:
        rows = list(csv.DictReader(table))
    got = {(row["x"], row["y"]): (row["product"], row["word"]) for row in rows}
    expected = {(str(x), y): (str(x * len(y)), y.upper()) for x in (1, 2, 3) for y in ("ab", "cde")}
    assert got == expected
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 6


INVERT = """\
import sys
import numpy as np
paths = sys.argv[1:]
half = len(paths) // 2
for source, target in zip(paths[:half], paths[half:]):
    np.save(target, 255 - np.load(source))
"""


def test_image_batch_processes_every_file_of_a_folder_in_batches(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    images = {f"img{i}.npy": rng.integers(0, 256, (8, 8), dtype=np.uint8) for i in range(5)}
    for name, image in images.items():
        np.save(folder / name, image)
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "invert.py").write_text(INVERT)
    workflow = tmp_path / "batch.toml"
    workflow.write_text(
        '[workflow]\ntype = "image_batch"\n\n[parameters]\n'
        'folder = "images"\npattern = "*.npy"\nbatch_size = 2\nscript = "invert.py"\n'
        'command = ["python3", "{script}", "{inputs}", "{outputs}"]\n'
        'outputs = "{stem}-inv{suffix}"\n'
    )
    reply = run_to_results(manager, workflow, tmp_path / "out")
    assert reply["counts"]["total"] == 3, "5 images in batches of 2"
    for name, image in images.items():
        inverted = np.load(tmp_path / "out" / name.replace(".npy", "-inv.npy"))
        assert np.array_equal(inverted, 255 - image)
    with (tmp_path / "out" / "manifest.csv").open() as manifest:
        assert sorted(row["input"] for row in csv.DictReader(manifest)) == sorted(images)


def test_matrix_multiplication_with_a_k_split_reduces_to_the_product(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = init(tmp_path, "matrix_multiplication")
    reply = run_to_results(
        manager, workflow, tmp_path / "out", "size=120", "blocks=2", "inner_blocks=3", "seed=2"
    )
    assert reply["counts"]["total"] == 2 * 2 * (3 + 1)
    a, b = generate(120, 2)
    assert np.allclose(np.load(tmp_path / "out" / "C.npy"), a @ b)


FAKE_OPENMALARIA = Path(__file__).parents[1] / "fixtures" / "fake_openmalaria.py"
COUNT_MEASURES = {0, 1, 3, 14, 15, 19}  # nHost, nInfect, nPatent, nUncomp, nSevere, nDirDeaths


def test_openmalaria_sweep_aggregates_what_the_runs_reported(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    """No openMalaria binary here: its stand-in (tests/fixtures) travels as an extra input
    with the resource files, as docs/openmalaria.md describes for a binary-only image."""
    manager, _ = start_mesh(daemons)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "fake_openmalaria.py").write_bytes(FAKE_OPENMALARIA.read_bytes())
    (extra / "scenario_48.xsd").write_text("<schema/>\n")
    (extra / "densities.csv").write_text("density\n")
    workflow = init(tmp_path, "openmalaria")
    text = workflow.read_text().replace('image = "openmalaria:local"', f'image = "{worker_image}"')
    text = text.replace('resource_dir = "/om"', 'resource_dir = "/input"\nextra_inputs = "extra"')
    text = text.replace(
        'command = ["openMalaria",', 'command = ["python3", "/input/fake_openmalaria.py",'
    )
    workflow.write_text(text)
    reply = run_to_results(manager, workflow, tmp_path / "out", "population=200")
    assert reply["counts"]["total"] == 2 * 2 * 2 + 1, "2x2 points x 2 seeds, and the manifest"

    with (tmp_path / "out" / "runs.csv").open() as file:
        runs = list(csv.DictReader(file))
    assert len({row["run"] for row in runs}) == 8
    values: dict[tuple[str, ...], list[float]] = {}
    for row in runs:
        key = (row["point"], row["survey"], row["age_group"], row["measure"])
        values.setdefault(key, []).append(float(row["value"]))
    with (tmp_path / "out" / "aggregate.csv").open() as file:
        aggregate = list(csv.DictReader(file))
    assert len(aggregate) == len(values)
    for row in aggregate:
        key = (row["point"], row["survey"], row["age_group"], row["measure"])
        seen = values[key]
        assert int(row["runs"]) == len(seen) == 2, "two seeds per point"
        assert float(row["sum"]) == pytest.approx(sum(seen))
        assert float(row["mean"]) == pytest.approx(sum(seen) / len(seen))
        hosts = sum(values[(*key[:3], "0")]) if int(key[3]) in COUNT_MEASURES else 0
        if hosts:
            assert float(row["rate"]) == pytest.approx(sum(seen) / hosts)
        else:
            assert row["rate"] == ""


def test_ml_training_learns_the_digits_across_rounds(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = init(tmp_path, "ml_training")
    out = tmp_path / "out"
    reply = run_to_results(manager, workflow, out, "rounds=3", "shards=2", "seed=0")
    assert reply["counts"]["total"] == 3 * (2 + 1), "per round: 2 shards and an average"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [0, 1, 2]

    # The final model, applied here with plain numpy to every digit (train and test alike),
    # must classify at least 90% right; an untrained model gets about 10%.
    with gzip.open(files("splitters.data").joinpath("digits.csv.gz").open("rb")) as data:
        table = np.loadtxt(data, delimiter=",")
    x, y = table[:, :-1], table[:, -1]
    model = np.load(out / "model.npz", allow_pickle=False)
    hidden = (x - model["mean"]) / model["std"]
    layers = sum(1 for name in model.files if name.startswith("w"))
    for index in range(layers):
        hidden = hidden @ model[f"w{index}"] + model[f"b{index}"]
        if index < layers - 1:
            hidden = np.maximum(hidden, 0.0)
    predicted = model["classes"][np.argmax(hidden, axis=1)]
    accuracy = float(np.mean(predicted == y))
    assert accuracy >= 0.9, accuracy
    assert metrics[-1]["accuracy"] >= 0.9
