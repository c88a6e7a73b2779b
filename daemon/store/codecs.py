"""JSON for the records that stores keep as columns of text (specs, results, resources).

Bytes (the content of inline blobs) are written as base64 strings.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from typing import Any

from daemon.models import FileRef, InlineBlob, ResourceRequest, TaskResult, TaskSpec


def json_default(value: object) -> str:
    """`json.dumps(default=...)` for the bytes inside records."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump(record: Any) -> str:
    return json.dumps(asdict(record), separators=(",", ":"), default=json_default)


def _inline_blobs(items: list[dict[str, str]] | None) -> tuple[InlineBlob, ...]:
    # Absent from records written before inline blobs existed.
    return tuple(
        InlineBlob(item["sha256"], base64.b64decode(item["content"])) for item in items or ()
    )


def task_spec_from_json(text: str) -> TaskSpec:
    data: dict[str, Any] = json.loads(text)
    data["resources"] = ResourceRequest(**data["resources"])
    data["command"] = tuple(data["command"])
    data["inputs"] = tuple(FileRef(**item) for item in data["inputs"])
    data["outputs"] = tuple(data["outputs"])
    data["inline_inputs"] = _inline_blobs(data.get("inline_inputs"))
    data["avoid_volunteers"] = tuple(data.get("avoid_volunteers", ()))
    return TaskSpec(**data)


def task_result_from_data(data: dict[str, Any]) -> TaskResult:
    """A result from its parsed JSON (as `dump` wrote it)."""
    data = dict(data)
    data["outputs"] = tuple(FileRef(**item) for item in data["outputs"])
    data["inline_outputs"] = _inline_blobs(data.get("inline_outputs"))
    data["logs"] = tuple(FileRef(**item) for item in data.get("logs", ()))
    return TaskResult(**data)


def task_result_from_json(text: str | None) -> TaskResult | None:
    if not text:
        return None
    return task_result_from_data(json.loads(text))
