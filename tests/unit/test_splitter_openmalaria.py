"""The openmalaria splitter end to end, with a stand-in for the openMalaria binary.

Tasks run as local subprocesses (tests/splitter_runner.py). The runs' command is swapped for
tests/fixtures/fake_openmalaria.py, shipped to every run through `extra_inputs`: it reads
the scenario split wrote, fails where the real program would (schema file not found,
resources missing) and writes output.txt in the real format. The expected aggregates are
computed here again, straight from the runs' output.txt files and the sweep as the test
wrote it, and compared with what merge wrote.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from daemon.runtime.spec import failure_for_exit
from splitters import openmalaria_results as results
from splitters.api import DEFAULT_IMAGE, MergeError, SplitterError, TaskTemplate
from splitters.openmalaria import OpenMalaria, absolute_schema, placeholders, render
from splitters.registry import get_splitter
from tests.splitter_runner import prepare, run_locally

OM = OpenMalaria()
FAKE = Path(__file__).parent.parent / "fixtures" / "fake_openmalaria.py"
FAKE_COMMAND = [
    "python3",
    "/input/fake_openmalaria.py",
    "--resource-path",
    "{resource_dir}",
    "--scenario",
    "{scenario}",
    "--output",
    "{output}",
]
SCHEMA_LOCATION = "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation"
NAMESPACE = "http://openmalaria.org/schema/scenario_48"
# The first survey of a real run: openMalaria 48.0 (built from SwissTPH/openmalaria main,
# Jan 2026) on the shipped template, population 200, seed 1, eir 5, coverage 0.0.
REAL_OUTPUT = (
    "1\t1\t0\t40\n1\t2\t0\t44\n1\t3\t0\t116\n1\t1\t1\t16\n1\t2\t1\t26\n1\t3\t1\t100\n"
    "1\t1\t3\t10\n1\t2\t3\t16\n1\t3\t3\t49\n1\t1\t14\t12\n1\t2\t14\t16\n1\t3\t14\t23\n"
    "1\t1\t15\t0\n1\t2\t15\t0\n1\t3\t15\t0\n1\t1\t19\t0\n1\t2\t19\t0\n1\t3\t19\t0\n"
    "1\t0\t36\t0.0761017\n"
)


@pytest.fixture
def fake_setup(tmp_path: Path) -> dict[str, Any]:
    """Parameters that run the fake: its script as an extra input, and a resource folder
    (standing in for the image's /om) with the files openMalaria needs."""
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copyfile(FAKE, extra / FAKE.name)
    om_dir = tmp_path / "om"
    om_dir.mkdir()
    (om_dir / "scenario_48.xsd").write_text("<schema/>\n")
    (om_dir / "densities.csv").write_text("density\n")
    return {
        "image": "openmalaria:test",
        "command": FAKE_COMMAND,
        "extra_inputs": str(extra),
        "resource_dir": str(om_dir),
    }


def scenario_of(task: TaskTemplate) -> ET.Element:
    source = task.inputs["scenario.xml"]
    assert isinstance(source, Path)
    return ET.parse(source).getroot()


def attribute(root: ET.Element, path: str, name: str) -> str | None:
    element = root.find(path)
    assert element is not None, path
    return element.get(name)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def expected_aggregate(
    sweep: Mapping[str, list[Any]], seeds: list[int], outputs: Mapping[str, Path]
) -> dict[tuple[int, int, int, int], dict[str, Any]]:
    """Sum, mean and pooled rate per (point, survey, group, measure), from the files."""
    runs = sorted(name for name in outputs if name != "manifest")
    points = list(itertools.product(*sweep.values()))
    assert len(runs) == len(points) * len(seeds)
    values: dict[tuple[int, int, int, int], list[float]] = defaultdict(list)
    for index, name in enumerate(runs):
        point = index // len(seeds)  # runs go point by point, seeds within a point
        for line in outputs[name].read_text().splitlines():
            *row, value = line.split("\t")
            survey, group, measure = (int(field) for field in row)
            values[(point, survey, group, measure)].append(float(value))
    expected = {}
    for key, seen in values.items():
        hosts = values.get((*key[:3], 0))
        counted = key[3] in (0, 1, 3, 14, 15, 19)
        expected[key] = {
            "runs": len(seen),
            "sum": sum(seen),
            "mean": sum(seen) / len(seen),
            "rate": sum(seen) / sum(hosts) if counted and hosts and sum(hosts) else None,
        }
    return expected


def test_a_sweep_runs_every_point_and_seed_and_merges_to_the_direct_aggregate(
    fake_setup: dict[str, Any], tmp_path: Path
) -> None:
    sweep = {"eir": [5, 20.5], "coverage": [0.0, 0.6]}
    raw = {**fake_setup, "population": 400, "seeds": 3, "seed_start": 7, "sweep": sweep}
    run = run_locally(OM, raw, tmp_path, expect_progress=False)

    names = [task.name for task in run.tasks]
    assert names == [f"run-{index:04d}" for index in range(12)] + ["manifest"]
    assert [path.name for path in run.results] == ["aggregate.csv", "aggregate.json", "runs.csv"]
    seeds = [7, 8, 9]
    points = list(itertools.product(*sweep.values()))
    for index, task in enumerate(run.tasks[:-1]):  # each run got its point and seed
        scenario = scenario_of(task)
        eir, coverage = points[index // 3]
        assert scenario.get("name") == "vcnode sweep"
        assert attribute(scenario, "demography", "popSize") == "400"
        assert attribute(scenario, "model/computationParameters", "iseed") == str(seeds[index % 3])
        assert attribute(scenario, "entomology", "scaledAnnualEIR") == str(eir)
        assert attribute(scenario, ".//deploy", "coverage") == str(coverage)
    shared = {task.inputs["fake_openmalaria.py"] for task in run.tasks[:-1]}
    assert len(shared) == 1, "extra inputs are one file for every run"

    outputs = {
        name: files["output.txt"] for name, files in run.outputs.items() if name != "manifest"
    }
    expected = expected_aggregate(sweep, seeds, outputs)
    merge_dir = tmp_path / "merge"
    rows = read_csv(merge_dir / "aggregate.csv")
    assert list(rows[0]) == [
        "point", "eir", "coverage", "survey", "age_group", "measure", "measure_name",
        "runs", "sum", "mean", "rate",
    ]  # fmt: skip
    assert len(rows) == len(expected)
    for row in rows:
        key = (int(row["point"]), int(row["survey"]), int(row["age_group"]), int(row["measure"]))
        want = expected[key]
        assert (row["eir"], row["coverage"]) == tuple(str(v) for v in points[key[0]])
        assert int(row["runs"]) == want["runs"] == 3
        assert float(row["sum"]) == pytest.approx(want["sum"])
        assert float(row["mean"]) == pytest.approx(want["mean"])
        if want["rate"] is None:
            assert row["rate"] == ""
        else:
            assert float(row["rate"]) == pytest.approx(want["rate"])
    assert {row["measure_name"] for row in rows} == {
        "nHost", "nInfect", "nPatent", "nUncomp", "nSevere", "nDirDeaths", "simulatedEIR",
    }  # fmt: skip
    # Counts are integers summed as integers; nHost's rate is 1 by definition.
    assert all("." not in row["sum"] for row in rows if row["measure"] != "36")
    assert {row["rate"] for row in rows if row["measure"] == "0"} == {"1.0"}

    document = json.loads((merge_dir / "aggregate.json").read_text())
    assert document["sweep"] == ["eir", "coverage"]
    assert document["points"][1] == {
        "point": 1,
        "values": {"eir": 5, "coverage": 0.6},
        "runs": ["run-0003", "run-0004", "run-0005"],
        "seeds": seeds,
    }
    assert len(document["rows"]) == len(rows)
    for row in document["rows"]:
        key = (row["point"], row["survey"], row["age_group"], row["measure"])
        assert row["sum"] == pytest.approx(expected[key]["sum"])
        assert row["mean"] == pytest.approx(expected[key]["mean"])
        assert row["rate"] == pytest.approx(expected[key]["rate"])

    raw_rows = read_csv(merge_dir / "runs.csv")
    lines = [
        (name, line) for name in sorted(outputs) for line in outputs[name].read_text().splitlines()
    ]
    assert len(raw_rows) == len(lines)
    for row, (name, line) in zip(raw_rows, lines, strict=True):
        index = int(name.removeprefix("run-"))
        assert row["run"] == name
        assert int(row["point"]) == index // 3
        assert int(row["seed"]) == seeds[index % 3]
        assert (row["eir"], row["coverage"]) == tuple(str(v) for v in points[index // 3])
        survey, group, measure, value = line.split("\t")
        assert (row["survey"], row["age_group"], row["measure"], row["value"]) == (
            survey, group, measure, value,
        )  # fmt: skip


def test_different_seeds_give_different_runs_and_the_same_seed_the_same(
    fake_setup: dict[str, Any], tmp_path: Path
) -> None:
    raw = {**fake_setup, "population": 300, "seeds": 2, "sweep": {"eir": [10], "coverage": [0.5]}}
    texts = []
    for attempt in ("one", "two"):
        (tmp_path / attempt).mkdir()
        run = run_locally(OM, raw, tmp_path / attempt, expect_progress=False)
        texts.append(
            [run.outputs[name]["output.txt"].read_text() for name in ("run-0000", "run-0001")]
        )
    assert texts[0][0] != texts[0][1]
    assert texts[0] == texts[1]


def test_tasks_run_in_the_users_image_and_the_manifest_in_the_worker_image(
    tmp_path: Path,
) -> None:
    params = prepare(OM, {**OM.example, "timeout_seconds": 900, "memory_mb": 300}, tmp_path)
    tasks = OM.split(params, tmp_path)
    runs, manifest = tasks[:-1], tasks[-1]
    assert len(runs) == 8  # 2 x 2 points x 2 seeds
    for task in runs:
        assert task.image == "openmalaria:local"
        assert task.command == (
            "openMalaria", "--resource-path", "/om",
            "--scenario", "/input/scenario.xml", "--output", "/output/output.txt",
        )  # fmt: skip
        assert set(task.inputs) == {"scenario.xml"}
        assert task.outputs == ("output.txt",)
        assert task.timeout_seconds == 900
        assert task.resources.memory_mb == 300
    assert manifest.name == "manifest"
    assert manifest.image == DEFAULT_IMAGE
    assert manifest.command[:2] == ("python3", "/input/openmalaria_manifest.py")
    shipped = resources.files("splitters.workers").joinpath("openmalaria_manifest.py")
    worker = manifest.inputs["openmalaria_manifest.py"]
    assert isinstance(worker, Path)
    assert worker.read_bytes() == shipped.read_bytes()
    assert manifest.outputs == ("runs.json",)
    written = json.loads((tmp_path / "runs.json").read_text())
    assert written["runs"]["run-0005"] == {"point": 2, "seed": 2}
    assert written["points"][2] == {"eir": 20, "coverage": 0.0}


def test_the_schema_file_is_looked_up_in_resource_dir_not_the_empty_working_directory(
    tmp_path: Path,
) -> None:
    tasks = OM.split(prepare(OM, OM.example, tmp_path), tmp_path)
    root = scenario_of(tasks[0])
    assert root.get(SCHEMA_LOCATION) == f"{NAMESPACE} /om/scenario_48.xsd"
    text = '<a xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{}"/>'
    for kept in ("n /srv/om/s.xsd", "n file:///om/s.xsd", "n https://example.org/s.xsd"):
        assert absolute_schema(text.format(kept), "/om") == text.format(kept)
    assert absolute_schema(text.format("n s.xsd"), "/om/") == text.format("n /om/s.xsd")
    # Only the root's attribute: not a comment that looks like it.
    commented = '<!-- xsi:schemaLocation="n s.xsd" -->' + text.format("n s.xsd")
    assert absolute_schema(
        commented, "/r"
    ) == '<!-- xsi:schemaLocation="n s.xsd" -->' + text.format("n /r/s.xsd")


def test_the_real_openmalaria_output_format_parses(tmp_path: Path) -> None:
    (tmp_path / "output.txt").write_text(REAL_OUTPUT)
    rows = results.read_output("run-0000", tmp_path / "output.txt")
    assert len(rows) == 19
    assert list(rows)[:2] == [(1, 1, 0), (1, 2, 0)]  # file order
    assert rows[(1, 1, 0)] == (40, "40")
    assert rows[(1, 0, 36)] == (0.0761017, "0.0761017")
    assert sum(value for (_, _, measure), (value, _) in rows.items() if measure == 0) == 200


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-3", -3), ("0.25", 0.25), ("1.5e+06", 1.5e6), ("2E-05", 2e-5), (".5", 0.5)],
)
def test_values_as_cpp_streams_write_them_parse(text: str, value: float) -> None:
    assert results.parse_value(text) == value


def test_nan_and_infinity_parse_and_nothing_else_does() -> None:
    assert math.isnan(results.parse_value("nan") or 0.0)
    assert math.isnan(results.parse_value("-nan") or 0.0)
    assert results.parse_value("inf") == math.inf
    assert results.parse_value("-inf") == -math.inf
    for text in ("", "1,5", "0x10", "1_000", " 1", "infinity", "1e", "e5"):
        assert results.parse_value(text) is None, text


def test_values_are_xml_escaped_and_comments_keep_their_placeholders() -> None:
    text = '<!-- @label@ and @other@ stay --><a name="@label@">@label@</a>'
    assert placeholders(text) == {"label"}
    filled = render(text, {"label": "x<y & \"z\" 'w'"})
    assert filled.startswith("<!-- @label@ and @other@ stay -->")
    element = ET.fromstring(filled.split("-->", 1)[1])
    assert element.get("name") == element.text == "x<y & \"z\" 'w'"


# --- bad parameters ---------------------------------------------------------------------

DEFAULT_TEMPLATE = resources.files("splitters").joinpath("data", "openmalaria_scenario.xml")


# Broken copies of the shipped template: file name -> (text replaced, replacement).
BROKEN_TEMPLATES = {
    "uncovered.xml": ('name="Ifakara"', 'name="@village@"'),
    "malformed.xml": ("</demography>", "</demographie>"),
    "tag.xml": ("<diagnostics>", "<diagnostics @eir@>"),
    "no_seed.xml": ('iseed="@seed@"', 'iseed="4"'),
    "no_pop.xml": ('popSize="@population@"', 'popSize="50"'),
    "not_om.xml": ('schema/scenario_48" xmlns:xsi', 'schema/other" xmlns:xsi'),
    "no_schema.xml": (f' xsi:schemaLocation="{NAMESPACE} scenario_48.xsd"', ""),
    "pop_word.xml": ('popSize="@population@"', 'popSize="@pop@"'),
}


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """Scenarios and folders to name in bad workflows, relative to tmp_path."""
    text = DEFAULT_TEMPLATE.read_text(encoding="utf-8")
    for name, (old, new) in BROKEN_TEMPLATES.items():
        assert old in text
        (tmp_path / name).write_text(text.replace(old, new, 1))
    (tmp_path / "latin1.xml").write_bytes("<a é='1'/>".encode("latin-1"))
    (tmp_path / "clashing").mkdir()
    (tmp_path / "clashing" / "scenario.xml").write_text("<x/>")
    return tmp_path


SWEEP = {"eir": [5], "coverage": [0.5]}
BASE = {"image": "om:1", "population": 100, "sweep": SWEEP}


def bad(key: str, words: str, id: str, **changes: Any) -> Any:
    """BASE with `changes` (None: left out), which split must refuse naming `key`."""
    return pytest.param({**BASE, **changes}, key, words, id=id)


BAD_PARAMETERS = [
    bad("sweep", "@village@", "placeholder-not-swept", scenario="uncovered.xml"),
    bad("sweep", "@coverage@", "sweep-key-missing", sweep={"eir": [5]}),
    bad("sweep", "no @colour@ placeholder", "unknown-sweep-key", sweep={**SWEEP, "colour": [1]}),
    bad("scenario", "not well-formed", "malformed-xml", scenario="malformed.xml"),
    bad("scenario", "(eir = 5, coverage = 0.5)", "malformed-once-filled", scenario="tag.xml"),
    bad("scenario", "@seed@", "no-seed-placeholder", scenario="no_seed.xml"),
    bad("population", "no @population@", "population-unused", scenario="no_pop.xml"),
    bad("population", "required", "population-missing", population=None),
    bad("scenario", "not an OpenMalaria scenario", "not-om", scenario="not_om.xml"),
    bad("scenario", "schemaLocation", "no-schema", scenario="no_schema.xml"),
    bad("scenario", "UTF-8", "not-utf8", scenario="latin1.xml"),
    bad("scenario", "no such file", "no-file", scenario="missing.xml"),
    bad(
        "scenario",
        "popSize is 'many'",
        "popsize-not-a-number",
        scenario="pop_word.xml",
        population=None,
        sweep={**SWEEP, "pop": ["many"]},
    ),
    bad("sweep", "empty", "empty-list", sweep={**SWEEP, "eir": []}),
    bad("sweep", "a list", "not-a-list", sweep={**SWEEP, "eir": 5}),
    bad("sweep", "not a number", "nested-list", sweep={**SWEEP, "eir": [[5]]}),
    bad("sweep", "twice", "duplicate", sweep={**SWEEP, "eir": [5, 5]}),
    bad("sweep", "finite", "infinite", sweep={**SWEEP, "eir": [math.inf]}),
    bad("sweep", "seeds and seed_start", "seed-swept", sweep={**SWEEP, "seed": [1]}),
    bad("sweep", "column", "key-is-a-column", sweep={**SWEEP, "mean": [1]}),
    bad("sweep", "placeholder name", "key-not-a-name", sweep={**SWEEP, "a b": [1]}),
    bad("command", "empty", "command-empty", command=[]),
    bad("command", "{output}", "no-output", command=["openMalaria", "-s", "{scenario}"]),
    bad("command", "{scenario}", "no-scenario", command=["openMalaria", "-o", "{output}"]),
    bad("command", "list of strings", "command-word", command=["openMalaria", 3]),
    bad("extra_inputs", "scenario.xml", "extra-clashes", extra_inputs="clashing"),
    bad("seeds", "at least 1", "no-seeds", seeds=0),
    bad("image", "required", "no-image", image=None),
]


@pytest.mark.parametrize(("raw", "key", "words"), BAD_PARAMETERS)
def test_bad_parameters_raise_splitter_error_naming_the_key(
    raw: dict[str, Any], key: str, words: str, broken: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SplitterError) as caught:  # a None value counts as absent
        OM.split(prepare(OM, raw, broken), workdir)
    assert caught.value.key == key, caught.value
    assert words in caught.value.message, caught.value
    assert list(workdir.iterdir()) == [], "nothing is written for a workflow that cannot run"
    with pytest.raises(SplitterError) as estimated:
        OM.estimate(prepare(OM, raw, broken))
    assert estimated.value.key == key


def test_independent_problems_are_reported_together(tmp_path: Path) -> None:
    raw = {**BASE, "sweep": {**SWEEP, "colour": [1]}, "command": ["openMalaria"]}
    with pytest.raises(SplitterError) as caught:
        OM.estimate(prepare(OM, raw, tmp_path))
    assert [key for key, _ in caught.value.problems] == ["sweep", "command"]


def test_values_that_read_the_same_but_write_differently_are_two_points(tmp_path: Path) -> None:
    sweep = {**SWEEP, "eir": [5, 5.0, "5"]}  # "5", "5.0" and "5" again
    with pytest.raises(SplitterError, match="listed twice"):
        OM.estimate(prepare(OM, {**BASE, "sweep": sweep}, tmp_path))
    estimate = OM.estimate(prepare(OM, {**BASE, "sweep": {**SWEEP, "eir": [5, 5.0]}}, tmp_path))
    assert estimate.task_count == 2 + 1


# --- estimate ---------------------------------------------------------------------------


def test_estimate_counts_the_tasks_and_grows_with_the_population(tmp_path: Path) -> None:
    small = OM.estimate(prepare(OM, {**BASE, "seeds": 3}, tmp_path))
    large = OM.estimate(prepare(OM, {**BASE, "seeds": 3, "population": 10_000}, tmp_path))
    assert list(tmp_path.iterdir()) == [], "an estimate writes nothing"
    assert small.task_count == large.task_count == 3 + 1  # runs and the manifest
    assert small.resources.memory_mb == 512
    assert 1 < small.seconds_per_task < large.seconds_per_task
    tasks = OM.split(prepare(OM, {**BASE, "seeds": 3}, tmp_path), tmp_path)
    assert len(tasks) == small.task_count
    assert {task.resources for task in tasks[:-1]} == {small.resources}


def test_the_example_runs_as_written_with_the_shipped_template(tmp_path: Path) -> None:
    params = prepare(OM, OM.example, tmp_path)
    assert params["scenario"] is None
    assert OM.estimate(params).task_count == 9


def test_the_registry_knows_it() -> None:
    assert isinstance(get_splitter("openmalaria"), OpenMalaria)


# --- merge ------------------------------------------------------------------------------


def sweep_outputs(
    tmp_path: Path, files: Mapping[str, str], points: int = 1
) -> dict[str, dict[str, Path]]:
    """A manifest of len(files) runs over `points` points and the given output.txt texts."""
    names = sorted(files)
    per_point = len(names) // points
    runs = [
        results.Run(name, index // per_point, index % per_point) for index, name in enumerate(names)
    ]
    manifest = tmp_path / "runs.json"
    manifest.write_bytes(
        results.manifest_json(("x",), [{"x": point} for point in range(points)], runs)
    )
    outputs: dict[str, dict[str, Path]] = {"manifest": {"runs.json": manifest}}
    for name, text in files.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        outputs[name] = {"output.txt": path}
    return outputs


GOOD = "1\t1\t0\t10\n1\t1\t14\t3\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param(
            "1\t1\t0\n", "line 1: expected survey, group, measure and value", id="3-fields"
        ),
        pytest.param("1\t1\t0\t10\t5\n", "line 1: expected", id="5-fields"),
        pytest.param("1 1 0 10\n", "line 1: expected", id="spaces"),
        pytest.param("1\t1\t0\t10\n\n1\t1\t14\t3\n", "line 2: expected", id="blank-line"),
        pytest.param("1\t1\t0\tten\n", "line 1: value 'ten' is not a number", id="value"),
        pytest.param("1\t1\t0\t10\n1\tx\t14\t3\n", "line 2: group 'x'", id="group"),
        pytest.param("1\t1\t-4\t10\n", "line 1: measure '-4'", id="measure"),
        pytest.param("0\t1\t0\t10\n", "line 1: surveys count from 1", id="survey-0"),
        pytest.param("1\t1\t0\t10\r\n", "line 1: value '10\\r'", id="crlf"),
        pytest.param("1\t1\t0\t10\n1\t1\t0\t11\n", "line 2 repeats survey 1", id="duplicate"),
        pytest.param("", "output.txt is empty", id="empty"),
    ],
)
def test_a_malformed_output_txt_fails_the_merge_naming_the_run_and_line(
    text: str, words: str, tmp_path: Path
) -> None:
    outputs = sweep_outputs(tmp_path, {"run-0000": GOOD, "run-0001": text})
    merge_dir = tmp_path / "merge"
    merge_dir.mkdir()
    with pytest.raises(MergeError) as caught:
        OM.merge(outputs, merge_dir)
    assert str(caught.value).startswith("run-0001: ")
    assert words in str(caught.value)
    assert list(merge_dir.iterdir()) == [], "no result files, not even partial ones"


def test_merge_without_runs_fails(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="no runs to merge"):
        OM.merge({}, tmp_path)
    only_manifest = {"manifest": sweep_outputs(tmp_path, {})["manifest"]}
    with pytest.raises(MergeError, match="no runs to merge"):
        OM.merge(only_manifest, tmp_path)
    assert list(tmp_path.glob("aggregate*")) == []


OUT_OF_RANGE = {
    "version": 1,
    "sweep": ["x"],
    "points": [],
    "runs": {"run-0000": {"point": 0, "seed": 1}},
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param(
            lambda o: o.pop("manifest"), "no runs.json from the manifest task", id="no-manifest"
        ),
        pytest.param(
            lambda o: o.pop("run-0001"), "missing the output of run-0001", id="missing-run"
        ),
        pytest.param(
            lambda o: o.update({"run-0009": o["run-0000"]}), "run-0009 is not a run", id="stranger"
        ),
        pytest.param(
            lambda o: o["run-0001"].clear(), "run-0001 produced no output.txt", id="no-output"
        ),
        pytest.param(
            lambda o: o["manifest"]["runs.json"].write_text("{]"),
            "not readable JSON",
            id="bad-json",
        ),
        pytest.param(
            lambda o: o["manifest"]["runs.json"].write_text(json.dumps(OUT_OF_RANGE)),
            "run-0000 has no valid point and seed",
            id="point-out-of-range",
        ),
    ],
)
def test_merge_checks_the_runs_against_the_manifest(
    change: Any, words: str, tmp_path: Path
) -> None:
    outputs = sweep_outputs(tmp_path, {"run-0000": GOOD, "run-0001": GOOD})
    change(outputs)
    with pytest.raises(MergeError, match=words):
        OM.merge(outputs, tmp_path)


def test_runs_of_one_point_must_report_the_same_rows(tmp_path: Path) -> None:
    outputs = sweep_outputs(
        tmp_path,
        {
            "run-0000": GOOD,
            "run-0001": GOOD + "1\t2\t0\t4\n",
            "run-0002": GOOD,
            "run-0003": "1\t1\t0\t9\n",
        },
        points=2,
    )
    with pytest.raises(
        MergeError, match=r"run-0001: output.txt has survey 1, group 2, measure 0, unlike run-0000"
    ):
        OM.merge(outputs, tmp_path)


def test_rates_pool_the_population_and_skip_what_is_not_a_count(tmp_path: Path) -> None:
    # Two runs: nHost 10 and 30 in age group 1; nUncomp 5 and 3; a genotype-2 count (group
    # 2000001 belongs to age group 1); a float measure; an unknown measure; age group 2 has
    # nobody, so no rate there.
    template = (
        "1 1 0 {}",
        "1 2 0 0",
        "1 1 14 {}",
        "1 2 14 0",
        "1 2000001 6 {}",
        "1 1 5 {}",
        "1 1 999 {}",
    )
    lines = "".join(row.replace(" ", "\t") + "\n" for row in template)
    first, second = lines.format(10, 5, 4, 2.5, 7), lines.format(30, 3, 6, "nan", 1)
    outputs = sweep_outputs(tmp_path, {"run-0000": first, "run-0001": second})
    OM.merge(outputs, tmp_path)
    rows = {(row["age_group"], row["measure"]): row for row in read_csv(tmp_path / "aggregate.csv")}
    assert rows[("1", "14")]["rate"] == repr(8 / 40)  # (5 + 3) / (10 + 30), not mean(0.5, 0.1)
    assert rows[("1", "14")]["mean"] == "4.0"
    assert rows[("2", "14")]["rate"] == ""  # no people in that group
    assert rows[("2000001", "6")]["rate"] == repr(10 / 40)
    assert rows[("2000001", "6")]["measure_name"] == "totalInfs"
    assert rows[("1", "5")]["rate"] == ""  # sumlogDens is not a count
    assert rows[("1", "5")]["sum"] == "nan"
    assert rows[("1", "999")]["measure_name"] == ""
    assert rows[("1", "999")]["rate"] == ""
    document = json.loads((tmp_path / "aggregate.json").read_text())
    float_row = next(row for row in document["rows"] if row["measure"] == 5)
    assert float_row["sum"] is None
    assert float_row["mean"] is None


# The start and the end of what openMalaria (26b21889, an image built as docs/openmalaria.md
# says) wrote to stderr, 319 lines in all, run by vcnode on the example with
# resource_dir = "/opt/om", a folder its image does not have.
REAL_SCHEMA_STDERR_HEAD = [
    "XSD error: instance document parsing failed",
    ":0:0 warning: unable to open primary document entity '/opt/om/scenario_48.xsd'",
    ":12:247 error: no declaration found for element 'om:scenario'",
    ":12:247 error: attribute '{http://www.w3.org/2000/xmlns/}om' is not declared for element"
    " 'om:scenario'",
]
REAL_SCHEMA_STDERR_TAIL = [
    ":192:43 error: attribute 'iseed' is not declared for element 'computationParameters'",
    "OpenMalaria: No such file or directory",
]


def run_fake(scenario: Path, resource_dir: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FAKE), "--resource-path", resource_dir, "--scenario", str(scenario),
         "--output", str(tmp_path / "output.txt")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_schema_that_cannot_be_read_fails_as_openmalaria_does_and_the_reason_names_it(
    tmp_path: Path,
) -> None:
    tasks = OM.split(prepare(OM, {**OM.example, "resource_dir": "/opt/om"}, tmp_path), tmp_path)
    scenario = tasks[0].inputs["scenario.xml"]
    assert isinstance(scenario, Path)
    ran = run_fake(scenario, "/opt/om", tmp_path)
    lines = ran.stderr.splitlines()
    assert ran.returncode == 67
    assert len(lines) == 319
    assert lines[:4] == REAL_SCHEMA_STDERR_HEAD
    assert lines[-2:] == REAL_SCHEMA_STDERR_TAIL
    assert failure_for_exit(ran.returncode, ran.stderr) == (
        "exited with code 67: :0:0 warning: unable to open primary document entity"
        " '/opt/om/scenario_48.xsd'"
    )


def test_a_missing_resource_file_fails_as_openmalaria_does_and_the_reason_names_it(
    fake_setup: dict[str, Any], tmp_path: Path
) -> None:
    om_dir = Path(fake_setup["resource_dir"])
    (om_dir / "densities.csv").unlink()
    work = tmp_path / "work"
    work.mkdir()
    tasks = OM.split(prepare(OM, {**OM.example, **fake_setup}, tmp_path), work)
    scenario = tasks[0].inputs["scenario.xml"]
    assert isinstance(scenario, Path)
    ran = run_fake(scenario, str(om_dir), tmp_path)
    assert ran.returncode == 72
    assert ran.stderr.splitlines() == [
        f"Error: Cannot read {om_dir}/densities.csv",
        "OpenMalaria: No such file or directory",
    ]
    assert failure_for_exit(ran.returncode, ran.stderr) == (
        f"exited with code 72: Error: Cannot read {om_dir}/densities.csv"
    )
