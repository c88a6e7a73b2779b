"""A sweep of OpenMalaria simulations: one run per (sweep point, seed), results aggregated.

OpenMalaria (https://github.com/SwissTPH/openmalaria) simulates malaria in a population of
`popSize` people from one scenario XML file. A study varies a few scenario values (EIR, net
coverage, ...) and repeats each combination with several random seeds, since one stochastic
run of a small population is noisy. This workflow takes a scenario *template* whose varying
values are `@name@` placeholders, runs every combination of the `sweep` lists `seeds` times
(each with its own `@seed@`), and adds the runs up per sweep point. `@population@` takes
`population`; every other placeholder needs a sweep key and every sweep key a placeholder;
placeholders in XML comments are ignored; values are XML-escaped, and each point's scenario
must still be well-formed (all checked before anything is written: SplitterError names the
key to fix).

How OpenMalaria is run, as its source says (SwissTPH/openmalaria, main branch, Jan 2026):
- `openMalaria --resource-path DIR --scenario FILE --output FILE` (model/util/CommandLine.cpp).
  `--scenario` and `--output` take absolute paths; resources with relative names
  (densities.csv, autoRegressionParameters.csv) are looked up in `--resource-path`, which
  defaults to the working directory.
- The scenario is validated against the schema its root names in `xsi:schemaLocation`, and
  a relative schema file (`scenario_48.xsd`) is looked up in the *working directory*
  (model/util/DocumentLoader.cpp opens the scenario as a stream; test/run.py copies the .xsd
  into the run's folder for that reason). A task's working directory is an empty /tmp, so
  split rewrites a relative schema location to `resource_dir`/file (/om/scenario_48.xsd in
  the image docs/openmalaria.md builds); absolute ones are left alone.
- The scenario's root is `om:scenario` in namespace http://openmalaria.org/schema/scenario_N;
  the population is `<demography popSize="...">` and the random seed
  `<model><computationParameters iseed="..."/>` (schema/scenario.xsd, demography.xsd).
- Results go to output.txt, one line per value: `survey<TAB>group<TAB>measure<TAB>value`
  (model/mon/mon.cpp): survey counts from 1; group is the age group from 1 (0 for measures
  not split by age) plus 1000 x cohort set plus 1,000,000 x genotype or drug (for vector
  measures: the species from 1); measure is the survey measure number of
  model/mon/OutputMeasures.h (0 nHost, 1 nInfect, 3 nPatent, 14 nUncomp, 15 nSevere, ...: see
  splitters/openmalaria_measures.py); value is an integer for counts, else a C++ stream
  double (`0.25`, `1.5e+06`, `nan`).
All of this was also checked against a build of that source (schema 48): a sweep of the
default template run with the exact task command under vcnode's Docker restrictions (user
nobody, read-only root, empty /tmp as working directory); there a relative schema file
fails ("no declaration found for element 'om:scenario'") and the absolute one works.

How a run's sweep point and seed reach merge: merge sees only the tasks' outputs, and a run
writes only output.txt. Rather than wrap the user's command (which would need a shell or
python3 in their image), split writes runs.json (task name -> point and seed) and adds one
tiny `manifest` task, running in vcnode's own worker image, that copies runs.json from its
inputs to its outputs. The user's image needs nothing but openMalaria and its resource
files; merge needs nothing from split's folder (the manager may have restarted since).

Merge (see splitters/openmalaria_results.py for the rules) writes aggregate.csv and
aggregate.json (per sweep point, survey, group and measure: runs, sum, mean across seeds,
and for counts the rate per person) and runs.csv (every run's rows with its point and seed).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from splitters import openmalaria_results as results
from splitters.api import (
    DEFAULT_IMAGE,
    Directory,
    Estimate,
    MergeError,
    Parameter,
    ResourceRequest,
    SplitterError,
    TaskTemplate,
    same_bytes,
)

SCENARIO_INPUT = "scenario.xml"
OUTPUT = "output.txt"
MANIFEST_TASK = "manifest"
MANIFEST_WORKER = "openmalaria_manifest.py"
DEFAULT_TEMPLATE = "openmalaria_scenario.xml"
# Words of `command` that split fills in.
SCENARIO_WORD = "{scenario}"
OUTPUT_WORD = "{output}"
RESOURCE_DIR_WORD = "{resource_dir}"
DEFAULT_COMMAND = (
    "openMalaria",
    "--resource-path",
    RESOURCE_DIR_WORD,
    "--scenario",
    SCENARIO_WORD,
    "--output",
    OUTPUT_WORD,
)
POPULATION = "population"
SEED = "seed"
# Placeholder names: what `@name@` may hold, and so what a sweep key may be.
_PLACEHOLDER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)@")
# XML comments: placeholders in them are left alone (a template may document its own).
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCENARIO_NAMESPACE = re.compile(r"\{http://openmalaria\.org/schema/scenario_(\d+)\}scenario")
_XSI_SCHEMA_LOCATION = "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation"
_SCHEMA_LOCATION_ATTRIBUTE = re.compile(r"([\w.-]+:schemaLocation\s*=\s*)([\"'])(.*?)\2", re.S)
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

# Rough cost of a run: openMalaria's time grows with the number of people. Measured with
# the default template (90 years of warm-up, as its oldest people are 90, then 3 years of
# surveys): 0.7 s for 100 people, 25 s for 2000, on one core of this project's 2-core
# machine; doubled for a busy volunteer. Memory stays small (13 MiB resident for 2000).
SECONDS_PER_PERSON = 0.025
STARTUP_SECONDS = 2.0
MANIFEST_RESOURCES = ResourceRequest(cpus=1.0, memory_mb=64, disk_mb=1)
MANIFEST_TIMEOUT_SECONDS = 60
RUN_DISK_MB = 64  # output.txt of a large scenario, and ctsout.txt if it asks for one

Scalar = str | int | float | bool
_T = TypeVar("_T")


def _parameters() -> tuple[Parameter, ...]:
    return (
        Parameter(
            "image",
            str,
            "Docker image with openMalaria and its resource files"
            " (how to build one: vcnode docs openmalaria)",
            required=True,
        ),
        Parameter(
            "scenario",
            Path,
            "scenario XML template with @name@ placeholders"
            " (default: a small schema-48 scenario shipped with vcnode)",
        ),
        Parameter(
            POPULATION,
            int,
            "people to simulate: fills @population@ (the demography popSize)",
            minimum=1,
        ),
        Parameter(
            "seeds", int, "runs per sweep point, each with its own @seed@", default=1, minimum=1
        ),
        Parameter(
            "seed_start", int, "@seed@ of each point's first run; then +1", default=1, minimum=0
        ),
        Parameter(
            "sweep",
            dict,
            "placeholder -> list of values, e.g. {eir = [5, 20]}; every combination runs",
        ),
        Parameter(
            "command",
            list,
            "how the image runs one simulation: {scenario}, {output} and {resource_dir}"
            " are filled in",
            default=list(DEFAULT_COMMAND),
        ),
        Parameter(
            "resource_dir",
            str,
            "folder in the image with scenario_NN.xsd, densities.csv and"
            " autoRegressionParameters.csv",
            default="/om",
        ),
        Parameter(
            "extra_inputs",
            Directory,
            "a folder whose files every run also gets under /input",
        ),
        Parameter("timeout_seconds", int, "wall-clock limit per run", default=3600, minimum=1),
        Parameter("memory_mb", int, "memory per run", default=512, minimum=64),
    )


# --- the template -----------------------------------------------------------------------


def _xml_text(value: Scalar) -> str:
    """How a sweep value is written into the scenario, before escaping."""
    if isinstance(value, bool):
        return "true" if value else "false"  # XML Schema's boolean words
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same number
    return str(value)


def _outside_comments(text: str) -> list[tuple[bool, str]]:
    """The text cut into (is a comment, piece) pieces, in order."""
    pieces: list[tuple[bool, str]] = []
    start = 0
    for match in _COMMENT.finditer(text):
        pieces += [(False, text[start : match.start()]), (True, match[0])]
        start = match.end()
    return [*pieces, (False, text[start:])]


def placeholders(template: str) -> set[str]:
    """Names of the template's `@name@` placeholders, comments aside."""
    return {
        name
        for comment, piece in _outside_comments(template)
        if not comment
        for name in _PLACEHOLDER.findall(piece)
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with every `@name@` outside comments replaced by its value, XML-escaped
    (so a value is safe in an attribute or in text). Names not in `values` stay as they are."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            return match[0]
        return escape(values[name], {'"': "&quot;", "'": "&apos;"})

    return "".join(
        piece if comment else _PLACEHOLDER.sub(replace, piece)
        for comment, piece in _outside_comments(template)
    )


def _read_template(params: Mapping[str, Any]) -> str:
    path: Path | None = params["scenario"]
    try:
        if path is None:
            data = resources.files("splitters").joinpath("data", DEFAULT_TEMPLATE).read_bytes()
        else:
            data = path.read_bytes()
        return data.decode("utf-8")
    except OSError as error:
        raise SplitterError("scenario", f"cannot read {path}: {error}") from error
    except UnicodeDecodeError as error:
        raise SplitterError("scenario", f"{path} is not UTF-8 text: {error}") from error


def _check_sweep(raw: object, names: set[str]) -> dict[str, list[Scalar]]:
    """The sweep lists, checked against the template's placeholders."""
    if raw is None:
        raw = {}
    assert isinstance(raw, dict)  # validate_parameters saw to that
    sweep: dict[str, list[Scalar]] = {}
    for key, values in raw.items():
        if not _NAME.fullmatch(key):
            raise SplitterError("sweep", f"{key!r} is not a placeholder name (letters, digits, _)")
        if key in (POPULATION, SEED):
            own = "population" if key == POPULATION else "seeds and seed_start"
            raise SplitterError("sweep", f"@{key}@ is filled in from {own}, not swept")
        if key in results.RESERVED_COLUMNS:
            raise SplitterError(
                "sweep", f"{key} is also a column of the results: name the placeholder otherwise"
            )
        if key not in names:
            found = ", ".join(f"@{name}@" for name in sorted(names)) or "none"
            raise SplitterError(
                "sweep", f"{key}: the scenario has no @{key}@ placeholder (it has: {found})"
            )
        sweep[key] = _check_values(key, values)
    return sweep


def _check_values(key: str, values: object) -> list[Scalar]:
    if not isinstance(values, list):
        raise SplitterError("sweep", f"{key}: give a list of values, e.g. [{values!r}]")
    if not values:
        raise SplitterError("sweep", f"{key}: the list is empty, so nothing would run")
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str | int | float | bool):
            raise SplitterError("sweep", f"{key}: {value!r} is not a number, string or true/false")
        if isinstance(value, float) and not math.isfinite(value):
            raise SplitterError("sweep", f"{key}: {value!r} is not a finite number")
        text = _xml_text(value)
        if text in seen:
            raise SplitterError("sweep", f"{key}: {value!r} is listed twice")
        seen.add(text)
    return list(values)


def _check_fixed(params: Mapping[str, Any], names: set[str]) -> None:
    """@seed@ is there, and @population@ exactly when `population` is given."""
    if SEED not in names:
        raise SplitterError(
            "scenario",
            "has no @seed@ placeholder, so every run of a point would be the same:"
            ' write <computationParameters iseed="@seed@"/>',
        )
    if POPULATION in names and params[POPULATION] is None:
        raise SplitterError(
            POPULATION, "required: the scenario's @population@ needs a number of people"
        )
    if POPULATION not in names and params[POPULATION] is not None:
        raise SplitterError(
            POPULATION,
            "the scenario has no @population@ placeholder to put it in:"
            ' write <demography popSize="@population@" ...>',
        )


def _check_uncovered(names: set[str], sweep: Mapping[str, list[Scalar]]) -> None:
    """Every other placeholder gets its values from a sweep key."""
    uncovered = sorted(names - {POPULATION, SEED} - set(sweep))
    if uncovered:
        listed = ", ".join(f"@{name}@" for name in uncovered)
        raise SplitterError(
            "sweep", f"the scenario's {listed} need values: add {uncovered[0]} = [...] to sweep"
        )


# --- the scenario of one run ------------------------------------------------------------


def _parse(text: str, point: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as error:
        raise SplitterError(
            "scenario", f"is not well-formed XML once filled in ({point}): {error}"
        ) from error


def _relative(location: str) -> bool:
    return not location.startswith("/") and _URL_SCHEME.match(location) is None


def _schema_files(root: ET.Element) -> list[str]:
    """The schema file(s) named by the root's xsi:schemaLocation ("namespace file" pairs)."""
    words = root.get(_XSI_SCHEMA_LOCATION, "").split()
    return words[1::2]


def _check_scenario(root: ET.Element) -> int:
    """Checks that this is an OpenMalaria scenario openMalaria can validate; its popSize."""
    if _SCENARIO_NAMESPACE.fullmatch(root.tag) is None:
        raise SplitterError(
            "scenario",
            f"is not an OpenMalaria scenario: its root element is {root.tag}, not om:scenario"
            " in namespace http://openmalaria.org/schema/scenario_N",
        )
    if not _schema_files(root):
        raise SplitterError(
            "scenario",
            "names no schema: openMalaria validates against the one in the root's"
            ' xsi:schemaLocation, e.g. "http://openmalaria.org/schema/scenario_48'
            ' scenario_48.xsd"',
        )
    demography = root.find("demography")
    size = demography.get("popSize") if demography is not None else None
    if size is None:
        raise SplitterError("scenario", 'has no <demography popSize="...">')
    try:
        population = int(size)
    except ValueError:
        raise SplitterError(
            "scenario", f"demography popSize is {size!r} once filled in, not a whole number"
        ) from None
    if population < 1:
        raise SplitterError("scenario", f"demography popSize is {population}; it needs people")
    return population


def absolute_schema(text: str, resource_dir: str) -> str:
    """The scenario with relative schema files of its root's xsi:schemaLocation moved into
    `resource_dir` (openMalaria would look for them in the task's empty working directory)."""
    wanted = ET.fromstring(text).get(_XSI_SCHEMA_LOCATION)
    pieces = _outside_comments(text)
    for index, (comment, piece) in enumerate(pieces):
        if comment:
            continue
        for match in _SCHEMA_LOCATION_ATTRIBUTE.finditer(piece):
            quote, value = match[2], match[3]
            if ET.fromstring(f"<x a={quote}{value}{quote}/>").get("a") != wanted:
                continue  # the same attribute on another element
            words = value.split()
            for word in range(1, len(words), 2):
                if _relative(words[word]):
                    words[word] = posixpath.join(resource_dir, words[word])
            new = escape(" ".join(words), {'"': "&quot;", "'": "&apos;"})
            pieces[index] = (False, piece[: match.start(3)] + new + piece[match.end(3) :])
            return "".join(piece for _, piece in pieces)
    return text


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Everything split writes, worked out (and checked) before anything is written."""

    template: str
    keys: tuple[str, ...]  # sweep keys, in the order given
    points: tuple[dict[str, Scalar], ...]
    seeds: tuple[int, ...]
    population: int | None  # for @population@
    largest_population: int  # of any run, for the estimate
    command: tuple[str, ...]
    extra_inputs: tuple[Path, ...]

    def values(self, point: dict[str, Scalar], seed: int) -> dict[str, str]:
        filled = {key: _xml_text(value) for key, value in point.items()}
        filled[SEED] = str(seed)
        if self.population is not None:
            filled[POPULATION] = str(self.population)
        return filled

    @property
    def task_count(self) -> int:
        return len(self.points) * len(self.seeds) + 1  # + the manifest task


def _command(params: Mapping[str, Any]) -> tuple[str, ...]:
    words: list[object] = params["command"]
    if not words:
        raise SplitterError("command", "is empty")
    for word in words:
        if not isinstance(word, str) or not word:
            raise SplitterError("command", f"{word!r} is not a word: give a list of strings")
    text = [str(word) for word in words]
    joined = " ".join(text)
    if SCENARIO_WORD not in joined and f"/input/{SCENARIO_INPUT}" not in joined:
        raise SplitterError(
            "command", f"never names the scenario: put {SCENARIO_WORD} where it is read from"
        )
    if OUTPUT_WORD not in joined and f"/output/{OUTPUT}" not in joined:
        raise SplitterError(
            "command", f"never names the results: put {OUTPUT_WORD} where output.txt goes"
        )
    filled = {
        SCENARIO_WORD: f"/input/{SCENARIO_INPUT}",
        OUTPUT_WORD: f"/output/{OUTPUT}",
        RESOURCE_DIR_WORD: params["resource_dir"],
    }
    for placeholder, value in filled.items():
        text = [word.replace(placeholder, value) for word in text]
    return tuple(text)


def _extra_inputs(params: Mapping[str, Any]) -> tuple[Path, ...]:
    folder: Path | None = params["extra_inputs"]
    if folder is None:
        return ()
    files: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # .DS_Store and the like
        if not path.is_file():
            raise SplitterError(
                "extra_inputs", f"{path.name} is not a file: runs get the folder's files only"
            )
        if path.name == SCENARIO_INPUT:
            raise SplitterError(
                "extra_inputs", f"{path.name} would take the place of the run's own scenario"
            )
        files.append(path)
    return tuple(files)


def plan(params: Mapping[str, Any]) -> Sweep:
    """Checks every parameter against the template; raises SplitterError naming the key
    (every independent problem at once)."""
    problems: list[SplitterError] = []

    def checked(check: Callable[[], _T]) -> _T | None:
        try:
            return check()
        except SplitterError as error:
            problems.append(error)
            return None

    template = checked(lambda: _read_template(params))
    sweep: dict[str, list[Scalar]] | None = None
    if template is not None:
        names = placeholders(template)
        checked(lambda: _check_fixed(params, names))
        sweep = checked(lambda: _check_sweep(params["sweep"], names))
        if sweep is not None:
            checked(lambda: _check_uncovered(names, sweep or {}))
    command = checked(lambda: _command(params))
    extra_inputs = checked(lambda: _extra_inputs(params))
    if problems or template is None or sweep is None or command is None or extra_inputs is None:
        raise SplitterError.combine(problems)  # a None always comes with a problem
    keys = tuple(sweep)
    points = tuple(
        dict(zip(keys, combination, strict=True))
        for combination in itertools.product(*(sweep[key] for key in keys))
    )
    seeds = tuple(range(params["seed_start"], params["seed_start"] + params["seeds"]))
    partial = Sweep(
        template=template,
        keys=keys,
        points=points,
        seeds=seeds,
        population=params[POPULATION],
        largest_population=0,
        command=command,
        extra_inputs=extra_inputs,
    )
    largest = 0
    for point in points:
        described = ", ".join(f"{key} = {value!r}" for key, value in point.items())
        root = _parse(render(template, partial.values(point, seeds[0])), described or "no sweep")
        largest = max(largest, _check_scenario(root))
    return dataclasses.replace(partial, largest_population=largest)


def run_name(index: int, count: int) -> str:
    """`run-0007`: zero-padded to at least 4 digits, so names sort in run order."""
    return f"run-{index:0{max(4, len(str(count - 1)))}d}"


def _run_resources(params: Mapping[str, Any]) -> ResourceRequest:
    return ResourceRequest(cpus=1.0, memory_mb=params["memory_mb"], disk_mb=RUN_DISK_MB)


# --- the splitter -----------------------------------------------------------------------


class OpenMalaria:
    name = "openmalaria"
    description = (
        "OpenMalaria simulations: every combination of a sweep of scenario values, times"
        " seeds; results summed, averaged and turned into rates per sweep point"
    )
    parameters: tuple[Parameter, ...] = _parameters()
    # `node init openmalaria`: the shipped template, 2 x 2 points x 2 seeds = 8 small runs.
    example: Mapping[str, Any] = {
        "image": "openmalaria:local",
        "population": 500,
        "seeds": 2,
        "sweep": {"eir": [5, 20], "coverage": [0.0, 0.6]},
    }

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        sweep = plan(params)
        return Estimate(
            task_count=sweep.task_count,
            resources=_run_resources(params),
            seconds_per_task=STARTUP_SECONDS + SECONDS_PER_PERSON * sweep.largest_population,
        )

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        sweep = plan(params)  # checks every parameter before anything is written
        count = len(sweep.points) * len(sweep.seeds)
        extra = {path.name: path for path in sweep.extra_inputs}
        tasks: list[TaskTemplate] = []
        runs: list[results.Run] = []
        for index, (point, seed) in enumerate(
            itertools.product(range(len(sweep.points)), sweep.seeds)
        ):
            name = run_name(index, count)
            text = render(sweep.template, sweep.values(sweep.points[point], seed))
            scenario = workdir / f"{name}.xml"
            scenario.write_text(absolute_schema(text, params["resource_dir"]), encoding="utf-8")
            runs.append(results.Run(name, point, seed))
            tasks.append(
                TaskTemplate(
                    name=name,
                    command=sweep.command,
                    inputs={**extra, SCENARIO_INPUT: scenario},
                    outputs=(OUTPUT,),
                    resources=_run_resources(params),
                    timeout_seconds=params["timeout_seconds"],
                    image=params["image"],
                )
            )
        manifest = workdir / results.MANIFEST
        manifest.write_bytes(results.manifest_json(sweep.keys, sweep.points, runs))
        worker = workdir / MANIFEST_WORKER
        worker.write_bytes(
            resources.files("splitters.workers").joinpath(MANIFEST_WORKER).read_bytes()
        )
        tasks.append(
            TaskTemplate(
                name=MANIFEST_TASK,
                command=(
                    "python3",
                    f"/input/{MANIFEST_WORKER}",
                    f"/input/{results.MANIFEST}",
                    f"/output/{results.MANIFEST}",
                ),
                inputs={MANIFEST_WORKER: worker, results.MANIFEST: manifest},
                outputs=(results.MANIFEST,),
                resources=MANIFEST_RESOURCES,
                timeout_seconds=MANIFEST_TIMEOUT_SECONDS,
                image=DEFAULT_IMAGE,
            )
        )
        return tasks

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies agree only byte for byte. OpenMalaria is reproducible by design: a
        run is a function of its scenario, whose iseed seeds every random draw, and of the
        image's binary, so two volunteers running one scenario in one image write the same
        output.txt (its values are survey sums printed by C++ streams, no clock, host or
        path in it). runs.json is the split's own file, copied as it is."""
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        runs = {name: files for name, files in outputs.items() if name != MANIFEST_TASK}
        if not runs:
            raise MergeError("no runs to merge")
        manifest = outputs.get(MANIFEST_TASK, {}).get(results.MANIFEST)
        if manifest is None:
            raise MergeError(
                f"no {results.MANIFEST} from the {MANIFEST_TASK} task: which run had which"
                " sweep point and seed is unknown"
            )
        return results.merge(results.read_manifest(manifest), runs, workdir)
