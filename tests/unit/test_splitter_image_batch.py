"""The image_batch splitter end to end: split, run every batch's real command (wrapped in
batch_run.py), merge, and check every output and the manifest against values computed here
(tasks run as local subprocesses: see tests/splitter_runner.py)."""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitters import image_batch
from splitters.api import DEFAULT_IMAGE, MergeError, SplitterError, TaskTemplate
from splitters.image_batch import ImageBatch
from tests.splitter_runner import LocalRun, prepare, run_locally

BATCH = ImageBatch()
# A user command: each input's text, upper-cased and tagged with the batch, to its output.
UPPER = (
    "import sys; batch, paths = sys.argv[1], sys.argv[2:]; half = len(paths) // 2;"
    " [open(dst, 'w').write(batch + ':' + open(src).read().upper())"
    " for src, dst in zip(paths[:half], paths[half:])]"
)
UPPER_COMMAND = ["python3", "-c", UPPER, "{batch}", "{inputs}", "{outputs}"]


@pytest.fixture(autouse=True)
def python3_is_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper runs `python3` from PATH: make it this interpreter (which has numpy)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{Path('/usr/bin')}")


def local(task: TaskTemplate, name: str) -> Path:
    """The local file behind one of the task's inputs."""
    source = task.inputs[name]
    assert isinstance(source, Path)
    return source


def manifest(run: LocalRun) -> list[dict[str, str]]:
    assert run.results[-1].name == "manifest.csv"
    with run.results[-1].open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def text_folder(tmp_path: Path, files: Mapping[str, str]) -> str:
    """A folder `data` under tmp_path holding `files`; its name relative to tmp_path."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return "data"


def test_the_example_turns_the_demo_images_to_grayscale(tmp_path: Path) -> None:
    result = run_locally(BATCH, BATCH.example, tmp_path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    assert [task.name for task in result.tasks] == ["batch-0", "batch-1", "batch-2"]
    assert [path.name for path in result.results] == [
        *(f"demo-{i}-gray.npy" for i in range(5)),
        "manifest.csv",
    ]
    for image, path in zip(images, result.results[:-1], strict=True):
        gray = (image @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
        assert np.array_equal(np.load(path), gray)
    rows = manifest(result)
    assert [(row["input"], row["output"], row["task"]) for row in rows] == [
        ("demo-0.npy", "demo-0-gray.npy", "batch-0"),
        ("demo-1.npy", "demo-1-gray.npy", "batch-0"),
        ("demo-2.npy", "demo-2-gray.npy", "batch-1"),
        ("demo-3.npy", "demo-3-gray.npy", "batch-1"),
        ("demo-4.npy", "demo-4-gray.npy", "batch-2"),
    ]
    for row, path in zip(rows, result.results[:-1], strict=True):
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["size"] == str(path.stat().st_size)
    assert {task.image for task in result.tasks} == {DEFAULT_IMAGE}


def test_matching_files_run_in_sorted_batches_with_inputs_and_outputs_in_order(
    tmp_path: Path,
) -> None:
    files = {f"{name}.txt": f"text {name}" for name in "gfedcba"}
    folder = text_folder(tmp_path, {**files, "skip.csv": "x", ".hidden.txt": "x"})
    (tmp_path / "data" / "sub.txt").mkdir()  # a folder, not a file: left out
    raw = {"folder": folder, "pattern": "*.txt", "batch_size": 3, "command": UPPER_COMMAND}
    result = run_locally(BATCH, raw, tmp_path)
    names = sorted(files)
    assert [task.outputs for task in result.tasks] == [
        (*names[0:3], "batch.json"),
        (*names[3:6], "batch.json"),
        (names[6], "batch.json"),
    ]
    assert [path.name for path in result.results] == [*names, "manifest.csv"]
    for index, name in enumerate(names):
        assert result.results[index].read_text() == f"{index // 3}:{files[name].upper()}"
    assert [row["task"] for row in manifest(result)] == ["batch-0"] * 3 + ["batch-1"] * 3 + [
        "batch-2"
    ]


def test_a_script_processes_every_file_and_outputs_are_named_by_the_template(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "arrays"
    folder.mkdir()
    arrays = {f"m{i}.npy": np.arange(6.0).reshape(2, 3) * i for i in range(4)}
    for name, array in arrays.items():
        np.save(folder / name, array)
    (tmp_path / "double.py").write_text(
        "import sys\nimport numpy as np\n"
        "paths = sys.argv[1:]\nhalf = len(paths) // 2\n"
        "for src, dst in zip(paths[:half], paths[half:]):\n"
        "    with open(dst, 'wb') as out:\n"
        "        np.save(out, 2 * np.load(src))\n"
    )
    raw = {
        "folder": "arrays",
        "batch_size": 4,
        "script": "double.py",
        "command": ["python3", "{script}", "{inputs}", "{outputs}"],
        "outputs": "{stem}.doubled{suffix}",
    }
    result = run_locally(BATCH, raw, tmp_path)
    (task,) = result.tasks
    assert task.command[5:7] == ("python3", "/input/script.py")
    assert local(task, "script.py").read_bytes() == (tmp_path / "double.py").read_bytes()
    for path, (name, array) in zip(result.results[:-1], arrays.items(), strict=True):
        assert path.name == name.replace(".npy", ".doubled.npy")
        assert np.array_equal(np.load(path), 2 * array)


def test_tasks_use_the_folder_files_where_they_are_and_ask_for_what_was_given(
    tmp_path: Path,
) -> None:
    folder = text_folder(tmp_path, {f"{i}.txt": "x" * 1000 for i in range(5)})
    raw = {
        "folder": folder,
        "batch_size": 2,
        "command": ["tool", "{inputs}"],
        "image": "example.org/me/tool:3",
        "cpus": 0.5,
        "memory_mb": 64,
        "timeout_seconds": 20,
    }
    params = prepare(BATCH, raw, tmp_path)
    estimate = BATCH.estimate(params)
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert list(workdir.iterdir()) == []
    tasks = BATCH.split(params, workdir)
    assert estimate.task_count == len(tasks) == 3
    for task in tasks:
        assert task.resources == estimate.resources
        assert (task.resources.cpus, task.resources.memory_mb) == (0.5, 64)
        assert task.resources.disk_mb >= 1
        assert (task.image, task.timeout_seconds) == ("example.org/me/tool:3", 20)
        for output in task.outputs[:-1]:
            assert local(task, output) == tmp_path / "data" / output, "not copied"
    assert tasks[2].command == (
        "python3",
        "/input/batch_run.py",
        "/input/batch.json",
        "/output/batch.json",
        "--",
        "tool",
        "/input/4.txt",
    )
    assert 0 < estimate.seconds_per_task <= 20


def test_an_estimate_of_the_demo_writes_nothing(tmp_path: Path) -> None:
    params = prepare(BATCH, {"demo": 7, "batch_size": 3, "command": ["x"]}, tmp_path)
    assert BATCH.estimate(params).task_count == 3
    assert list(tmp_path.iterdir()) == []


BAD_FILES = {
    "a.png": "",
    "a.jpg": "",
    "b.txt": "",
    "batch.json": "",
    "batch_run.py": "",
    "script.py": "",
    "manifest.csv": "",
    "back\\slash.txt": "",
}
GOOD = {"folder": "data", "pattern": "b.txt", "command": UPPER_COMMAND}
BAD_PARAMETERS = [
    pytest.param({"command": UPPER_COMMAND}, "folder", id="neither-folder-nor-demo"),
    pytest.param({**GOOD, "demo": 3}, "demo", id="folder-and-demo"),
    pytest.param({**GOOD, "folder": "nope"}, "folder", id="folder-missing"),
    pytest.param({**GOOD, "demo": 0, "folder": None}, "demo", id="demo-0"),
    pytest.param({**GOOD, "pattern": "*.tiff"}, "pattern", id="nothing-matches"),
    pytest.param({**GOOD, "pattern": "sub/*.txt"}, "pattern", id="pattern-path"),
    pytest.param({**GOOD, "pattern": ""}, "pattern", id="pattern-empty"),
    pytest.param({**GOOD, "pattern": "batch.json"}, "folder", id="input-is-the-record"),
    pytest.param({**GOOD, "pattern": "batch_run.py"}, "folder", id="input-is-the-wrapper"),
    pytest.param(
        {**GOOD, "pattern": "script.py", "script": "data/batch_run.py"},
        "folder",
        id="input-is-script",
    ),
    pytest.param({**GOOD, "pattern": "back*"}, "folder", id="backslash"),
    pytest.param({**GOOD, "pattern": "a.*", "outputs": "{stem}.out"}, "folder", id="collide"),
    pytest.param({**GOOD, "pattern": "manifest.csv"}, "folder", id="output-is-manifest"),
    pytest.param({**GOOD, "outputs": "{stem}atch.json"}, "folder", id="output-is-the-record"),
    pytest.param({**GOOD, "outputs": "{base}.x"}, "outputs", id="outputs-unknown"),
    pytest.param({**GOOD, "outputs": "{suffix}.x"}, "outputs", id="outputs-no-name"),
    pytest.param({**GOOD, "outputs": ".{name}"}, "outputs", id="outputs-hidden"),
    pytest.param({**GOOD, "outputs": "{name}/x"}, "outputs", id="outputs-slash"),
    pytest.param({**GOOD, "outputs": "{name"}, "outputs", id="outputs-brace"),
    pytest.param({**GOOD, "command": ["x", "--in={inputs}"]}, "command", id="inputs-in-a-word"),
    pytest.param({**GOOD, "command": ["x", "{files}"]}, "command", id="unknown-placeholder"),
    pytest.param({**GOOD, "command": []}, "command", id="command-empty"),
    pytest.param({**GOOD, "command": None}, "command", id="command-missing"),
    pytest.param({**GOOD, "command": ["x", "{script}"]}, "script", id="script-placeholder"),
    pytest.param({**GOOD, "batch_size": 0}, "batch_size", id="batch-size-0"),
    pytest.param({**GOOD, "image": "two words"}, "image", id="image"),
    pytest.param({**GOOD, "memory_mb": 8}, "memory_mb", id="memory"),
]


@pytest.mark.parametrize(("raw", "key"), BAD_PARAMETERS)
def test_bad_parameters_raise_splitter_error_naming_the_key(
    raw: dict[str, Any], key: str, tmp_path: Path
) -> None:
    text_folder(tmp_path, BAD_FILES)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SplitterError) as caught:
        BATCH.split(prepare(BATCH, raw, tmp_path), workdir)
    assert caught.value.key == key, caught.value
    assert str(caught.value).startswith(f"{key}: ")
    assert list(workdir.iterdir()) == [], "nothing is written for a workflow that cannot run"


def test_the_clashing_files_and_the_fix_are_named(tmp_path: Path) -> None:
    text_folder(tmp_path, BAD_FILES)
    raw = {**GOOD, "pattern": "a.*", "outputs": "{stem}.out"}
    with pytest.raises(SplitterError) as caught:
        BATCH.estimate(prepare(BATCH, raw, tmp_path))
    assert "a.jpg, a.png would all write the output a.out" in caught.value.message
    assert "change outputs" in caught.value.message


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / os.fsdecode(b"bad\xff.txt")).write_text("x")
    with pytest.raises(SplitterError) as caught:
        BATCH.estimate(prepare(BATCH, {**GOOD, "pattern": "*.txt"}, tmp_path))
    assert caught.value.key == "folder"
    assert "UTF-8" in caught.value.message


def test_a_batch_too_long_for_a_command_line_asks_for_a_smaller_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_batch, "MAX_COMMAND_BYTES", 600)
    folder = text_folder(tmp_path, {f"{'long' * 10}-{i}.txt": "" for i in range(8)})
    raw = {"folder": folder, "batch_size": 8, "command": UPPER_COMMAND}
    with pytest.raises(SplitterError) as caught:
        BATCH.estimate(prepare(BATCH, raw, tmp_path))
    assert caught.value.key == "batch_size"
    assert BATCH.estimate(prepare(BATCH, {**raw, "batch_size": 1}, tmp_path)).task_count == 8


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = {"command": ["x", "{nope}"], "image": "", "demo": 2, "pattern": "*.png"}
    with pytest.raises(SplitterError) as caught:
        BATCH.estimate(prepare(BATCH, raw, tmp_path))
    assert [key for key, _ in caught.value.problems] == ["command", "image", "pattern"]


def batch_outputs(
    tmp_path: Path, batches: Mapping[int, list[str]], count: int
) -> dict[str, dict[str, Path]]:
    """Task outputs as the manager would hand them over: batch i wrote its listed outputs."""
    outputs: dict[str, dict[str, Path]] = {}
    for index, names in batches.items():
        files = [{"input": f"in-{name}", "output": name} for name in names]
        record = tmp_path / f"record-{index}.json"
        record.write_text(
            f'{{"batch": {index}, "count": {count}, "files": {files!r}}}'.replace("'", '"')
        )
        task_files = {"batch.json": record}
        for name in names:
            path = tmp_path / f"blob-{index}-{name}"
            path.write_text(name)
            task_files[name] = path
        outputs[f"batch-{index}"] = task_files
    return outputs


def test_merge_gathers_the_outputs_of_complete_batches(tmp_path: Path) -> None:
    merged = tmp_path / "merge"
    merged.mkdir()
    results = BATCH.merge(batch_outputs(tmp_path, {1: ["c"], 0: ["a", "b"]}, 2), merged)
    assert [path.name for path in results] == ["a", "b", "c", "manifest.csv"]
    assert (merged / "c").read_text() == "c"


def test_merge_names_a_missing_batch(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="missing the output of batch 1"):
        BATCH.merge(batch_outputs(tmp_path, {0: ["a"], 2: ["b"]}, 3), tmp_path)


def test_merge_names_a_missing_output(tmp_path: Path) -> None:
    outputs = batch_outputs(tmp_path, {0: ["a", "b"]}, 1)
    del outputs["batch-0"]["b"]
    with pytest.raises(MergeError, match=r"batch-0 produced no b \(for in-b\)"):
        BATCH.merge(outputs, tmp_path)


def test_merge_refuses_outputs_that_collide(tmp_path: Path) -> None:
    merged = tmp_path / "merge"
    merged.mkdir()
    with pytest.raises(MergeError, match="batch-0 and batch-1 both wrote a"):
        BATCH.merge(batch_outputs(tmp_path, {0: ["a"], 1: ["a"]}, 2), merged)


@pytest.mark.parametrize("name", ["../escape", ".hidden", "manifest.csv"])
def test_merge_writes_nothing_outside_plain_result_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="cannot be a result's name"):
        BATCH.merge(
            batch_outputs(tmp_path, {0: ["a"]}, 1) | _record_naming(tmp_path, name), tmp_path
        )


def _record_naming(tmp_path: Path, name: str) -> dict[str, dict[str, Path]]:
    record = tmp_path / "evil.json"
    record.write_text(
        '{"batch": 0, "count": 1, "files": [{"input": "x", "output": ' + f'"{name}"' + "}]}"
    )
    return {"batch-0": {"batch.json": record}}
