"""`node init`: for every workflow type, a file that parses, validates and documents itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cli.init import render
from cli.workflow_file import check_locally
from splitters.registry import available, get_splitter
from workflows.file import EXPLICIT_TYPE, parse_workflow

TYPES = [EXPLICIT_TYPE, *available()]


@pytest.mark.parametrize("type_name", TYPES)
def test_the_written_file_is_a_valid_workflow_of_that_type(type_name: str, tmp_path: Path) -> None:
    text = render(type_name, "wf.toml")
    tomllib.loads(text)  # raises if it is not TOML
    workflow = parse_workflow(text)
    assert workflow.type == type_name
    assert check_locally(workflow, tmp_path) > 0


@pytest.mark.parametrize("type_name", available())
def test_every_parameter_is_in_the_file_with_its_help(type_name: str) -> None:
    text = render(type_name)
    for parameter in get_splitter(type_name).parameters:
        assert f"# {parameter.help}" in text
        assert f"{parameter.name} = " in text, f"{parameter.name} is missing"


def test_the_explicit_example_is_a_dag_passing_data() -> None:
    workflow = parse_workflow(render(EXPLICIT_TYPE))
    assert [task.depends_on for task in workflow.tasks] == [(), ("numbers",), ("squares",)]


def test_the_openmalaria_file_points_to_the_guide_a_pip_install_ships() -> None:
    text = render("openmalaria")
    assert "# Read first: vcnode docs openmalaria" in text
    assert "docs/openmalaria.md" not in text, "a pip install has no docs/ folder"
    image_help = next(line for line in text.splitlines() if line.startswith("# Docker image"))
    assert "vcnode docs openmalaria" in image_help
