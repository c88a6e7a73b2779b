"""Workflow files with several problems: every one reported, each at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.problems import key_lines, line_of, with_lines
from daemon.errors import InvalidInputError
from splitters.api import SplitterError, TaskOutput
from workflows.file import parse_workflow
from workflows.graph import OnFailure
from workflows.validation_policy import Mode, ValidationPolicy

TWO_BAD_TASKS = """\
[workflow]
name = "dag"

[[tasks]]
name = "prep"
command = "not a list"
timeout = 0

[[tasks]]
name = "train"
command = ["python3", "/input/train.py"]
depends_on = ["nobody"]

[tasks.resources]
memory_mb = -5
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SplitterError) as raised:
        parse_workflow(text)
    return list(raised.value.problems)


def test_every_problem_of_every_task_is_reported() -> None:
    keys = [key for key, _ in problems_of(TWO_BAD_TASKS)]
    assert keys == ["tasks[0].command", "tasks[0].timeout", "tasks[1].resources.memory_mb"]


def test_graph_problems_are_reported_once_every_task_reads() -> None:
    text = TWO_BAD_TASKS.replace('"not a list"', '["true"]').replace("timeout = 0", "")
    text = text.replace("memory_mb = -5", "memory_mb = 5")
    assert problems_of(text) == [("tasks[1].depends_on", "no task is named 'nobody'")]


def test_an_input_from_another_task_implies_depending_on_it() -> None:
    workflow = parse_workflow(
        '[workflow]\nname = "x"\n'
        '[[tasks]]\nname = "a"\ncommand = ["true"]\noutputs = ["m.npz"]\n'
        '[[tasks]]\nname = "b"\ncommand = ["true"]\n'
        'inputs = { "model.npz" = { task = "a", output = "m.npz" } }\n'
    )
    b = workflow.tasks[1]
    assert b.inputs == {"model.npz": TaskOutput("a", "m.npz")}
    assert b.depends_on == ("a",)
    assert workflow.input_files() == []


def test_reading_an_undeclared_output_is_a_problem_on_the_reader() -> None:
    text = (
        '[workflow]\nname = "x"\n'
        '[[tasks]]\nname = "a"\ncommand = ["true"]\n'
        '[[tasks]]\nname = "b"\ncommand = ["true"]\n'
        'inputs = { "m" = { task = "a", output = "m.npz" } }\n'
    )
    assert problems_of(text) == [
        ("tasks[1].depends_on", "b reads m.npz from a, which declares no such output")
    ]


def test_keys_are_located_in_tables_arrays_of_tables_and_subtables() -> None:
    lines = key_lines(TWO_BAD_TASKS)
    assert lines["workflow.name"] == 2
    assert lines["tasks[0].command"] == 6
    assert lines["tasks[1].depends_on"] == 12
    assert lines["tasks[1].resources.memory_mb"] == 15
    assert line_of("tasks[0].timeout", lines) == 7
    assert line_of("tasks[1].image", lines) == 9, "a missing key points at its table"
    assert line_of("nowhere", lines) is None


def test_a_splitter_parameter_is_found_under_parameters() -> None:
    lines = key_lines('[workflow]\ntype = "m"\n\n[parameters]\nsize = "big"\n')
    assert line_of("size", lines) == 5


def test_with_lines_puts_every_problem_on_its_own_line() -> None:
    error = SplitterError.combine(
        [SplitterError("tasks[0].command", "bad"), SplitterError("tasks[1].timeout", "bad")]
    )
    located = with_lines(error, TWO_BAD_TASKS, Path("wf.toml"))
    assert isinstance(located, InvalidInputError)
    assert str(located).splitlines() == [
        "2 problems:",
        "  wf.toml:6: tasks[0].command: bad",
        "  wf.toml:9: tasks[1].timeout: bad",
    ]


def test_on_failure_is_read_and_checked() -> None:
    text = '[workflow]\ntype = "matrix_addition"\non_failure = "fail"\n'
    assert parse_workflow(text).on_failure is OnFailure.FAIL
    assert parse_workflow('[workflow]\ntype = "m"\n').on_failure is OnFailure.SKIP
    problems = problems_of('[workflow]\ntype = "m"\non_failure = "explode"\ncolor = 1\n')
    assert [key for key, _ in problems] == ["workflow.color", "workflow.on_failure"]


@pytest.mark.parametrize("name", ["..\\\\up", ".progress", "a/b"])
def test_a_task_file_name_the_volunteer_would_refuse_is_refused_in_the_file(name: str) -> None:
    text = (
        f'[workflow]\nname = "w"\n[[tasks]]\nname = "t"\ncommand = ["true"]\noutputs = ["{name}"]\n'
    )
    [(key, message)] = problems_of(text)
    assert key == "tasks[0].outputs"
    assert message.startswith(repr(name.replace("\\\\", "\\")))


def test_a_long_refusal_counts_every_problem_while_it_lists_ten(tmp_path: Path) -> None:
    error = SplitterError.combine(
        [SplitterError(f"tasks[{i}]", "must be a table") for i in range(25)]
    )
    located = with_lines(error, "[[tasks]]\n" * 25, tmp_path / "wf.toml")
    lines = str(located).splitlines()
    assert lines[0] == "25 problems:"
    assert lines[-1] == f"  {tmp_path / 'wf.toml'}: ... and 15 more problems"


def test_validation_is_adaptive_unless_the_workflow_or_a_task_says_otherwise() -> None:
    parsed = parse_workflow(
        '[workflow]\nname = "v"\nvalidation = "quorum"\nreplicas = 3\nquorum = 2\n\n'
        '[[tasks]]\nname = "a"\ncommand = ["true"]\n\n'
        '[[tasks]]\nname = "b"\ncommand = ["true"]\nvalidation = "none"\n\n'
        '[[tasks]]\nname = "c"\ncommand = ["true"]\nspot_check_rate = 0.5\n'
    )
    assert parsed.validation == ValidationPolicy(Mode.QUORUM, replicas=3, quorum=2)
    a, b, c = parsed.tasks
    assert a.validation is None  # the workflow's
    assert b.validation == ValidationPolicy(Mode.NONE, replicas=3, quorum=2)
    assert c.validation == ValidationPolicy(Mode.QUORUM, 3, 2, spot_check_rate=0.5)
    default = parse_workflow('[workflow]\ntype = "matrix_addition"\n[parameters]\nsize = 4\n')
    assert default.validation == ValidationPolicy()
    assert default.validation.mode is Mode.ADAPTIVE


def test_every_bad_validation_key_is_reported_with_what_would_do() -> None:
    found = dict(
        problems_of(
            '[workflow]\nname = "v"\nvalidation = "majority"\nquorum = 1.5\n'
            'spot_check_rate = "often"\n\n'
            '[[tasks]]\nname = "a"\ncommand = ["true"]\nvalidation = "quorum"\nquorum = 5\n'
            "replicas = 2\n"
        )
    )
    assert found["workflow.validation"].startswith("must be one of none, quorum, adaptive")
    assert found["workflow.quorum"] == "must be a whole number, got 1.5"
    assert found["workflow.spot_check_rate"] == "must be a number, got 'often'"
    assert found["tasks[0].replicas"] == "must be between quorum (5) and 16"
