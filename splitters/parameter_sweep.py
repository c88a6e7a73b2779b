"""A parameter sweep: a command template times a grid of parameter values, one task per
point, every point's result gathered into one table.

The command is an argv list whose words may hold `{name}` placeholders for the grid's
parameters and `{index}` for the point's number (see splitters/templating.py: values go in
as text, booleans as true/false, `{{`/`}}` are literal braces). `cartesian` mode runs every
combination of the lists (the last parameter varying fastest), `zip` pairs them element by
element. Each task writes one file, `output`, under /output.

How merge learns the points: it is given the tasks' outputs and nothing else, so each task
carries its own point. The split writes the point as a small JSON record, ships it as the
input point.json, and runs the user's command through the stdlib wrapper batch_run.py,
which copies the record to /output/point.json (a second declared output) once the command
succeeded. Encoding the point in task names would not survive arbitrary string values, and
a fan-in task to carry the grid would spend a volunteer on bookkeeping. The cost: the image
needs python3 on its PATH, as the generic image (Debian bookworm's python3 + numpy) and most
user images have. The table is `results.csv` and `results.json`: a row per point with
`index`, the grid's parameters and then the result: one column per key when the output
file is a JSON object (the union over all points, sorted; a key that clashes with `index`
or a parameter is renamed `result.<key>`), else the file's stripped text as `value`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitters import templating
from splitters.api import (
    Estimate,
    MergeError,
    Parameter,
    SplitterError,
    TaskTemplate,
    same_bytes,
)

POINT_RECORD = "point.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
INDEX = "index"
MODES = ("cartesian", "zip")
# A grid multiplies quickly; past this many points a typo is likelier than a plan, and the
# manager would hold every task at once.
MAX_POINTS = 100_000
# A user's command takes what it takes: a rough guess for the estimate, capped by the timeout.
GUESS_SECONDS = 10.0

GridValue = bool | int | float | str

# The example: estimate pi from `samples` random points seeded by `seed`, six points in all.
EXAMPLE_CODE = (
    "import json, sys; import numpy as np; "
    "out, seed, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); "
    "xy = np.random.default_rng(seed).random((samples, 2)); "
    "pi = 4.0 * float(np.mean((xy ** 2).sum(axis=1) <= 1.0)); "
    "json.dump(dict(pi=pi, error=abs(pi - np.pi)), open(out, 'w'))"
)


@dataclass(frozen=True)
class Grid:
    """A checked grid: parameter names in order, each one's values, and how they combine."""

    names: tuple[str, ...]
    values: tuple[tuple[GridValue, ...], ...]
    mode: str

    @property
    def count(self) -> int:
        if self.mode == "zip":
            return len(self.values[0])
        return math.prod(len(values) for values in self.values)

    def points(self) -> Iterator[tuple[GridValue, ...]]:
        if self.mode == "zip":
            return zip(*self.values, strict=True)
        return itertools.product(*self.values)


def _value(name: str, position: int, value: object) -> GridValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise SplitterError(
        "grid",
        f"{name}[{position}] is {value!r}: values are numbers, strings or true/false",
    )


def _grid(raw: Mapping[str, Any], mode: str) -> Grid:
    if not raw:
        raise SplitterError(
            "grid", "is empty: give each parameter its values, e.g. {alpha = [1, 2]}"
        )
    names: list[str] = []
    columns: list[tuple[GridValue, ...]] = []
    for name, values in raw.items():
        if not templating.is_name(name):
            raise SplitterError(
                "grid",
                f"{name!r} cannot be a placeholder: use letters, digits and _, not a digit first",
            )
        if name in (INDEX, templating.SCRIPT):
            raise SplitterError("grid", f"{name} is reserved ({{{name}}} has its own meaning)")
        if not isinstance(values, list):
            raise SplitterError(
                "grid", f"{name} must be a list of values, e.g. {name} = [{values!r}]"
            )
        if not values:
            raise SplitterError("grid", f"{name} has no values: a sweep over it has no points")
        names.append(name)
        columns.append(tuple(_value(name, i, value) for i, value in enumerate(values)))
    if mode == "zip" and len({len(column) for column in columns}) > 1:
        lengths = ", ".join(f"{n} has {len(c)}" for n, c in zip(names, columns, strict=True))
        raise SplitterError(
            "grid", f"zip pairs the lists element by element, so they need one length: {lengths}"
        )
    grid = Grid(tuple(names), tuple(columns), mode)
    if grid.count > MAX_POINTS:
        raise SplitterError("grid", f"has {grid.count} points; at most {MAX_POINTS} are allowed")
    return grid


def _check_output(output: str) -> None:
    templating.check_file_name(output, "output", "output file")
    if output == POINT_RECORD:
        raise SplitterError(
            "output", f"{POINT_RECORD} is where each task records its point: choose another name"
        )


def plan(params: Mapping[str, Any]) -> Grid:
    """Checks every parameter against the others (SplitterError listing each problem, by
    key); the grid. Writes nothing."""
    problems: list[SplitterError] = []
    grid: Grid | None = None
    try:
        grid = _grid(params["grid"], params["mode"])
    except SplitterError as error:
        problems.append(error)
    if grid is not None:  # a broken grid would make every placeholder look unknown
        try:
            command: Sequence[Any] = params["command"]
            used = templating.check_command(
                command, "command", {*grid.names, INDEX, templating.SCRIPT}
            )
            unused = [name for name in grid.names if name not in used]
            if unused:
                raise SplitterError(
                    "grid",
                    f"the command does not use {', '.join(unused)}: put"
                    f" {', '.join('{' + n + '}' for n in unused)} in command, or leave it out",
                )
            templating.check_script(command, used, params["script"])
        except SplitterError as error:
            problems.append(error)
    for check, key in ((_check_output, "output"), (templating.check_image, "image")):
        try:
            check(params[key])
        except SplitterError as error:
            problems.append(error)
    if problems:
        raise SplitterError.combine(problems)
    assert grid is not None
    return grid


class ParameterSweep:
    name = "parameter_sweep"
    description = (
        "run a command once per point of a parameter grid ({name} placeholders in its argv);"
        " the results gathered into results.csv and results.json"
    )
    parameters: tuple[Parameter, ...] = (
        Parameter(
            "command",
            list,
            "the argv each task runs; {name} stands for a grid parameter's value, {index} for"
            " the point's number, {script} for the shipped script",
            required=True,
        ),
        Parameter(
            "grid", dict, "parameter name -> list of values, e.g. {alpha = [0.1, 1]}", required=True
        ),
        Parameter(
            "mode",
            str,
            "cartesian: every combination; zip: the lists side by side",
            default="cartesian",
            choices=MODES,
        ),
        Parameter("output", str, "the file each task writes under /output", default="result.json"),
        *templating.command_parameters(),
    )
    example: Mapping[str, Any] = {
        "command": ["python3", "-c", EXAMPLE_CODE, "/output/result.json", "{seed}", "{samples}"],
        "grid": {"seed": [1, 2, 3], "samples": [1000, 100000]},
    }

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        grid = plan(params)
        return Estimate(
            task_count=grid.count,
            resources=templating.resources_for(params, templating.file_size(params["script"])),
            seconds_per_task=min(float(params["timeout_seconds"]), GUESS_SECONDS),
        )

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        estimate = self.estimate(params)  # checks every parameter before anything is written
        grid = plan(params)
        output: str = params["output"]
        shared: dict[str, Path] = {
            templating.WRAPPER: templating.ship_worker(workdir, templating.WRAPPER)
        }
        values: dict[str, str] = {}
        script: Path | None = params["script"]
        if script is not None:
            name = templating.script_name(script)
            shared[name] = workdir / name
            shared[name].write_bytes(script.read_bytes())
            values[templating.SCRIPT] = f"/input/{name}"
        width = len(str(grid.count - 1))
        tasks = []
        for index, point in enumerate(grid.points()):
            task = f"point-{index:0{width}d}"
            record = workdir / f"{task}.json"
            record.write_text(
                json.dumps(
                    {
                        "index": index,
                        "count": grid.count,
                        "parameters": dict(zip(grid.names, point, strict=True)),
                        "output": output,
                    }
                )
            )
            values[INDEX] = str(index)
            values.update(zip(grid.names, map(templating.as_text, point), strict=True))
            argv = templating.render_command(params["command"], values)
            tasks.append(
                TaskTemplate(
                    name=task,
                    command=templating.wrapped(POINT_RECORD, argv),
                    inputs={**shared, POINT_RECORD: record},
                    outputs=(output, POINT_RECORD),
                    resources=estimate.resources,
                    timeout_seconds=params["timeout_seconds"],
                    image=params["image"],
                )
            )
        return tasks

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies agree only byte for byte. point.json is the split's record, copied
        as it is; the result is whatever the user's command writes, in the user's image,
        and nothing here knows its format or how exact it is, so a command run with the
        same point, image and inputs must write the same bytes to be confirmed (a command
        that prints times or unseeded random numbers never will)."""
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        points = _read_points(outputs)
        columns, rows = _table(points)
        csv_path, json_path = workdir / RESULTS_CSV, workdir / RESULTS_JSON
        with csv_path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([_cell(row.get(column)) for column in columns] for row in rows)
        table = [{column: row.get(column) for column in columns} for row in rows]
        json_path.write_text(
            json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return [csv_path, json_path]


# --- merge ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    task: str
    index: int
    count: int
    parameters: dict[str, Any]
    result: Path


def _read_point(task: str, files: Mapping[str, Path]) -> Point:
    if POINT_RECORD not in files:
        raise MergeError(f"{task} produced no {POINT_RECORD}: it is not a point of this sweep")
    try:
        record = json.loads(files[POINT_RECORD].read_text(encoding="utf-8"))
        index, count, parameters, output = (
            record["index"],
            record["count"],
            record["parameters"],
            record["output"],
        )
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise MergeError(f"{task}: {POINT_RECORD} is not a point record: {error}") from error
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise MergeError(f"{task}: {POINT_RECORD} has index {index!r} of {count!r}")
    if not isinstance(parameters, dict) or not isinstance(output, str):
        raise MergeError(f"{task}: {POINT_RECORD} is not a point record")
    if output not in files:
        raise MergeError(f"{task} produced no {output}")
    return Point(task, index, count, parameters, files[output])


def _read_points(outputs: Mapping[str, Mapping[str, Path]]) -> list[Point]:
    """Every point, in index order; MergeError unless they are exactly one sweep's points."""
    points = sorted(
        (_read_point(task, files) for task, files in outputs.items()), key=lambda p: p.index
    )
    if not points:
        raise MergeError("no point outputs to merge")
    first = points[0]
    for point in points:
        if point.count != first.count or list(point.parameters) != list(first.parameters):
            raise MergeError(f"{point.task} and {first.task} are points of different sweeps")
    seen: dict[int, str] = {}
    for point in points:
        if point.index in seen:
            raise MergeError(f"{seen[point.index]} and {point.task} are both point {point.index}")
        seen[point.index] = point.task
    missing = [str(index) for index in range(first.count) if index not in seen]
    if missing:
        raise MergeError(
            f"missing the output of point {', '.join(missing[:20])}"
            + (" ..." if len(missing) > 20 else "")
        )
    return points


def _result(path: Path) -> dict[str, Any]:
    """A JSON object's keys and values, else the stripped text as `value`."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"value": text.strip()}


def _table(points: Sequence[Point]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (index, the parameters, then the results' keys, sorted) and one row per point."""
    fixed = [INDEX, *points[0].parameters]
    results = [_result(point.result) for point in points]
    renamed: dict[str, str] = {}
    for key in sorted({key for result in results for key in result}):
        column = key
        while column in fixed or column in renamed.values():
            column = f"result.{column}"
        renamed[key] = column
    rows = []
    for point, result in zip(points, results, strict=True):
        row: dict[str, Any] = {INDEX: point.index, **point.parameters}
        row.update((renamed[key], value) for key, value in result.items())
        rows.append(row)
    return [*fixed, *renamed.values()], rows


def _cell(value: Any) -> str:
    """A CSV cell: empty for a missing value, JSON for nested ones, true/false, or text."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return templating.as_text(value)
