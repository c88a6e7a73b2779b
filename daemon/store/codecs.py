"""JSON for the records that stores keep as columns of text (specs, results, resources)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from daemon.models import FileRef, ResourceRequest, TaskResult, TaskSpec


def dump(record: Any) -> str:
    return json.dumps(asdict(record), separators=(",", ":"))


def task_spec_from_json(text: str) -> TaskSpec:
    data: dict[str, Any] = json.loads(text)
    data["resources"] = ResourceRequest(**data["resources"])
    data["command"] = tuple(data["command"])
    data["inputs"] = tuple(FileRef(**item) for item in data["inputs"])
    data["outputs"] = tuple(data["outputs"])
    return TaskSpec(**data)


def task_result_from_json(text: str | None) -> TaskResult | None:
    if not text:
        return None
    data: dict[str, Any] = json.loads(text)
    data["outputs"] = tuple(FileRef(**item) for item in data["outputs"])
    return TaskResult(**data)
