"""The splitter plugin API: what a workflow type implements, and how its parameters are checked.

A splitter turns a workflow's parameters into tasks (`split`), the outputs of those tasks into
result files (`merge`), and says beforehand what the tasks will ask for (`estimate`). The
manager runs split and merge; each task runs in a container on some volunteer, seeing its
inputs read-only at /input/<name> and writing its declared outputs to /output/<name>.

Some tasks run on two volunteers, and the manager asks the splitter whether the two copies
of an output agree (`equivalent`); `same_bytes` is the comparison of outputs that must match
byte for byte, and splitters/equivalence.py has those of arrays and JSON (it imports numpy).

This module imports no numpy: daemons without the manager role load the registry too.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from daemon.errors import InvalidInputError, NodeError

# One record for "what a task asks for" across the codebase: the scheduler and the
# volunteer policy read the very type that splitters fill in.
from daemon.models import ResourceRequest
from daemon.task_files import PROGRESS_FILE, file_name_problem

__all__ = [
    "DEFAULT_IMAGE",
    "PROGRESS_FILE",
    "Directory",
    "Estimate",
    "MergeError",
    "Parameter",
    "ResourceRequest",
    "Splitter",
    "SplitterError",
    "TaskOutput",
    "TaskTemplate",
    "outputs_agree",
    "same_bytes",
    "validate_parameters",
]

# Bytes compared at a time by same_bytes.
COMPARE_CHUNK_BYTES = 1024 * 1024

# The generic worker image: python3 + numpy 1.24 (Debian bookworm); built by `make image`.
DEFAULT_IMAGE = "vcnode/worker:1"


MAX_LISTED_PROBLEMS = 10


class SplitterError(InvalidInputError):
    """A workflow's parameters cannot be used; `key` names the one to fix. One error may
    carry several problems (`combine`), so a person sees every one in one go."""

    exit_code = 2

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.problems: tuple[tuple[str, str], ...] = ((key, message),)

    @classmethod
    def combine(cls, errors: Sequence[SplitterError]) -> SplitterError:
        """One error listing every problem of `errors`, in order."""
        if not errors:
            raise ValueError("nothing to combine")
        problems = tuple(problem for error in errors for problem in error.problems)
        combined = cls(*problems[0])
        combined.problems = problems
        # A refusal stays readable (and fits a gRPC status) however many problems it has.
        listed = [f"{key}: {message}" for key, message in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS:,} more problems")
        combined.args = ("\n".join(listed),)
        return combined


class MergeError(NodeError):
    """The tasks' outputs do not add up to a result (missing or inconsistent files)."""


T = TypeVar("T")
log = logging.getLogger(__name__)


def run_step(splitter: Splitter, step: str, call: Callable[[], T]) -> T:
    """Runs one step (split, merge, estimate) of a splitter's own code. What it raises on
    purpose (SplitterError, MergeError: NodeErrors) passes as it is; anything else is a bug
    of that splitter's, logged with its traceback and turned into a SplitterError naming it,
    so that it fails the one workflow concerned and never the manager or the CLI."""
    try:
        return call()
    except NodeError:
        raise
    except Exception as error:
        log.error("splitter %s: %s raised", splitter.name, step, exc_info=error)
        raise SplitterError(
            f"{splitter.name} {step}", f"the splitter failed: {type(error).__name__}: {error}"
        ) from error


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, read a chunk at a time; False (logged at
    debug) when either cannot be read. (Not filecmp.cmp: its cache of results, kept for
    the life of the process, would grow with every pair a long-running manager compares.)"""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as one, b.open("rb") as other:
            while True:
                chunk = one.read(COMPARE_CHUNK_BYTES)
                if chunk != other.read(COMPARE_CHUNK_BYTES):
                    return False
                if not chunk:
                    return True
    except OSError as error:
        log.debug("cannot compare %s with %s: %s", a, b, error)
        return False


def outputs_agree(splitter: Splitter, output: str, a: Path, b: Path) -> bool:
    """`splitter.equivalent(output, a, b)`, safe to call with any splitter: one without
    the method (a plugin written before it) has its copies compared byte for byte, and one
    whose method raises (a bug of its own: it must not) is logged with its traceback and
    taken to say that they disagree."""
    compare = getattr(splitter, "equivalent", None)
    if compare is None:
        return same_bytes(a, b)
    try:
        return bool(compare(output, a, b))
    except Exception as error:
        log.error("splitter %s: equivalent raised on %s", splitter.name, output, exc_info=error)
        return False


def _check_plain_name(name: str, what: str) -> None:
    # The volunteer refuses anything else, so a splitter finds out here, at split time.
    if (problem := file_name_problem(name)) is not None:
        raise ValueError(f"{what} name {name!r} {problem}")


@dataclass(frozen=True)
class TaskOutput:
    """An input that is another task's output, e.g. a model that the previous round's
    averaging task wrote. The task must depend on `task`; the manager fills the file in
    once `task` completed, and the volunteer fetches it from the manager like any input."""

    task: str  # a task name of the same workflow
    output: str  # one of that task's declared outputs


@dataclass(frozen=True)
class TaskTemplate:
    """One task as a splitter describes it; the manager gives it an id and content hashes.

    `command` runs in `image` with the working directory /tmp; words that start with /input
    or /output are rewritten for the process runtime, so write paths that way.
    """

    name: str  # unique within the workflow
    command: tuple[str, ...]
    # Name under /input -> the local file (in the workdir) that becomes it, or the output
    # of a task this one depends on.
    inputs: Mapping[str, Path | TaskOutput]
    outputs: tuple[str, ...]
    resources: ResourceRequest
    timeout_seconds: int
    image: str = DEFAULT_IMAGE
    depends_on: tuple[str, ...] = ()  # names of other tasks of the same workflow
    retries: int = 0

    def __post_init__(self) -> None:
        _check_plain_name(self.name, "task")
        if "~" in self.name:  # the manager names a task's copies `<task>~<n>`
            raise ValueError(f"task name {self.name!r} holds '~', which names a task's copies")
        if not self.command:
            raise ValueError(f"task {self.name} has an empty command")
        for input_name, source in self.inputs.items():
            _check_plain_name(input_name, f"task {self.name} input")
            if isinstance(source, TaskOutput) and source.task not in self.depends_on:
                raise ValueError(
                    f"task {self.name} reads {source.output} of {source.task}"
                    f" but does not depend on {source.task}"
                )
        for output_name in self.outputs:
            _check_plain_name(output_name, f"task {self.name} output")
        if self.timeout_seconds <= 0:
            raise ValueError(f"task {self.name} needs a positive timeout")
        if self.retries < 0:
            raise ValueError(f"task {self.name} cannot have negative retries")


@dataclass(frozen=True)
class Estimate:
    """What a workflow will ask of the pool, before anything is written."""

    task_count: int
    resources: ResourceRequest  # per task
    seconds_per_task: float


class Directory:
    """A parameter type: an existing folder (its files travel with the workflow). The
    validated value is a Path."""


# Types a parameter may have. `Path` means an existing file, `Directory` an existing folder:
# relative paths are taken from the workflow file's directory. `list` and `dict` take TOML
# arrays and tables (from `--set`, written as TOML: `--set grid={alpha=[1,2]}`).
PARAMETER_TYPES: tuple[type, ...] = (int, float, bool, str, Path, Directory, list, dict)


@dataclass(frozen=True)
class Parameter:
    """One key a splitter understands. Without a default and not required, it is None when
    absent: the splitter decides what absence means (e.g. `a` or `size`)."""

    name: str
    type: type
    help: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in PARAMETER_TYPES:
            raise ValueError(f"parameter {self.name}: unsupported type {self.type.__name__}")
        if self.required and self.default is not None:
            raise ValueError(f"parameter {self.name}: required parameters have no default")


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "an array, e.g. [1, 2, 3]",
    dict: "a table, e.g. {alpha = [1, 2]}",
}


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(parameter: Parameter, value: object, base_dir: Path) -> Any:
    """The value as the parameter's type; strings (from `--set key=value`) are parsed."""
    key, kind = parameter.name, parameter.type
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind is int:
        # bool is an int to Python, never to a person writing a workflow.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is not None:
            if not math.isfinite(number):
                raise SplitterError(key, f"must be a finite number, got {value!r}")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is Path or kind is Directory:
        return _existing_path(key, value, base_dir, folder=kind is Directory)
    elif kind is list or kind is dict:
        if isinstance(value, str):
            value = _parse_toml_value(value)
        if isinstance(value, kind):
            return value
    raise SplitterError(key, f"expected {_TYPE_WORDS[kind]}, got {_describe(value)}")


def _existing_path(key: str, value: object, base_dir: Path, folder: bool) -> Path:
    what = "folder" if folder else "file"
    if not isinstance(value, str | Path) or not str(value).strip():
        raise SplitterError(key, f"expected a {what} path, got {_describe(value)}")
    path = Path(str(value).strip()).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not (path.is_dir() if folder else path.is_file()):
        raise SplitterError(key, f"no such {what}: {path}")
    return path


def _parse_toml_value(text: str) -> object:
    """A `--set` value written as TOML (`[1, 2]`, `{a = 1}`); the text itself if it is not."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _check_value(parameter: Parameter, value: Any) -> None:
    key = parameter.name
    if parameter.choices and value not in parameter.choices:
        allowed = ", ".join(str(choice) for choice in parameter.choices)
        raise SplitterError(key, f"must be one of {allowed}, got {value!r}")
    if parameter.minimum is not None and value < parameter.minimum:
        raise SplitterError(key, f"must be at least {parameter.minimum:g}, got {value!r}")
    if parameter.maximum is not None and value > parameter.maximum:
        raise SplitterError(key, f"must be at most {parameter.maximum:g}, got {value!r}")


def validate_parameters(
    schema: tuple[Parameter, ...], raw: Mapping[str, Any], base_dir: Path
) -> dict[str, Any]:
    """Every key of `schema`, coerced and checked; absent optional ones get their default.

    Raises SplitterError naming every key that is unknown, missing, of the wrong type or
    out of range. A None value counts as absent (JSON has null, TOML does not).
    """
    by_name = {parameter.name: parameter for parameter in schema}
    problems: list[SplitterError] = []
    for key in raw:
        if key not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(
                SplitterError(key, f"unknown parameter (this workflow type takes: {known})")
            )
    params: dict[str, Any] = {}
    for parameter in schema:
        value = raw.get(parameter.name)
        if value is None:
            if parameter.required:
                problems.append(SplitterError(parameter.name, f"required: {parameter.help}"))
            params[parameter.name] = parameter.default
            continue
        try:
            coerced = _coerce(parameter, value, base_dir)
            _check_value(parameter, coerced)
        except SplitterError as error:
            problems.append(error)
            continue
        params[parameter.name] = coerced
    if problems:
        raise SplitterError.combine(problems)
    return params


class Splitter(Protocol):
    """A workflow type. `params` below are what `validate_parameters(parameters, ...)`
    returned; a splitter checks what one key cannot say alone (shapes, grid sizes) itself
    and raises SplitterError naming the key to fix."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    # Parameter values for the file `node init` writes, on top of the defaults; with them
    # the workflow runs as written (e.g. a small generated instance).
    example: Mapping[str, Any]

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        """Writes the tasks' input files into `workdir` and describes the tasks."""
        ...

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        """Task name -> output name -> local file, for every task; returns the result files
        it wrote into `workdir`. Raises MergeError when the outputs do not fit together."""
        ...

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        """Task count, per-task resources and a rough time, without writing anything."""
        ...

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Whether two copies of the task output named `output`, run on two volunteers,
        agree (result validation by replication). Called only when their bytes differ (the
        caller compares hashes first), on a worker thread, with files that may be large and
        come from anyone: stream or memory-map them, and return False, never raise, for a
        truncated or malformed copy. Say in the docstring why this splitter's outputs may
        differ legitimately and what tolerance that earns; with no reason, `same_bytes`."""
        ...
