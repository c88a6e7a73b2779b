"""The parameter_sweep splitter end to end: split, run every point's real command (wrapped
in batch_run.py), merge, and check the table against values computed here (tasks run as
local subprocesses: see tests/splitter_runner.py)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitters.api import DEFAULT_IMAGE, MergeError, SplitterError, TaskTemplate
from splitters.parameter_sweep import MAX_POINTS, ParameterSweep
from tests.splitter_runner import LocalRun, prepare, run_locally

SWEEP = ParameterSweep()
# A user command: writes its argv (after the program) as a JSON object to /output/result.json.
ECHO = "import json, sys; json.dump(dict(args=sys.argv[2:]), open(sys.argv[1], 'w'))"
# Writes a*b and a+b for its two numeric arguments.
ARITHMETIC = (
    "import json, sys; a, b = float(sys.argv[2]), float(sys.argv[3]);"
    " json.dump(dict(product=a * b, total=a + b), open(sys.argv[1], 'w'))"
)


@pytest.fixture(autouse=True)
def python3_is_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper runs `python3` from PATH: make it this interpreter (which has numpy)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{Path('/usr/bin')}")


def run(raw: Mapping[str, Any], tmp_path: Path) -> LocalRun:
    return run_locally(SWEEP, raw, tmp_path)


def local(task: TaskTemplate, name: str) -> Path:
    """The local file behind one of the task's inputs."""
    source = task.inputs[name]
    assert isinstance(source, Path)
    return source


def csv_rows(run: LocalRun) -> list[dict[str, str]]:
    assert [path.name for path in run.results] == ["results.csv", "results.json"]
    with run.results[0].open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def json_rows(run: LocalRun) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(run.results[1].read_text(encoding="utf-8"))
    return rows


def test_the_example_estimates_pi_for_every_seed_and_sample_count(tmp_path: Path) -> None:
    result = run(SWEEP.example, tmp_path)
    rows = json_rows(result)
    points = [(seed, samples) for seed in (1, 2, 3) for samples in (1000, 100000)]
    assert [(row["index"], row["seed"], row["samples"]) for row in rows] == [
        (index, seed, samples) for index, (seed, samples) in enumerate(points)
    ]
    for row, (seed, samples) in zip(rows, points, strict=True):
        xy = np.random.default_rng(seed).random((samples, 2))
        pi = 4.0 * float(np.mean((xy**2).sum(axis=1) <= 1.0))
        assert row["pi"] == pytest.approx(pi)
        assert row["error"] == pytest.approx(abs(pi - np.pi))
    assert list(csv_rows(result)[0]) == ["index", "seed", "samples", "error", "pi"]
    assert all(task.image == DEFAULT_IMAGE for task in result.tasks)


def test_cartesian_grid_runs_every_combination_last_parameter_fastest(tmp_path: Path) -> None:
    command = ["python3", "-c", ARITHMETIC, "/output/result.json", "{a}", "{b}"]
    result = run({"command": command, "grid": {"a": [1, 2, 3], "b": [0.5, -4]}}, tmp_path)
    expected = [(a, b) for a in (1, 2, 3) for b in (0.5, -4)]
    assert len(result.tasks) == 6
    assert [(row["a"], row["b"]) for row in json_rows(result)] == expected
    assert [(row["product"], row["total"]) for row in json_rows(result)] == [
        (a * b, a + b) for a, b in expected
    ]
    assert csv_rows(result) == [
        {
            "index": str(index),
            "a": str(a),
            "b": str(b),
            "product": str(float(a * b)),
            "total": str(float(a + b)),
        }
        for index, (a, b) in enumerate(expected)
    ]


def test_zip_pairs_the_lists_element_by_element(tmp_path: Path) -> None:
    command = ["python3", "-c", ARITHMETIC, "/output/result.json", "{a}", "{b}"]
    raw = {"command": command, "grid": {"a": [1, 2, 3], "b": [10, 20, 30]}, "mode": "zip"}
    result = run(raw, tmp_path)
    assert [(row["a"], row["b"], row["product"]) for row in json_rows(result)] == [
        (1, 10, 10.0),
        (2, 20, 40.0),
        (3, 30, 90.0),
    ]


def test_values_go_in_as_text_with_index_and_literal_braces(tmp_path: Path) -> None:
    command = [
        "python3",
        "-c",
        ECHO,
        "/output/result.json",
        "{name}",
        "{flag}",
        "#{index}",
        "{{x}}",
    ]
    raw = {"command": command, "grid": {"name": ["a b", "ü"], "flag": [True, False]}}
    rows = json_rows(run(raw, tmp_path))
    assert [row["args"] for row in rows] == [
        ["a b", "true", "#0", "{x}"],
        ["a b", "false", "#1", "{x}"],
        ["ü", "true", "#2", "{x}"],
        ["ü", "false", "#3", "{x}"],
    ]
    assert [row["flag"] for row in rows] == [True, False, True, False]


def test_text_results_fill_a_value_column_and_missing_cells_stay_empty(tmp_path: Path) -> None:
    # x = 1 prints a JSON object, the others plain text (one of them a JSON number).
    code = (
        "import sys; x = int(sys.argv[2]); out = open(sys.argv[1], 'w');"
        ' out.write(\'{{"x": 1, "index": 9}}\' if x == 1 else "  %d squared\\n" % (x * x)'
        ' if x == 2 else "42\\n")'
    )
    raw = {
        "command": ["python3", "-c", code, "/output/out.txt", "{x}"],
        "grid": {"x": [1, 2, 3]},
        "output": "out.txt",
    }
    result = run(raw, tmp_path)
    assert csv_rows(result) == [
        {"index": "0", "x": "1", "result.index": "9", "result.x": "1", "value": ""},
        {"index": "1", "x": "2", "result.index": "", "result.x": "", "value": "4 squared"},
        {"index": "2", "x": "3", "result.index": "", "result.x": "", "value": "42"},
    ]
    assert json_rows(result)[1] == {
        "index": 1,
        "x": 2,
        "result.index": None,
        "result.x": None,
        "value": "4 squared",
    }
    assert all(task.outputs == ("out.txt", "point.json") for task in result.tasks)


def test_the_script_travels_to_every_task_as_script_py(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "import json, sys\n"
        "rate, depth = float(sys.argv[2]), int(sys.argv[3])\n"
        "with open(sys.argv[1], 'w') as f:\n"
        "    json.dump({'loss': rate * depth}, f)\n"
    )
    raw = {
        "command": ["python3", "{script}", "/output/result.json", "{rate}", "{depth}"],
        "grid": {"rate": [0.5, 0.25], "depth": [2, 8]},
        "script": "model.py",
    }
    result = run(raw, tmp_path)
    assert [row["loss"] for row in json_rows(result)] == [1.0, 4.0, 0.5, 2.0]
    first = result.tasks[0]
    assert first.command[5:8] == ("python3", "/input/script.py", "/output/result.json")
    assert local(first, "script.py").read_bytes() == (tmp_path / "model.py").read_bytes()
    assert len({task.inputs["script.py"] for task in result.tasks}) == 1, "one shared file"


def test_tasks_wrap_the_command_and_ship_the_wrapper_and_their_point(tmp_path: Path) -> None:
    raw = {
        "command": ["python3", "-c", ECHO, "/output/r.json", "{k}"],
        "grid": {"k": list(range(12))},
        "output": "r.json",
        "image": "example.org/me/sim:2",
        "cpus": 2,
        "memory_mb": 2048,
        "timeout_seconds": 30,
    }
    tasks = SWEEP.split(prepare(SWEEP, raw, tmp_path), tmp_path)
    wrapper = resources.files("splitters.workers").joinpath("batch_run.py").read_bytes()
    assert [task.name for task in tasks] == [f"point-{i:02d}" for i in range(12)]
    for index, task in enumerate(tasks):
        assert task.command[:5] == (
            "python3",
            "/input/batch_run.py",
            "/input/point.json",
            "/output/point.json",
            "--",
        )
        assert task.command[5:] == ("python3", "-c", ECHO, "/output/r.json", str(index))
        assert local(task, "batch_run.py").read_bytes() == wrapper
        assert json.loads(local(task, "point.json").read_text())["parameters"] == {"k": index}
        assert task.outputs == ("r.json", "point.json")
        assert task.image == "example.org/me/sim:2"
        assert task.timeout_seconds == 30
        assert (task.resources.cpus, task.resources.memory_mb) == (2.0, 2048)


def test_estimate_counts_points_without_writing(tmp_path: Path) -> None:
    command = ["python3", "-c", ECHO, "/output/result.json", "{a}", "{b}", "{c}"]
    grid = {"a": [1, 2, 3], "b": ["x", "y"], "c": [True, False, True, False]}
    cartesian = SWEEP.estimate(prepare(SWEEP, {"command": command, "grid": grid}, tmp_path))
    assert cartesian.task_count == 24
    assert (cartesian.resources.cpus, cartesian.resources.memory_mb) == (1.0, 512)
    assert 0 < cartesian.seconds_per_task <= 600
    grid = {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [True, False, True]}
    zipped = prepare(SWEEP, {"command": command, "grid": grid, "mode": "zip"}, tmp_path)
    assert SWEEP.estimate(zipped).task_count == 3
    assert list(tmp_path.iterdir()) == [], "an estimate writes nothing"


GOOD_COMMAND = ["python3", "-c", ECHO, "/output/result.json", "{a}"]
BAD_PARAMETERS = [
    pytest.param({"grid": {"a": [1]}}, "command", id="command-missing"),
    pytest.param({"command": GOOD_COMMAND}, "grid", id="grid-missing"),
    pytest.param({"command": [], "grid": {"a": [1]}}, "command", id="command-empty"),
    pytest.param({"command": "python3 x.py", "grid": {"a": [1]}}, "command", id="command-string"),
    pytest.param({"command": ["python3", 3, "{a}"], "grid": {"a": [1]}}, "command", id="word-int"),
    pytest.param({"command": ["python3", "{b}"], "grid": {"a": [1]}}, "command", id="unknown-name"),
    pytest.param({"command": ["python3", "{a:.2f}"], "grid": {"a": [1]}}, "command", id="spec"),
    pytest.param({"command": ["python3", "{a!r}"], "grid": {"a": [1]}}, "command", id="convert"),
    pytest.param({"command": ["python3", "{a"], "grid": {"a": [1]}}, "command", id="unclosed"),
    pytest.param(
        {"command": ["python3", "{}", "{a}"], "grid": {"a": [1]}}, "command", id="empty{}"
    ),
    pytest.param(
        {"command": ["python3", "-c", "{'a': 1}"], "grid": {"a": [1]}}, "command", id="dict"
    ),
    pytest.param({"command": ["", "{a}"], "grid": {"a": [1]}}, "command", id="no-program"),
    pytest.param({"command": GOOD_COMMAND, "grid": {}}, "grid", id="grid-empty"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": []}}, "grid", id="list-empty"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": 1}}, "grid", id="not-a-list"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": [[1, 2]]}}, "grid", id="nested"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": [{"b": 1}]}}, "grid", id="table-value"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": [float("nan")]}}, "grid", id="nan"),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": [1], "b": [2]}}, "grid", id="b-unused"),
    pytest.param(
        {"command": ["python3", "{index}"], "grid": {"index": [1]}}, "grid", id="index-reserved"
    ),
    pytest.param({"command": ["python3"], "grid": {"a-b": [1]}}, "grid", id="bad-grid-name"),
    pytest.param(
        {"command": ["python3", "{a}", "{b}"], "grid": {"a": [1, 2], "b": [1]}, "mode": "zip"},
        "grid",
        id="zip-lengths",
    ),
    pytest.param(
        {
            "command": ["python3", "{a}", "{b}"],
            "grid": {"a": list(range(1000)), "b": list(range(MAX_POINTS // 1000 + 1))},
        },
        "grid",
        id="too-many-points",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "mode": "diagonal"}, "mode", id="mode"
    ),
    pytest.param(
        {"command": ["python3", "{script}", "{a}"], "grid": {"a": [1]}}, "script", id="no-script"
    ),
    pytest.param(
        {
            "command": ["python3", "/input/model.py", "{a}"],
            "grid": {"a": [1]},
            "script": "model.py",
        },
        "command",
        id="script-by-its-own-name",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "script": "nope.py"},
        "script",
        id="script-missing",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "output": "point.json"},
        "output",
        id="output-point",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "output": "out/r.json"},
        "output",
        id="output-path",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "output": ".progress"},
        "output",
        id="output-progress",
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "image": " "}, "image", id="image-blank"
    ),
    pytest.param({"command": GOOD_COMMAND, "grid": {"a": [1]}, "cpus": 0}, "cpus", id="cpus-0"),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "memory_mb": 0}, "memory_mb", id="memory-0"
    ),
    pytest.param(
        {"command": GOOD_COMMAND, "grid": {"a": [1]}, "timeout_seconds": 0},
        "timeout_seconds",
        id="timeout-0",
    ),
]


@pytest.mark.parametrize(("raw", "key"), BAD_PARAMETERS)
def test_bad_parameters_raise_splitter_error_naming_the_key(
    raw: dict[str, Any], key: str, tmp_path: Path
) -> None:
    (tmp_path / "model.py").write_text("print('hi')\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SplitterError) as caught:
        SWEEP.split(prepare(SWEEP, raw, tmp_path), workdir)
    assert caught.value.key == key, caught.value
    assert str(caught.value).startswith(f"{key}: ")
    assert list(workdir.iterdir()) == [], "nothing is written for a workflow that cannot run"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = {"command": ["python3", "{nope}"], "grid": {"a": [1]}, "output": "a/b", "image": ""}
    with pytest.raises(SplitterError) as caught:
        SWEEP.estimate(prepare(SWEEP, raw, tmp_path))
    assert [key for key, _ in caught.value.problems] == ["command", "output", "image"]


def point_outputs(tmp_path: Path, indices: list[int], count: int) -> dict[str, dict[str, Path]]:
    outputs: dict[str, dict[str, Path]] = {}
    for index in indices:
        record = tmp_path / f"point-{index}.json"
        record.write_text(
            json.dumps({"index": index, "count": count, "parameters": {"a": index}, "output": "r"})
        )
        result = tmp_path / f"r-{index}"
        result.write_text(f"{index}\n")
        outputs[f"point-{index}"] = {"r": result, "point.json": record}
    return outputs


def test_merge_names_the_missing_points(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="missing the output of point 1, 3"):
        SWEEP.merge(point_outputs(tmp_path, [0, 2], 4), tmp_path)
    assert not (tmp_path / "results.csv").exists()


def test_merge_needs_each_point_record_and_result(tmp_path: Path) -> None:
    outputs = point_outputs(tmp_path, [0, 1], 2)
    del outputs["point-1"]["r"]
    with pytest.raises(MergeError, match="point-1 produced no r"):
        SWEEP.merge(outputs, tmp_path)
    del outputs["point-0"]["point.json"]
    with pytest.raises(MergeError, match=r"point-0 produced no point\.json"):
        SWEEP.merge(outputs, tmp_path)


def test_merge_of_complete_points_writes_the_table(tmp_path: Path) -> None:
    results = SWEEP.merge(point_outputs(tmp_path, [1, 0, 2], 3), tmp_path)
    assert results[0].read_text() == "index,a,value\n0,0,0\n1,1,1\n2,2,2\n"
