"""Runs a splitter's workflow on this machine, for unit tests of splitters: split, run every
task's real command in dependency order, merge.

Tasks run as plain subprocesses of this Python, the way the process runtime runs them:
argv words under /input and /output point at per-task directories, and VCNODE_INPUT /
VCNODE_OUTPUT say where those are. Inputs that are another task's output (`TaskOutput`)
are copied from that task's output directory, as the manager and a transfer would.
This is the arithmetic of the splitter, not the mesh: the mesh is tested in
tests/integration with real daemons and Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.runtime.spec import read_progress
from splitters.api import Splitter, TaskOutput, TaskTemplate, validate_parameters


def rewrite_paths(word: str, input_dir: Path, output_dir: Path) -> str:
    """An argv word under /input or /output, pointed at the task's own directories."""
    for prefix, real in (("/input", input_dir), ("/output", output_dir)):
        if word == prefix or word.startswith(prefix + "/"):
            return str(real) + word[len(prefix) :]
    return word


@dataclass(frozen=True)
class LocalRun:
    tasks: list[TaskTemplate]
    outputs: dict[str, dict[str, Path]]  # task name -> output name -> file
    results: list[Path]  # what merge returned
    workdir: Path


def prepare(splitter: Splitter, raw: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    return validate_parameters(splitter.parameters, raw, base_dir)


def in_dependency_order(tasks: list[TaskTemplate]) -> list[TaskTemplate]:
    by_name = {task.name: task for task in tasks}
    ordered: list[TaskTemplate] = []
    done: set[str] = set()

    def visit(task: TaskTemplate, path: tuple[str, ...]) -> None:
        assert task.name not in path, f"dependency cycle through {task.name}"
        if task.name in done:
            return
        for dependency in task.depends_on:
            assert dependency in by_name, f"{task.name} depends on unknown {dependency}"
            visit(by_name[dependency], (*path, task.name))
        done.add(task.name)
        ordered.append(task)

    for task in tasks:
        visit(task, ())
    return ordered


def run_task(
    task: TaskTemplate,
    root: Path,
    finished: Mapping[str, Mapping[str, Path]],
    expect_progress: bool = True,
) -> dict[str, Path]:
    """Runs the task's command for real; its declared outputs by name."""
    input_dir = root / task.name / "input"
    output_dir = root / task.name / "output"
    input_dir.mkdir(parents=True)
    output_dir.mkdir(parents=True)
    for name, source in task.inputs.items():
        if isinstance(source, TaskOutput):
            assert source.task in task.depends_on
            path = finished[source.task][source.output]
        else:
            path = source
        shutil.copyfile(path, input_dir / name)  # as a transfer would: a copy, by name
    assert task.command[0] == "python3", "local runs only run python3 commands"
    argv = [
        sys.executable,
        *(rewrite_paths(word, input_dir, output_dir) for word in task.command[1:]),
    ]
    env = {**os.environ, "VCNODE_INPUT": str(input_dir), "VCNODE_OUTPUT": str(output_dir)}
    result = subprocess.run(
        argv, env=env, cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{task.name} failed:\n{result.stderr}"
    if expect_progress:
        assert read_progress(output_dir) == 100.0, f"{task.name} did not report completion"
    outputs = {name: output_dir / name for name in task.outputs}
    for name, path in outputs.items():
        assert path.is_file(), f"{task.name} did not write {name}"
    return outputs


def run_locally(
    splitter: Splitter, raw: Mapping[str, Any], tmp_path: Path, expect_progress: bool = True
) -> LocalRun:
    """Split into tmp_path/work, run every task, merge into tmp_path/merge."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    tasks = splitter.split(prepare(splitter, raw, tmp_path), workdir)
    outputs: dict[str, dict[str, Path]] = {}
    for task in in_dependency_order(tasks):
        outputs[task.name] = run_task(task, tmp_path / "runs", outputs, expect_progress)
    merge_dir = tmp_path / "merge"
    merge_dir.mkdir()
    results = splitter.merge(outputs, merge_dir)
    return LocalRun(tasks, outputs, results, workdir)
