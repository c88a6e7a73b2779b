"""Small files carried inside a task's offer and result instead of moved by TransferService.

Otherwise a task of tiny files pays two transfers, its input down and its output up, each a
gRPC call with a blob written at both ends; on the 2-core machines measured that cost more
than a short container's own run (BENCHMARKS.md, task_overhead). So files of up to
MAX_FILE_BYTES, MAX_TASK_BYTES a task in all, travel in the TaskSpec the coordinator offers
and in the TaskResult coming back. The bounds are small because the coordinator keeps queued
specs in memory and results in its event log. Whoever receives inline bytes checks them
against the FileRef naming them, as it would any blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace

from daemon.errors import NodeError
from daemon.models import FileRef, InlineBlob, TaskResult

MAX_FILE_BYTES = 4096
MAX_TASK_BYTES = 8192


class InlineBlobError(NodeError):
    """Inline bytes that do not match the file they stand for, or exceed the bounds."""


def pick(sizes: Sequence[int]) -> list[bool]:
    """Which of a task's files travel inline: in order, each small enough, while the task's
    budget lasts."""
    chosen = []
    budget = MAX_TASK_BYTES
    for size in sizes:
        fits = size <= MAX_FILE_BYTES and size <= budget
        if fits:
            budget -= size
        chosen.append(fits)
    return chosen


def blob_of(content: bytes) -> InlineBlob:
    return InlineBlob(hashlib.sha256(content).hexdigest(), content)


def verified(refs: Iterable[FileRef], blobs: Sequence[InlineBlob]) -> dict[str, bytes]:
    """The inline bytes of the files `refs` name, by sha256, each checked against its ref;
    files without inline bytes are left out. InlineBlobError if any is wrong or the blobs
    exceed the bounds (a peer may send anything)."""
    if sum(len(blob.content) for blob in blobs) > MAX_TASK_BYTES:
        raise InlineBlobError(
            f"{len(blobs)} inline files hold more than the {MAX_TASK_BYTES} bytes a task may "
            "carry inline"
        )
    by_sha256 = {blob.sha256: blob.content for blob in blobs}
    found: dict[str, bytes] = {}
    for ref in refs:
        content = by_sha256.get(ref.sha256)
        if content is None:
            continue
        if len(content) != ref.size or hashlib.sha256(content).hexdigest() != ref.sha256:
            raise InlineBlobError(
                f"the inline bytes of {ref.name} ({len(content)} bytes) do not match its "
                f"sha256 {ref.sha256[:12]} and size {ref.size}"
            )
        found[ref.sha256] = content
    return found


def with_checked_outputs(result: TaskResult) -> TaskResult:
    """The result with only the inline outputs it names, each checked; a volunteer that
    sent wrong ones failed the attempt."""
    if not result.inline_outputs:
        return result
    try:
        carried = verified((*result.outputs, *result.logs), result.inline_outputs)
    except InlineBlobError as error:
        return replace(
            result,
            error=f"the volunteer sent unusable inline outputs: {error}",
            outputs=(),
            inline_outputs=(),
            logs=(),
        )
    return replace(result, inline_outputs=tuple(map(InlineBlob, carried, carried.values())))
