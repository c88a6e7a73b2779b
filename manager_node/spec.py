"""Reading a workflow file: `[workflow]` (name, type) and `[parameters]`, with `--set` overrides.

Errors name the key (and the line, where TOML gives one), so a person can go straight to it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from splitters.api import SplitterError


@dataclass(frozen=True)
class WorkflowFile:
    name: str
    type: str
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs; values stay strings, the splitter's schema types them."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SplitterError("--set", f"expected key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


def parse_workflow(text: str, overrides: Mapping[str, str] | None = None) -> WorkflowFile:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SplitterError("workflow file", f"not valid TOML: {error}") from None
    workflow = document.get("workflow")
    if not isinstance(workflow, dict):
        raise SplitterError("workflow", "missing the [workflow] table (with name and type)")
    unknown = sorted(set(document) - {"workflow", "parameters"})
    if unknown:
        raise SplitterError(unknown[0], "unknown table; expected [workflow] and [parameters]")
    workflow_type = workflow.get("type")
    if not isinstance(workflow_type, str) or not workflow_type:
        raise SplitterError(
            "workflow.type", "missing: name a workflow type (e.g. matrix_multiplication)"
        )
    name = workflow.get("name", workflow_type)
    if not isinstance(name, str) or not name.strip():
        raise SplitterError("workflow.name", "must be a non-empty string")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise SplitterError("parameters", "must be a table")
    return WorkflowFile(
        name=name.strip(), type=workflow_type, parameters={**parameters, **(overrides or {})}
    )
