"""`node init TYPE [-o FILE]`: a ready-to-run workflow file for a workflow type, every
parameter in it with its help, so the file documents itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.docs import topics
from daemon.errors import InvalidInputError, NodeError
from daemon.toml_values import toml_key, toml_value
from splitters.api import Directory, Parameter, Splitter
from splitters.registry import available, get_splitter
from workflows.file import EXPLICIT_TYPE

EXPLICIT_EXAMPLE = """\
# A workflow that lists its tasks: each runs COMMAND in IMAGE, reads its inputs at
# /input/NAME and writes its outputs to /output/NAME. A task waits for the tasks it
# depends on; an input may be another task's output.
# Check it:  node validate {file}
# Run it:    node submit {file} --wait

[workflow]
name = "pipeline"
on_failure = "skip"    # a failed task's dependents are skipped (or "fail")

[[tasks]]
name = "numbers"
command = ["sh", "-c", "seq 1 100 > /output/numbers.txt"]
outputs = ["numbers.txt"]

[[tasks]]
name = "squares"
command = ["sh", "-c", "awk '{{ print $1 * $1 }}' /input/in.txt > /output/squares.txt"]
inputs = {{ "in.txt" = {{ task = "numbers", output = "numbers.txt" }} }}
outputs = ["squares.txt"]
timeout = 60          # seconds
retries = 1           # runs again once if it fails by itself

[tasks.resources]
cpus = 1
memory_mb = 128

[[tasks]]
name = "total"
command = ["sh", "-c", "awk '{{ s += $1 }} END {{print s}}' /input/squares.txt >/output/total.txt"]
inputs = {{ "squares.txt" = {{ task = "squares", output = "squares.txt" }} }}
outputs = ["total.txt"]
"""

_PLACEHOLDERS: dict[type, str] = {
    int: "0",
    float: "0.0",
    bool: "false",
    str: '""',
    Path: '"path/to/file"',
    Directory: '"path/to/folder"',
    list: "[]",
    dict: "{}",
}


def _describe(parameter: Parameter) -> str:
    words = [parameter.help]
    if parameter.choices:
        words.append("one of " + ", ".join(str(choice) for choice in parameter.choices))
    if parameter.minimum is not None:
        words.append(f"at least {parameter.minimum:g}")
    if parameter.maximum is not None:
        words.append(f"at most {parameter.maximum:g}")
    if parameter.required:
        words.append("required")
    return "; ".join(words)


def render(type_name: str, file_name: str = "workflow.toml") -> str:
    """The workflow file `node init` writes for this type."""
    if type_name == EXPLICIT_TYPE:
        return EXPLICIT_EXAMPLE.format(file=file_name)
    splitter: Splitter = get_splitter(type_name)
    example: dict[str, Any] = dict(getattr(splitter, "example", {}) or {})
    lines = [f"# {splitter.description}"]
    if type_name in topics():
        lines.append(f"# Read first: vcnode docs {type_name}")
    lines += [
        f"# Check it:  node validate {file_name}",
        f"# Run it:    node submit {file_name} --wait   (change a value: --set key=value)",
        "",
        "[workflow]",
        f"name = {toml_value(type_name.replace('_', '-'))}",
        f"type = {toml_value(type_name)}",
        "# what a task that fails for good does to the tasks after it: skip or fail",
        'on_failure = "skip"',
        "",
        "[parameters]",
    ]
    for parameter in splitter.parameters:
        lines.append(f"# {_describe(parameter)}")
        value = example.get(parameter.name, parameter.default)
        key = toml_key(parameter.name)
        if value is None:
            lines.append(f"# {key} = {_placeholder(parameter)}")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def _placeholder(parameter: Parameter) -> str:
    """A value of the parameter's type to show commented out: its minimum if it has one (a
    placeholder of 0 would itself be refused)."""
    if parameter.minimum is not None and parameter.type in (int, float):
        return toml_value(parameter.type(parameter.minimum))
    return _PLACEHOLDERS.get(parameter.type, "")


def init(args: argparse.Namespace) -> int:
    types = [EXPLICIT_TYPE, *available()]
    if args.type not in types:
        raise InvalidInputError(
            f"unknown workflow type {args.type!r}; choose one of: {', '.join(types)}"
        )
    if args.output is None:
        sys.stdout.write(render(args.type))
        return 0
    output: Path = args.output
    if output.exists() and not args.force:
        raise InvalidInputError(f"{output} exists; choose another file or add --force")
    try:
        output.write_text(render(args.type, str(output)), encoding="utf-8")
    except OSError as error:
        raise NodeError(f"cannot write {output}: {error.strerror}") from None
    print(f"wrote {output}; check it with: node validate {output}")
    return 0
