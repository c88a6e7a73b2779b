"""Which answer a copy's outputs give: the same files as an earlier copy's, byte for byte or
as its splitter judges equivalent (floating-point order may differ between machines)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from daemon.errors import NotFoundError
from daemon.models import FileRef, TaskResult
from daemon.transfer.blobstore import BlobStore
from splitters.api import Splitter, outputs_agree


async def answer_of(
    result: TaskResult,
    answers: Sequence[TaskResult],
    blobs: BlobStore,
    splitter: Splitter | None,
) -> int:
    """The index of the first of `answers` whose outputs match `result`'s; len(answers) for
    an answer not seen yet."""
    for index, known in enumerate(answers):
        if await _same_outputs(result.outputs, known.outputs, blobs, splitter):
            return index
    return len(answers)


async def _same_outputs(
    mine: Sequence[FileRef],
    theirs: Sequence[FileRef],
    blobs: BlobStore,
    splitter: Splitter | None,
) -> bool:
    by_name = {ref.name: ref for ref in theirs}
    if set(by_name) != {ref.name for ref in mine}:
        return False
    differing = [(ref, by_name[ref.name]) for ref in mine if ref.sha256 != by_name[ref.name].sha256]
    if not differing:
        return True
    if splitter is None:
        return False
    for a, b in differing:
        try:
            paths = await blobs.path(a.sha256), await blobs.path(b.sha256)
        except NotFoundError:
            return False
        # The splitter reads whole files: on a thread, never on the event loop.
        same = await asyncio.to_thread(outputs_agree, splitter, a.name, paths[0], paths[1])
        if not same:
            return False
    return True
