"""Reading a workflow file: `[workflow]` (name, type) and `[parameters]`, with `--set` overrides.

Errors name the key (and the line, where TOML gives one), so a person can go straight to it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from daemon.models import ResourceRequest
from splitters.api import DEFAULT_IMAGE, SplitterError

EXPLICIT_TYPE = "tasks"
DEFAULT_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class ExplicitTask:
    """A `[[tasks]]` entry: the user's own command, image and files."""

    name: str
    command: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    # Name under /input -> the file as written in the workflow (relative to it).
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    resources: ResourceRequest = field(default_factory=ResourceRequest)
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retries: int = 0
    depends_on: tuple[str, ...] = ()
    network: bool = False


@dataclass(frozen=True)
class WorkflowFile:
    name: str
    # A splitter's name, or "tasks" for a file that lists its tasks itself.
    type: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[ExplicitTask, ...] = ()

    def input_files(self) -> list[str]:
        """Every file the explicit tasks read, as written in the workflow file."""
        return sorted({source for task in self.tasks for source in task.inputs.values()})


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs; values stay strings, the splitter's schema types them."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SplitterError("--set", f"expected key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


def parse_workflow(text: str, overrides: Mapping[str, str] | None = None) -> WorkflowFile:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SplitterError("workflow file", f"not valid TOML: {error}") from None
    workflow = document.get("workflow")
    if not isinstance(workflow, dict):
        raise SplitterError("workflow", "missing the [workflow] table (with name and type)")
    unknown = sorted(set(document) - {"workflow", "parameters", "tasks"})
    if unknown:
        raise SplitterError(
            unknown[0], "unknown table; expected [workflow], [parameters] or [[tasks]]"
        )
    if "tasks" in document:
        tasks = _parse_tasks(document["tasks"])
        name = workflow.get("name", "tasks")
        if not isinstance(name, str) or not name.strip():
            raise SplitterError("workflow.name", "must be a non-empty string")
        return WorkflowFile(name=name.strip(), type=EXPLICIT_TYPE, tasks=tasks)
    workflow_type = workflow.get("type")
    if not isinstance(workflow_type, str) or not workflow_type:
        raise SplitterError(
            "workflow.type",
            "missing: name a workflow type (e.g. matrix_multiplication) or list [[tasks]]",
        )
    name = workflow.get("name", workflow_type)
    if not isinstance(name, str) or not name.strip():
        raise SplitterError("workflow.name", "must be a non-empty string")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise SplitterError("parameters", "must be a table")
    return WorkflowFile(
        name=name.strip(), type=workflow_type, parameters={**parameters, **(overrides or {})}
    )


_TASK_KEYS = {
    "name", "command", "image", "inputs", "outputs", "resources", "timeout", "retries",
    "depends_on", "network",
}  # fmt: skip
_RESOURCE_KEYS = {"cpus", "memory_mb", "disk_mb", "gpus"}


def _parse_tasks(entries: Any) -> tuple[ExplicitTask, ...]:
    if not isinstance(entries, list) or not entries:
        raise SplitterError("tasks", "must be a non-empty array of tables ([[tasks]])")
    tasks = [_parse_task(index, entry) for index, entry in enumerate(entries)]
    names = [task.name for task in tasks]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise SplitterError(f"tasks[{index}].name", f"{name!r} is used by two tasks")
    for index, task in enumerate(tasks):
        for dependency in task.depends_on:
            if dependency not in names:
                raise SplitterError(
                    f"tasks[{index}].depends_on", f"no task is named {dependency!r}"
                )
    cycle = _find_cycle(tasks)
    if cycle:
        raise SplitterError("depends_on", "cycle: " + " -> ".join(cycle))
    return tuple(tasks)


def _parse_task(index: int, entry: Any) -> ExplicitTask:
    where = f"tasks[{index}]"
    if not isinstance(entry, dict):
        raise SplitterError(where, "must be a table")
    unknown = sorted(set(entry) - _TASK_KEYS)
    if unknown:
        raise SplitterError(
            f"{where}.{unknown[0]}", f"unknown key; known: {', '.join(sorted(_TASK_KEYS))}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SplitterError(f"{where}.name", "required: letters, digits, '-' and '_' only")
    command = entry.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        raise SplitterError(f"{where}.command", "required: a non-empty list of strings (argv)")
    return ExplicitTask(
        name=name,
        command=tuple(command),
        image=_string(entry, "image", where, DEFAULT_IMAGE),
        inputs=_inputs(entry.get("inputs", []), f"{where}.inputs"),
        outputs=tuple(_names(entry.get("outputs", []), f"{where}.outputs")),
        resources=_resources(entry.get("resources", {}), f"{where}.resources"),
        timeout_seconds=_positive_int(entry, "timeout", where, DEFAULT_TIMEOUT_SECONDS),
        retries=_positive_int(entry, "retries", where, 0, allow_zero=True),
        depends_on=tuple(_names(entry.get("depends_on", []), f"{where}.depends_on")),
        network=_boolean(entry, "network", where),
    )


def _string(entry: dict[str, Any], key: str, where: str, default: str) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise SplitterError(f"{where}.{key}", "must be a non-empty string")
    return value


def _boolean(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise SplitterError(f"{where}.{key}", "must be true or false")
    return value


def _positive_int(
    entry: dict[str, Any], key: str, where: str, default: int, allow_zero: bool = False
) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise SplitterError(
            f"{where}.{key}", f"must be a whole number {'>= 0' if allow_zero else '> 0'}"
        )
    return value


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SplitterError(key, "must be a list of names")
    for name in value:
        if "/" in name or name in (".", ".."):
            raise SplitterError(key, f"{name!r} is not a plain file name")
    return value


def _inputs(value: Any, key: str) -> dict[str, str]:
    """A list of paths (each under its own file name) or a table of name = path."""
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        pairs = {PurePosixPath(v).name: v for v in value}
        if len(pairs) != len(value):
            raise SplitterError(key, "two inputs have the same file name; use a table name = path")
    elif isinstance(value, dict) and all(isinstance(v, str) and v for v in value.values()):
        pairs = dict(value)
    else:
        raise SplitterError(key, "must be a list of paths or a table of name = path")
    _names(list(pairs), key)
    return pairs


def _resources(value: Any, key: str) -> ResourceRequest:
    if not isinstance(value, dict):
        raise SplitterError(key, "must be a table (cpus, memory_mb, disk_mb, gpus)")
    unknown = sorted(set(value) - _RESOURCE_KEYS)
    if unknown:
        raise SplitterError(f"{key}.{unknown[0]}", "unknown; known: cpus, memory_mb, disk_mb, gpus")
    cpus = value.get("cpus", 1.0)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
        raise SplitterError(f"{key}.cpus", "must be a number > 0")
    whole = {}
    for name, default in (("memory_mb", 256), ("disk_mb", 0), ("gpus", 0)):
        number = value.get(name, default)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise SplitterError(f"{key}.{name}", "must be a whole number >= 0")
        whole[name] = number
    return ResourceRequest(cpus=float(cpus), **whole)


def _find_cycle(tasks: list[ExplicitTask]) -> list[str]:
    """A dependency cycle as a path of names, or [] when there is none."""
    depends = {task.name: task.depends_on for task in tasks}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for dependency in depends[name]:
            if state.get(dependency) == 1:
                return [*path[path.index(dependency) :], dependency]
            if dependency not in state and (found := visit(dependency)):
                return found
        path.pop()
        state[name] = 2
        return []

    for task in tasks:
        if task.name not in state and (found := visit(task.name)):
            return found
    return []
