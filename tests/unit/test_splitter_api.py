"""The splitter API: parameter checking, task templates, and the registry of workflow types."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from splitters import registry
from splitters.api import (
    Estimate,
    Parameter,
    ResourceRequest,
    Splitter,
    SplitterError,
    TaskTemplate,
    run_step,
    same_bytes,
    validate_parameters,
)
from splitters.registry import BUILTIN, ENTRY_POINT_GROUP, available, get_splitter

SCHEMA = (
    Parameter("count", int, "how many", default=3, minimum=1, maximum=10),
    Parameter("ratio", float, "a fraction", default=0.5, minimum=0.0, maximum=1.0),
    Parameter("verbose", bool, "talk more", default=False),
    Parameter("mode", str, "how", default="fast", choices=("fast", "exact")),
    Parameter("data", Path, "an input file"),
    Parameter("label", str, "a name", required=True),
)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "data.csv"
    path.write_text("1,2\n")
    return path


def test_strings_from_the_command_line_are_coerced_to_their_types(
    tmp_path: Path, data_file: Path
) -> None:
    raw = {
        "count": " 7 ",
        "ratio": "0.25",
        "verbose": "Yes",
        "mode": "exact",
        "data": "in/data.csv",
        "label": "run 1",
    }
    assert validate_parameters(SCHEMA, raw, tmp_path) == {
        "count": 7,
        "ratio": 0.25,
        "verbose": True,
        "mode": "exact",
        "data": data_file,
        "label": "run 1",
    }


def test_native_values_pass_and_absent_keys_get_their_defaults(
    tmp_path: Path, data_file: Path
) -> None:
    raw = {"count": 2, "ratio": 1, "verbose": False, "data": str(data_file), "label": "x"}
    params = validate_parameters(SCHEMA, raw, tmp_path / "elsewhere")
    assert params == {
        "count": 2,
        "ratio": 1.0,
        "verbose": False,
        "mode": "fast",
        "data": data_file,  # absolute paths ignore base_dir
        "label": "x",
    }
    assert isinstance(params["ratio"], float)


def test_an_absent_optional_key_without_default_is_none_and_none_means_absent(
    tmp_path: Path,
) -> None:
    params = validate_parameters(SCHEMA, {"label": "x", "count": None}, tmp_path)
    assert params["data"] is None
    assert params["count"] == 3


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        pytest.param({"label": "x", "colour": "red"}, "colour", "unknown", id="unknown-key"),
        pytest.param({}, "label", "required", id="missing-required"),
        pytest.param({"label": "x", "count": "1.5"}, "count", "integer", id="int-from-float-text"),
        pytest.param({"label": "x", "count": 2.5}, "count", "integer", id="int-from-float"),
        pytest.param({"label": "x", "count": True}, "count", "integer", id="int-from-bool"),
        pytest.param({"label": "x", "ratio": "half"}, "ratio", "number", id="float-from-word"),
        pytest.param({"label": "x", "ratio": "nan"}, "ratio", "finite", id="float-nan"),
        pytest.param({"label": "x", "verbose": "maybe"}, "verbose", "true or false", id="bool"),
        pytest.param({"label": 5}, "label", "string", id="str-from-int"),
        pytest.param({"label": "x", "data": "nope.csv"}, "data", "no such file", id="no-file"),
        pytest.param({"label": "x", "data": 3}, "data", "file path", id="path-from-int"),
        pytest.param({"label": "x", "data": "in"}, "data", "no such file", id="path-is-dir"),
        pytest.param({"label": "x", "count": 0}, "count", "at least 1", id="below-minimum"),
        pytest.param({"label": "x", "count": "11"}, "count", "at most 10", id="above-maximum"),
        pytest.param({"label": "x", "mode": "slow"}, "mode", "one of fast, exact", id="choices"),
    ],
)
def test_bad_values_raise_splitter_error_naming_the_key(
    raw: dict[str, Any], key: str, words: str, tmp_path: Path, data_file: Path
) -> None:
    with pytest.raises(SplitterError) as caught:
        validate_parameters(SCHEMA, raw, tmp_path)
    assert caught.value.key == key
    assert words in caught.value.message
    assert str(caught.value) == f"{key}: {caught.value.message}"


def test_splitter_error_is_bad_input_for_the_cli() -> None:
    assert SplitterError("blocks", "too many").exit_code == 2


def test_a_parameter_of_an_unsupported_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported type set"):
        Parameter("items", set, "things")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".progress", "", ".."])
def test_task_templates_refuse_names_a_volunteer_would_refuse(name: str) -> None:
    with pytest.raises(ValueError, match=r"not a file name|not a plain file name|progress file"):
        TaskTemplate(
            name="t",
            command=("true",),
            inputs={name: Path("x")},
            outputs=(),
            resources=ResourceRequest(),
            timeout_seconds=1,
        )


# --- registry ---------------------------------------------------------------------------


class EchoSplitter:
    """A third-party splitter as a plugin package would ship it: one task, echoing."""

    name = "echo"
    description = "prints its message"
    parameters = (Parameter("message", str, "what to print", default="hi"),)

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        return [
            TaskTemplate(
                name="echo",
                command=("sh", "-c", f"echo {params['message']} > /output/out.txt"),
                inputs={},
                outputs=("out.txt",),
                resources=ResourceRequest(),
                timeout_seconds=10,
            )
        ]

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        return [outputs["echo"]["out.txt"]]

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return Estimate(task_count=1, resources=ResourceRequest(), seconds_per_task=1.0)

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        return same_bytes(a, b)


ECHO_INSTANCE = EchoSplitter()
NOT_A_SPLITTER = object()


def entry_point(name: str, attribute: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{attribute}", group=ENTRY_POINT_GROUP)


def test_builtins_are_available_by_name() -> None:
    assert {"matrix_addition", "matrix_multiplication"} <= set(available())
    for name in ("matrix_addition", "matrix_multiplication"):
        splitter: Splitter = get_splitter(name)
        assert splitter.name == name
        assert splitter.description
        assert {parameter.name for parameter in splitter.parameters} >= {"a", "b", "blocks"}


def test_an_unknown_type_names_workflow_type_and_lists_what_exists() -> None:
    with pytest.raises(SplitterError) as caught:
        get_splitter("matrix_division", [entry_point("echo", "EchoSplitter")])
    assert caught.value.key == "workflow.type"
    assert "matrix_division" in caught.value.message
    assert f"available: {', '.join(sorted({'echo', *BUILTIN}))}" in caught.value.message


@pytest.mark.parametrize("attribute", ["EchoSplitter", "ECHO_INSTANCE"])
def test_an_entry_point_splitter_is_listed_and_loaded(attribute: str) -> None:
    found = [entry_point("echo", attribute)]
    assert available(found) == sorted({"echo", *BUILTIN})
    splitter = get_splitter("echo", found)
    assert isinstance(splitter, EchoSplitter)
    assert splitter.estimate({}).task_count == 1


def test_a_package_cannot_take_over_a_builtin_name() -> None:
    found = [entry_point("matrix_multiplication", "EchoSplitter")]
    assert available(found).count("matrix_multiplication") == 1
    assert not isinstance(get_splitter("matrix_multiplication", found), EchoSplitter)


@pytest.mark.parametrize(
    ("found", "words"),
    [
        pytest.param(
            [EntryPoint("echo", "no_such_package.sweep:Sweep", ENTRY_POINT_GROUP)],
            "cannot load",
            id="broken-package",
        ),
        pytest.param([entry_point("echo", "NOT_A_SPLITTER")], "not a splitter", id="not-one"),
        pytest.param([entry_point("echo2", "EchoSplitter")], "calls itself 'echo'", id="renamed"),
        pytest.param(
            [entry_point("echo", "EchoSplitter"), entry_point("echo", "ECHO_INSTANCE")],
            "offered twice",
            id="two-packages",
        ),
    ],
)
def test_a_bad_entry_point_is_a_splitter_error_on_workflow_type(
    found: list[EntryPoint], words: str
) -> None:
    with pytest.raises(SplitterError) as caught:
        get_splitter(found[0].name, found)
    assert caught.value.key == "workflow.type"
    assert words in caught.value.message


def test_installed_entry_points_come_from_the_vcnode_splitters_group() -> None:
    assert all(ep.group == ENTRY_POINT_GROUP for ep in registry.installed_entry_points())
    assert available() == available(registry.installed_entry_points())


def test_the_api_and_registry_load_no_numpy() -> None:
    """Daemons without the manager role import these too; numpy costs them ~15 MiB."""
    code = (
        "import sys, splitters.api, splitters.registry;"
        "splitters.registry.available();"
        "sys.exit('numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


class _Named:
    name = "plugin"


def test_a_splitters_own_bug_becomes_an_error_naming_the_splitter_and_step() -> None:
    def broken() -> None:
        raise KeyError("rows")

    with pytest.raises(SplitterError, match=r"plugin split: the splitter failed: KeyError: 'rows'"):
        run_step(_Named(), "split", broken)  # type: ignore[arg-type]


def test_what_a_splitter_raises_on_purpose_passes_unchanged() -> None:
    meant = SplitterError("blocks", "must divide the size")

    def refuses() -> None:
        raise meant

    with pytest.raises(SplitterError) as raised:
        run_step(_Named(), "split", refuses)  # type: ignore[arg-type]
    assert raised.value is meant
    assert run_step(_Named(), "estimate", lambda: 7) == 7  # type: ignore[arg-type]


def test_a_refusal_lists_ten_problems_and_counts_the_rest() -> None:
    errors = [SplitterError(f"tasks[{i}].name", "required") for i in range(200_000)]
    combined = SplitterError.combine(errors)
    lines = str(combined).splitlines()
    assert lines[:2] == ["tasks[0].name: required", "tasks[1].name: required"]
    assert lines[10:] == ["... and 199,990 more problems"]
    assert len(combined.problems) == 200_000, "every problem is still there for who reads them"
