"""`vcnode docs [TOPIC]`: the guides a pip install carries, read without the repository."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from cli import docs
from cli.main import main

REPO_DOCS = Path(__file__).parents[2] / "docs"


def test_a_topic_prints_its_guide(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "openmalaria"]) == 0
    printed = capsys.readouterr().out
    assert printed == (REPO_DOCS / "openmalaria.md").read_text(encoding="utf-8")
    assert "26b21889e6b7b7bcec8c57ea274a88faeedffd12" in printed


def test_without_a_topic_the_topics_are_listed_with_their_titles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["docs"]) == 0
    printed = capsys.readouterr().out
    assert "openmalaria  OpenMalaria sweeps" in printed
    assert "vcnode docs TOPIC" in printed


def test_an_unknown_topic_is_refused_naming_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["docs", "../README"]) == 2
    error = capsys.readouterr().err
    assert "no docs on '../README'" in error
    assert "topics: openmalaria" in error


def test_every_guide_in_docs_ships_in_the_package_unchanged() -> None:
    """The package carries copies (a pip install has no docs/ folder): they must not drift."""
    shipped = resources.files("cli").joinpath(docs.FOLDER)
    guides = sorted(page.stem for page in REPO_DOCS.glob("*.md"))
    assert docs.topics() == guides, f"copy docs/*.md into cli/{docs.FOLDER}/"
    for name in guides:
        assert (
            shipped.joinpath(f"{name}.md").read_bytes() == (REPO_DOCS / f"{name}.md").read_bytes()
        ), f"cli/{docs.FOLDER}/{name}.md differs: cp docs/{name}.md cli/{docs.FOLDER}/"


def test_the_package_data_names_the_shipped_guides() -> None:
    """A wheel holds only what package-data lists: the folder must be in it."""
    pyproject = tomllib.loads((REPO_DOCS.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"{docs.FOLDER}/*.md" in pyproject["tool"]["setuptools"]["package-data"]["cli"]
