"""Reading a workflow file: `[workflow]` (name, type) and `[parameters]`, with `--set` overrides.

Errors name the key (and the line, where TOML gives one), so a person can go straight to it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

from daemon.models import ResourceRequest
from daemon.task_files import file_name_problem
from splitters.api import DEFAULT_IMAGE, SplitterError, TaskOutput
from workflows.graph import OnFailure, UpstreamInput, graph_problems
from workflows.validation_policy import POLICY_KEYS, ValidationPolicy, parse_policy

T = TypeVar("T")
EXPLICIT_TYPE = "tasks"
DEFAULT_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class ExplicitTask:
    """A `[[tasks]]` entry: the user's own command, image and files."""

    name: str
    command: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    # Name under /input -> the file as written in the workflow (relative to it), or an
    # output of another task (which this one then depends on).
    inputs: dict[str, str | TaskOutput] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    resources: ResourceRequest = field(default_factory=ResourceRequest)
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retries: int = 0
    depends_on: tuple[str, ...] = ()
    network: bool = False
    # How its results are checked, when it says more than its workflow does.
    validation: ValidationPolicy | None = None

    @property
    def upstream(self) -> tuple[UpstreamInput, ...]:
        """The inputs this task reads from the outputs of others."""
        return tuple(
            UpstreamInput(name, source.task, source.output)
            for name, source in self.inputs.items()
            if isinstance(source, TaskOutput)
        )


@dataclass(frozen=True)
class WorkflowFile:
    name: str
    # A splitter's name, or "tasks" for a file that lists its tasks itself.
    type: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[ExplicitTask, ...] = ()
    on_failure: OnFailure = OnFailure.SKIP
    validation: ValidationPolicy = field(default_factory=ValidationPolicy)

    def input_files(self) -> list[str]:
        """Every file the explicit tasks read, as written in the workflow file."""
        return sorted(
            {
                source
                for task in self.tasks
                for source in task.inputs.values()
                if isinstance(source, str)
            }
        )


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs; values stay strings, the splitter's schema types them."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SplitterError("--set", f"expected key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


class _Problems:
    """Collects every problem of a file, so a person fixes them in one pass, not one a run."""

    def __init__(self) -> None:
        self.errors: list[SplitterError] = []

    def add(self, key: str, message: str) -> None:
        self.errors.append(SplitterError(key, message))

    def check(self, parse: Callable[[], T], fallback: T) -> T:
        try:
            return parse()
        except SplitterError as error:
            self.errors.append(error)
            return fallback

    def raise_any(self) -> None:
        if self.errors:
            raise SplitterError.combine(self.errors)


def parse_workflow(text: str, overrides: Mapping[str, str] | None = None) -> WorkflowFile:
    """The workflow file; SplitterError listing every problem found (each with its key)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SplitterError("workflow file", f"not valid TOML: {error}") from None
    problems = _Problems()
    workflow = document.get("workflow")
    if not isinstance(workflow, dict):
        problems.add("workflow", "missing the [workflow] table (with name and type)")
        workflow = {}
    for unknown in sorted(set(document) - {"workflow", "parameters", "tasks"}):
        problems.add(unknown, "unknown table; expected [workflow], [parameters] or [[tasks]]")
    for unknown in sorted(set(workflow) - _WORKFLOW_KEYS):
        problems.add(
            f"workflow.{unknown}", f"unknown key; known: {', '.join(sorted(_WORKFLOW_KEYS))}"
        )
    on_failure = problems.check(lambda: _on_failure(workflow), OnFailure.SKIP)
    validation = problems.check(lambda: parse_policy(workflow, "workflow"), ValidationPolicy())
    if "tasks" in document:
        tasks = _parse_tasks(document["tasks"], problems, validation)
        name = workflow.get("name", "tasks")
        if not isinstance(name, str) or not name.strip():
            problems.add("workflow.name", "must be a non-empty string")
        problems.raise_any()
        return WorkflowFile(
            name=str(name).strip(),
            type=EXPLICIT_TYPE,
            tasks=tasks,
            on_failure=on_failure,
            validation=validation,
        )
    workflow_type = workflow.get("type")
    if not isinstance(workflow_type, str) or not workflow_type:
        problems.add(
            "workflow.type",
            "missing: name a workflow type (e.g. matrix_multiplication) or list [[tasks]]",
        )
    name = workflow.get("name", workflow_type)
    if "workflow" in document and (not isinstance(name, str) or not name.strip()):
        problems.add("workflow.name", "must be a non-empty string")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.add("parameters", "must be a table")
    problems.raise_any()
    return WorkflowFile(
        name=str(name).strip(),
        type=str(workflow_type),
        parameters={**parameters, **(overrides or {})},
        on_failure=on_failure,
        validation=validation,
    )


_WORKFLOW_KEYS = {"name", "type", "on_failure", *POLICY_KEYS}


def _on_failure(workflow: dict[str, Any]) -> OnFailure:
    value = workflow.get("on_failure", OnFailure.SKIP.value)
    choices = [choice.value for choice in OnFailure]
    if value not in choices:
        raise SplitterError(
            "workflow.on_failure",
            f"must be one of {', '.join(choices)} (what a failed task does to its dependents)",
        )
    return OnFailure(value)


_TASK_KEYS = {
    "name", "command", "image", "inputs", "outputs", "resources", "timeout", "retries",
    "depends_on", "network", *POLICY_KEYS,
}  # fmt: skip
_RESOURCE_KEYS = {"cpus", "memory_mb", "disk_mb", "gpus"}


def _parse_tasks(
    entries: Any, problems: _Problems, validation: ValidationPolicy
) -> tuple[ExplicitTask, ...]:
    if not isinstance(entries, list) or not entries:
        problems.add("tasks", "must be a non-empty array of tables ([[tasks]])")
        return ()
    parsed = [
        _parse_task(index, entry, problems, validation) for index, entry in enumerate(entries)
    ]
    tasks = [task for task in parsed if task is not None]
    if len(tasks) == len(parsed):  # the graph of a partly unreadable file says little
        where = {task.name: f"tasks[{index}]" for index, task in enumerate(tasks)}
        outputs = {task.name: task.outputs for task in tasks}
        for subject, problem in graph_problems(tasks, outputs):
            problems.add(f"{where[subject]}.depends_on" if subject else "tasks", problem)
    return tuple(tasks)


def _parse_task(
    index: int, entry: Any, problems: _Problems, validation: ValidationPolicy
) -> ExplicitTask | None:
    where = f"tasks[{index}]"
    if not isinstance(entry, dict):
        problems.add(where, "must be a table")
        return None
    before = len(problems.errors)
    for unknown in sorted(set(entry) - _TASK_KEYS):
        problems.add(f"{where}.{unknown}", f"unknown key; known: {', '.join(sorted(_TASK_KEYS))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        problems.add(f"{where}.name", "required: letters, digits, '-' and '_' only")
    command = entry.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        problems.add(f"{where}.command", "required: a non-empty list of strings (argv)")
    no_inputs: dict[str, str | TaskOutput] = {}
    inputs = problems.check(lambda: _inputs(entry.get("inputs", []), f"{where}.inputs"), no_inputs)
    task = ExplicitTask(
        name=str(name),
        command=tuple(command or ()),
        image=problems.check(lambda: _string(entry, "image", where, DEFAULT_IMAGE), ""),
        inputs=inputs,
        outputs=tuple(
            problems.check(lambda: _names(entry.get("outputs", []), f"{where}.outputs"), [])
        ),
        resources=problems.check(
            lambda: _resources(entry.get("resources", {}), f"{where}.resources"),
            ResourceRequest(),
        ),
        timeout_seconds=problems.check(
            lambda: _positive_int(entry, "timeout", where, DEFAULT_TIMEOUT_SECONDS), 1
        ),
        retries=problems.check(
            lambda: _positive_int(entry, "retries", where, 0, allow_zero=True), 0
        ),
        depends_on=problems.check(lambda: _depends_on(entry, inputs, where), ()),
        network=problems.check(lambda: _boolean(entry, "network", where), False),
        validation=problems.check(
            lambda: parse_policy(entry, where, validation) if POLICY_KEYS & set(entry) else None,
            None,
        ),
    )
    return task if len(problems.errors) == before else None


def _depends_on(
    entry: dict[str, Any], inputs: dict[str, str | TaskOutput], where: str
) -> tuple[str, ...]:
    """As written, plus every task whose output this one reads: reading implies waiting."""
    written = _names(entry.get("depends_on", []), f"{where}.depends_on")
    producers = [s.task for s in inputs.values() if isinstance(s, TaskOutput)]
    return tuple(dict.fromkeys([*written, *producers]))


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
        if (problem := file_name_problem(name)) is not None:
            raise SplitterError(key, f"{name!r} {problem}")
    return value


def _inputs(value: Any, key: str) -> dict[str, str | TaskOutput]:
    """A list of paths (each under its own file name), or a table of name = path or
    name = { task = "other", output = "file" } for another task's output."""
    pairs: dict[str, str | TaskOutput]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        pairs = {PurePosixPath(v).name: v for v in value}
        if len(pairs) != len(value):
            raise SplitterError(key, "two inputs have the same file name; use a table name = path")
    elif isinstance(value, dict):
        pairs = {name: _input_source(source, f"{key}.{name}") for name, source in value.items()}
    else:
        raise SplitterError(key, "must be a list of paths or a table of name = path")
    _names(list(pairs), key)
    return pairs


def _input_source(value: Any, key: str) -> str | TaskOutput:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and set(value) == {"task", "output"}:
        task, output = value["task"], value["output"]
        if isinstance(task, str) and task and isinstance(output, str) and output:
            return TaskOutput(task, output)
    raise SplitterError(
        key, 'must be a path, or { task = "name", output = "file" } for another task\'s output'
    )


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
