"""`vcnode docs [TOPIC]`: the guides shipped inside the package, for those who installed
vcnode with pip and have neither the repository nor a network (a volunteer-computing lab's
machines often have no route out)."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable

from daemon.errors import InvalidInputError, NodeError

# Copies of the repository's docs/*.md (tests/unit/test_docs_cli.py keeps them equal).
FOLDER = "shipped_docs"
SUFFIX = ".md"


def _pages() -> dict[str, Traversable]:
    folder = resources.files("cli").joinpath(FOLDER)
    return {
        page.name.removesuffix(SUFFIX): page
        for page in folder.iterdir()
        if page.is_file() and page.name.endswith(SUFFIX)
    }


def topics() -> list[str]:
    return sorted(_pages())


def text(topic: str) -> str:
    """The page of a topic; an unknown topic's error lists the known ones."""
    pages = _pages()
    if topic not in pages:
        known = ", ".join(sorted(pages)) or "none (this install has no docs folder)"
        raise InvalidInputError(f"no docs on {topic!r}; topics: {known}")
    try:
        return pages[topic].read_text(encoding="utf-8")
    except OSError as error:
        raise NodeError(f"cannot read the docs on {topic!r}: {error}") from None


def _title(page: str) -> str:
    """A page's first heading, without the #s."""
    for line in page.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def docs(args: argparse.Namespace) -> int:
    if args.topic is not None:
        sys.stdout.write(text(args.topic))
        return 0
    names = topics()
    width = max((len(name) for name in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {_title(text(name))}")
    print("\nread one: vcnode docs TOPIC")
    return 0
