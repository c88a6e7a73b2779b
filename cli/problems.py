"""Workflow file problems as a person wants them: one per line, each with its line number.

tomllib reports lines only for syntax errors, so the line of a key (`parameters.size`,
`tasks[1].command`) is found by reading the file's table headers and `key =` lines. A key
that is not in the file (a missing one, or one set with `--set`) gets no line.
"""

from __future__ import annotations

import re
from pathlib import Path

from daemon.errors import InvalidInputError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


def key_lines(text: str) -> dict[str, int]:
    """Each key's dotted path (arrays of tables indexed: `tasks[1].name`) -> its 1-based
    line; tables' headers are keys too."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}  # array of tables -> entries so far
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            name = ".".join(_unquote(part.strip()) for part in header.group(2).split("."))
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = f"{name}[{counts[name]}]"
            else:
                # `[tasks.resources]` after `[[tasks]]` belongs to the latest task.
                first, _, rest = name.partition(".")
                table = f"{first}[{counts[first]}].{rest}" if first in counts and rest else name
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            path = ".".join(_unquote(part.strip()) for part in key.group(1).split("."))
            lines.setdefault(f"{table}.{path}" if table else path, number)
    return lines


def line_of(key: str, lines: dict[str, int]) -> int | None:
    """The line a problem's key points at: the key itself, a splitter parameter under
    [parameters], or the nearest enclosing key that is in the file."""
    for candidate in (key, f"parameters.{key}"):
        parts = candidate.split(".")
        while parts:
            found = lines.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
    return None


def with_lines(error: InvalidInputError, text: str, path: Path) -> InvalidInputError:
    """The error with each of its `key: message` lines located in the workflow file."""
    lines = key_lines(text)
    problems = str(error).splitlines()
    located = []
    for problem in problems:
        key, sep, _ = problem.partition(": ")
        line = line_of(key, lines) if sep and " " not in key else None
        located.append(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
    if len(located) == 1:
        return InvalidInputError(located[0])
    total = len(located)
    if more := re.fullmatch(r"\.\.\. and ([\d,]+) more problems", problems[-1]):
        total += int(more.group(1).replace(",", "")) - 1  # the count the refusal kept
    return InvalidInputError(f"{total:,} problems:\n  " + "\n  ".join(located))
