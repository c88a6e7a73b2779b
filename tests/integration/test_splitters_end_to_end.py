"""Every built-in splitter through real daemons and Docker, on a small instance, its merged
result checked independently of the splitter's own code."""

from __future__ import annotations

import csv
import json
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
