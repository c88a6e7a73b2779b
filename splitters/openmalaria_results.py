"""The openmalaria sweep's merge: read every run's output.txt, add the runs up per sweep point.

Input: runs.json (task name -> sweep point and seed, written by split and handed back by the
manifest task) and each run's output.txt, whose lines are
`survey<TAB>group<TAB>measure<TAB>value` (OpenMalaria's model/mon/mon.cpp). Every line is
checked: four tab-separated fields, whole numbers for survey (from 1), group and measure, a
number for value (an integer, a decimal, an exponent, or nan/inf as C++ streams write them),
no line twice. Anything else is a MergeError naming the run and the line: a truncated or
garbled file must not quietly become a smaller average.

Aggregation, per sweep point and per (survey, group, measure) row:
- The runs of one point must report the same rows: they share one scenario except the seed,
  and OpenMalaria writes every requested measure for every survey and group, zeros included.
  A run that differs is a MergeError.
- runs: how many runs (seeds) the point has; sum: the values added up across them (an
  integer when every value is); mean: sum / runs.
- rate, for counts only (splitters/openmalaria_measures.py says which measures are): the
  population-weighted rate, sum of the count over the runs divided by the sum of nHost
  (measure 0) of the same survey and age group over the same runs. Each run weighs by its
  population, so this is the pooled share of people (or events per person), not an average
  of per-run ratios. The age group of a row is its group modulo 1,000,000 (dropping the
  genotype or drug part); rate is empty when nHost was not reported or is 0.

Files written:
- aggregate.csv: point, one column per sweep key, survey, age_group, measure, measure_name,
  runs, sum, mean, rate.
- aggregate.json: {"sweep": keys, "points": [{"point", "values", "runs", "seeds"}],
  "rows": [one object per aggregate.csv row]}; non-finite numbers are null.
- runs.csv: run, point, the sweep keys, seed, survey, age_group, measure, value: every line
  of every output.txt, its value as OpenMalaria wrote it.
Rows come in point order, then OpenMalaria's own order (survey, measure, group) as in the
point's first run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from splitters import openmalaria_measures as measures
from splitters.api import MergeError

MANIFEST = "runs.json"
OUTPUT = "output.txt"
AGGREGATE_CSV = "aggregate.csv"
AGGREGATE_JSON = "aggregate.json"
RUNS_CSV = "runs.csv"
MANIFEST_VERSION = 1
# Columns of the result files: a sweep key may not take one of these names.
ROW_COLUMNS = ("survey", "age_group", "measure")
AGGREGATE_COLUMNS = ("measure_name", "runs", "sum", "mean", "rate")
RESERVED_COLUMNS = frozenset(
    {"point", "run", "seed", "value", *ROW_COLUMNS, *AGGREGATE_COLUMNS, "population"}
)
# The group column: age group + 1000 x cohort set + 1,000,000 x genotype (or drug).
GROUP_MODULUS = 1_000_000
_WHOLE = re.compile(r"\d+")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf)", re.IGNORECASE)

Scalar = str | int | float | bool
Number = int | float
Key = tuple[int, int, int]  # survey, group, measure


@dataclass(frozen=True)
class Run:
    name: str
    point: int  # index into the manifest's points
    seed: int


@dataclass(frozen=True)
class Manifest:
    keys: tuple[str, ...]
    points: tuple[dict[str, Scalar], ...]
    runs: tuple[Run, ...]  # in task order


def manifest_json(
    keys: Sequence[str], points: Sequence[Mapping[str, Scalar]], runs: Sequence[Run]
) -> bytes:
    """runs.json: what merge needs to know about the sweep, and nothing it could misread."""
    document = {
        "version": MANIFEST_VERSION,
        "sweep": list(keys),
        "points": [dict(point) for point in points],
        "runs": {run.name: {"point": run.point, "seed": run.seed} for run in runs},
    }
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def read_manifest(path: Path) -> Manifest:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise MergeError(f"{MANIFEST} is not readable JSON: {error}") from error
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise MergeError(f"{MANIFEST} is not a version {MANIFEST_VERSION} sweep manifest")
    keys, points, runs = document.get("sweep"), document.get("points"), document.get("runs")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise MergeError(f"{MANIFEST}: sweep is not a list of names")
    if not isinstance(points, list) or not all(
        isinstance(point, dict) and list(point) == keys for point in points
    ):
        raise MergeError(f"{MANIFEST}: points do not each give a value for every sweep key")
    if not isinstance(runs, dict):
        raise MergeError(f"{MANIFEST}: runs is not a table")
    return Manifest(
        tuple(keys), tuple(points), tuple(_run(name, runs[name], len(points)) for name in runs)
    )


def _run(name: str, entry: object, points: int) -> Run:
    point = entry.get("point") if isinstance(entry, dict) else None
    seed = entry.get("seed") if isinstance(entry, dict) else None
    if not isinstance(point, int) or not 0 <= point < points or not isinstance(seed, int):
        raise MergeError(f"{MANIFEST}: {name} has no valid point and seed: {entry!r}")
    return Run(name, point, seed)


# --- reading output.txt -----------------------------------------------------------------


def parse_value(text: str) -> Number | None:
    """A value as OpenMalaria writes it; None if it is not a number."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    return None


def read_output(task: str, path: Path) -> dict[Key, tuple[Number, str]]:
    """Every row of a run's output.txt, in file order: key -> (value, value as written)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise MergeError(f"{task}: cannot read {OUTPUT}: {error}") from error
    except UnicodeDecodeError as error:
        raise MergeError(f"{task}: {OUTPUT} is not text: {error}") from error
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise MergeError(f"{task}: {OUTPUT} is empty")
    rows: dict[Key, tuple[Number, str]] = {}
    for number, line in enumerate(lines, start=1):
        key, value = _parse_line(task, number, line)
        if key in rows:
            raise MergeError(
                f"{task}: {OUTPUT} line {number} repeats survey {key[0]}, group {key[1]},"
                f" measure {key[2]}"
            )
        rows[key] = value
    return rows


def _parse_line(task: str, number: int, line: str) -> tuple[Key, tuple[Number, str]]:
    fields = line.split("\t")
    shown = line if len(line) <= 80 else line[:77] + "..."
    where = f"{task}: {OUTPUT} line {number}"
    if len(fields) != 4:
        raise MergeError(
            f"{where}: expected survey, group, measure and value separated by tabs, got {shown!r}"
        )
    survey, group, measure, text = fields
    for name, field in (("survey", survey), ("group", group), ("measure", measure)):
        if not _WHOLE.fullmatch(field):
            raise MergeError(f"{where}: {name} {field!r} is not a whole number ({shown!r})")
    if int(survey) < 1:
        raise MergeError(f"{where}: surveys count from 1, got {survey} ({shown!r})")
    value = parse_value(text)
    if value is None:
        raise MergeError(f"{where}: value {text!r} is not a number ({shown!r})")
    return (int(survey), int(group), int(measure)), (value, text)


# --- aggregating ------------------------------------------------------------------------


@dataclass
class _Total:
    runs: int
    total: Number

    @property
    def mean(self) -> float:
        return self.total / self.runs


def _rate(key: Key, totals: Mapping[Key, _Total]) -> float | None:
    survey, group, measure = key
    if not measures.is_count(measure):
        return None
    hosts = totals.get((survey, group % GROUP_MODULUS, measures.NHOST))
    if hosts is None or hosts.total == 0:
        return None
    return totals[key].total / hosts.total


def _csv_number(value: Number | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _json_number(value: Number | None) -> Number | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _written(workdir: Path, names: Sequence[str]) -> Iterator[Sequence[IO[str]]]:
    """Files opened as NAME.partial and renamed only if the block succeeds: a failed merge
    leaves nothing that looks like a result."""
    partials = [workdir / f"{name}.partial" for name in names]
    files = [path.open("w", encoding="utf-8", newline="") for path in partials]
    try:
        yield files
    except BaseException:
        for file, path in zip(files, partials, strict=True):
            file.close()
            path.unlink(missing_ok=True)
        raise
    for file, path, name in zip(files, partials, names, strict=True):
        file.close()
        os.replace(path, workdir / name)


def _check_runs(manifest: Manifest, outputs: Mapping[str, Mapping[str, Path]]) -> None:
    expected = {run.name for run in manifest.runs}
    strangers = sorted(set(outputs) - expected)
    if strangers:
        raise MergeError(f"{strangers[0]} is not a run of this sweep")
    missing = sorted(expected - set(outputs))
    if missing:
        raise MergeError(f"missing the output of {', '.join(missing)}")
    for run in manifest.runs:
        if OUTPUT not in outputs[run.name]:
            raise MergeError(f"{run.name} produced no {OUTPUT}")


def _same_rows(run: Run, first: Run, rows: Mapping[Key, Any], keys: Mapping[Key, Any]) -> None:
    if rows.keys() == keys.keys():
        return
    extra = [key for key in rows if key not in keys]
    key = extra[0] if extra else next(key for key in keys if key not in rows)
    has = "has" if extra else "lacks"
    raise MergeError(
        f"{run.name}: {OUTPUT} {has} survey {key[0]}, group {key[1]}, measure {key[2]},"
        f" unlike {first.name} of the same sweep point (runs of one point share their"
        " scenario but the seed, so they report the same rows)"
    )


def merge(
    manifest: Manifest, outputs: Mapping[str, Mapping[str, Path]], workdir: Path
) -> list[Path]:
    """Writes aggregate.csv, aggregate.json and runs.csv into `workdir`."""
    if not manifest.runs:
        raise MergeError("no runs to merge")
    _check_runs(manifest, outputs)
    by_point: dict[int, list[Run]] = {}
    for run in manifest.runs:
        by_point.setdefault(run.point, []).append(run)
    keys = manifest.keys
    names = (AGGREGATE_CSV, AGGREGATE_JSON, RUNS_CSV)
    with _written(workdir, names) as (aggregate_file, json_file, runs_file):
        aggregate = csv.writer(aggregate_file, lineterminator="\n")
        aggregate.writerow(["point", *keys, *ROW_COLUMNS, *AGGREGATE_COLUMNS])
        raw = csv.writer(runs_file, lineterminator="\n")
        raw.writerow(["run", "point", *keys, "seed", *ROW_COLUMNS, "value"])
        json_rows: list[str] = []
        for point, runs in sorted(by_point.items()):
            values = manifest.points[point]
            swept = [_csv_value(values[key]) for key in keys]
            totals: dict[Key, _Total] = {}
            for run in runs:
                rows = read_output(run.name, outputs[run.name][OUTPUT])
                if not totals:
                    totals = {key: _Total(0, 0) for key in rows}
                _same_rows(run, runs[0], rows, totals)
                for key, (value, text) in rows.items():
                    total = totals[key]
                    total.runs += 1
                    total.total += value
                    raw.writerow([run.name, point, *swept, run.seed, *key, text])
            for key in totals:
                total, rate = totals[key], _rate(key, totals)
                name = measures.name(key[2])
                aggregate.writerow(
                    [
                        point,
                        *swept,
                        *key,
                        name,
                        total.runs,
                        _csv_number(total.total),
                        _csv_number(total.mean),
                        _csv_number(rate),
                    ]
                )
                row = {
                    "point": point,
                    "survey": key[0],
                    "age_group": key[1],
                    "measure": key[2],
                    "measure_name": name,
                    "runs": total.runs,
                    "sum": _json_number(total.total),
                    "mean": _json_number(total.mean),
                    "rate": _json_number(rate),
                }
                json_rows.append(json.dumps(row, allow_nan=False))
        _write_json(json_file, manifest, by_point, json_rows)
    return [workdir / name for name in names]


def _write_json(
    file: IO[str], manifest: Manifest, by_point: Mapping[int, list[Run]], rows: list[str]
) -> None:
    points = [
        {
            "point": point,
            "values": manifest.points[point],
            "runs": [run.name for run in runs],
            "seeds": [run.seed for run in runs],
        }
        for point, runs in sorted(by_point.items())
    ]
    file.write('{"sweep": ' + json.dumps(list(manifest.keys)) + ",\n")
    file.write(' "points": ' + json.dumps(points, allow_nan=False) + ",\n")
    file.write(' "rows": [\n  ' + ",\n  ".join(rows) + "\n ]}\n")
