"""Workflow types by name: the built-in splitters plus third-party ones from entry points.

A package adds a workflow type by declaring, in its pyproject.toml,

    [project.entry-points."vcnode.splitters"]
    my_sweep = "my_package.sweep:MySweep"

where the object is a splitter (see `splitters.api.Splitter`) or a class whose no-argument
instance is one, and its `name` is the entry point's name. Built-in names cannot be taken
over by a package. `equivalent` is not required of a plugin written before it existed:
`splitters.api.outputs_agree` compares such a splitter's outputs byte for byte. Nothing is
imported until asked for: listing names loads no plugin code and no numpy.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from splitters.api import Splitter, SplitterError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vcnode.splitters"
# The workflow file key that names the type: the one to fix when a name is unknown.
TYPE_KEY = "workflow.type"
BUILTIN = {
    "matrix_addition": "splitters.matrix_addition:MatrixAddition",
    "matrix_multiplication": "splitters.matrix_multiplication:MatrixMultiplication",
    "parameter_sweep": "splitters.parameter_sweep:ParameterSweep",
    "image_batch": "splitters.image_batch:ImageBatch",
    "openmalaria": "splitters.openmalaria:OpenMalaria",
    "ml_training": "splitters.ml_training:MlTraining",
}
_REQUIRED_ATTRIBUTES = ("name", "description", "parameters", "split", "merge", "estimate")


def installed_entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _third_party(found: Iterable[EntryPoint] | None) -> dict[str, list[EntryPoint]]:
    """Entry points by name, built-in names left out. `found` is a seam for tests; None
    means what is installed."""
    by_name: dict[str, list[EntryPoint]] = {}
    for entry_point in installed_entry_points() if found is None else found:
        if entry_point.name in BUILTIN:
            log.warning(
                "ignoring splitter entry point %s = %s: %s is built in",
                entry_point.name,
                entry_point.value,
                entry_point.name,
            )
            continue
        by_name.setdefault(entry_point.name, []).append(entry_point)
    return by_name


def available(found: Iterable[EntryPoint] | None = None) -> list[str]:
    """Every workflow type name, sorted; loads nothing."""
    return sorted({*BUILTIN, *_third_party(found)})


def get_splitter(name: str, found: Iterable[EntryPoint] | None = None) -> Splitter:
    """The splitter for a workflow type; SplitterError on `workflow.type` if there is none
    (or its package is broken)."""
    if name in BUILTIN:
        module_name, attribute = BUILTIN[name].split(":")
        return _as_splitter(name, getattr(importlib.import_module(module_name), attribute))
    candidates = _third_party(found).get(name, [])
    if not candidates:
        names = ", ".join(available(found))
        raise SplitterError(TYPE_KEY, f"unknown workflow type {name!r} (available: {names})")
    if len(candidates) > 1:
        sources = ", ".join(entry_point.value for entry_point in candidates)
        raise SplitterError(
            TYPE_KEY, f"workflow type {name!r} is offered twice ({sources}): uninstall one"
        )
    entry_point = candidates[0]
    try:
        loaded = entry_point.load()
    except Exception as error:  # a broken plugin must not take the manager down
        raise SplitterError(
            TYPE_KEY, f"cannot load workflow type {name!r} from {entry_point.value}: {error}"
        ) from error
    return _as_splitter(name, loaded, entry_point.value)


def _as_splitter(name: str, loaded: object, source: str = "") -> Splitter:
    origin = source or BUILTIN.get(name, name)
    try:
        candidate = loaded() if isinstance(loaded, type) else loaded
    except Exception as error:
        raise SplitterError(TYPE_KEY, f"cannot create workflow type {name!r}: {error}") from error
    missing = [attr for attr in _REQUIRED_ATTRIBUTES if not hasattr(candidate, attr)]
    if missing:
        raise SplitterError(TYPE_KEY, f"{origin} is not a splitter: it has no {', '.join(missing)}")
    if getattr(candidate, "name", None) != name:
        raise SplitterError(
            TYPE_KEY,
            f"{origin} calls itself {getattr(candidate, 'name', None)!r}, not {name!r}",
        )
    return cast(Splitter, candidate)
