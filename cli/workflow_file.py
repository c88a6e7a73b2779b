"""Reading a workflow file on the client: its text, its local input files, and `node
validate`, which reports every problem in one go, each pointing at its line."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from cli.problems import with_lines
from daemon.errors import InvalidInputError, NodeError
from splitters.api import Directory, SplitterError, run_step, validate_parameters
from splitters.registry import get_splitter
from workflows.file import EXPLICIT_TYPE, WorkflowFile, parse_overrides, parse_workflow


def resolve_input(value: str, workflow_dir: Path, key: str, folder: bool = False) -> Path:
    """Relative paths are looked up beside the workflow file, then in the current dir."""
    path = Path(value).expanduser()
    exists = Path.is_dir if folder else Path.is_file
    for candidate in [path] if path.is_absolute() else [workflow_dir / path, Path.cwd() / path]:
        if exists(candidate):
            return candidate
    what = "folder" if folder else "file"
    raise SplitterError(key, f"{what} {value} not found (looked beside the workflow file and in .)")


def read_workflow(args: argparse.Namespace) -> tuple[str, dict[str, str], WorkflowFile]:
    """The workflow file's text, the `--set` overrides, and the parsed workflow."""
    workflow_path: Path = args.workflow
    try:
        text = workflow_path.read_text(encoding="utf-8")
    except OSError as error:
        raise NodeError(f"cannot read workflow file {workflow_path}: {error.strerror}") from None
    with located(text, workflow_path):
        overrides = parse_overrides(args.set or [])
        return text, overrides, parse_workflow(text, overrides)


@contextlib.contextmanager
def located(text: str, path: Path) -> Iterator[None]:
    """Bad-input errors raised inside, from here or from the manager, point into the file."""
    try:
        yield
    except InvalidInputError as error:
        raise with_lines(error, text, path) from None


def folder_files(folder: Path) -> list[Path]:
    """The files of a folder parameter that travel: regular, not hidden, not in subfolders."""
    return sorted(
        path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
    )


def _resolve_all(
    workflow: WorkflowFile, workflow_dir: Path
) -> tuple[dict[str, Path], list[SplitterError]]:
    """Each file or folder the workflow names, by the name the manager knows it under (the
    path as written for `[[tasks]]`, the parameter's name for a splitter), and a problem
    for each one that is missing."""
    if workflow.type == EXPLICIT_TYPE:
        wanted = [(source, source, "inputs", False) for source in workflow.input_files()]
    else:
        wanted = [
            (parameter.name, str(value), parameter.name, parameter.type is Directory)
            for parameter in get_splitter(workflow.type).parameters
            if parameter.type in (Path, Directory)
            and (value := workflow.parameters.get(parameter.name)) is not None
        ]
    resolved: dict[str, Path] = {}
    problems: list[SplitterError] = []
    for name, value, key, folder in wanted:
        try:
            resolved[name] = resolve_input(value, workflow_dir, key, folder)
        except SplitterError as error:
            problems.append(error)
    return resolved, problems


def local_files(workflow: WorkflowFile, workflow_dir: Path) -> list[tuple[str, Path]]:
    """The files to upload with the workflow, by the name the manager knows them under;
    a folder parameter's files as `name/file`. Every missing one is reported."""
    resolved, problems = _resolve_all(workflow, workflow_dir)
    if problems:
        raise SplitterError.combine(problems)
    files: list[tuple[str, Path]] = []
    for name, path in resolved.items():
        if path.is_dir():
            files += [(f"{name}/{file.name}", file) for file in folder_files(path)]
        else:
            files.append((name, path))
    return files


def check_locally(workflow: WorkflowFile, workflow_dir: Path) -> int:
    """What `node validate` checks without a manager: every parameter, every file, and the
    split's size; the task count, or SplitterError listing every problem."""
    resolved, problems = _resolve_all(workflow, workflow_dir)
    if workflow.type == EXPLICIT_TYPE:
        if problems:
            raise SplitterError.combine(problems)
        return len(workflow.tasks)
    splitter = get_splitter(workflow.type)
    raw = {**workflow.parameters, **{name: str(path) for name, path in resolved.items()}}
    missing = {key for error in problems for key, _ in error.problems}
    try:
        params = validate_parameters(splitter.parameters, raw, workflow_dir)
    except SplitterError as error:
        # A file reported missing above is not reported again as "no such file".
        problems += [
            SplitterError(key, message) for key, message in error.problems if key not in missing
        ]
    if problems:
        raise SplitterError.combine(problems)
    task_count = run_step(splitter, "estimate", lambda: splitter.estimate(params)).task_count
    if task_count == 0:
        raise SplitterError("parameters", "the split would produce no tasks")
    return task_count


def validate(args: argparse.Namespace) -> int:
    """`node validate`: checks a workflow file here, without a manager; submits nothing."""
    text, _, workflow = read_workflow(args)
    with located(text, args.workflow):
        task_count = check_locally(workflow, args.workflow.parent)
    if args.json:
        print(json.dumps({"valid": True, "type": workflow.type, "tasks": task_count}, indent=2))
    else:
        print(f"{args.workflow}: valid, {task_count} tasks ({workflow.type})")
    return 0
