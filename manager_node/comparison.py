"""Which answer a copy's outputs give: the same files as an earlier copy's, byte for byte or
as its splitter judges equivalent (floating-point order may differ between machines)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from daemon.errors import NotFoundError
from daemon.models import FileRef, TaskResult
from daemon.transfer.blobstore import BlobStore
from splitters.api import Splitter

log = logging.getLogger(__name__)


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
        same = await asyncio.to_thread(_equivalent, splitter, a.name, paths[0], paths[1])
        if not same:
            return False
    return True


def _equivalent(splitter: Splitter, name: str, a: Path, b: Path) -> bool:
    try:
        return bool(splitter.equivalent(name, a, b))
    except Exception:
        # A comparator's bug must not take the manager down: the copies simply differ.
        log.exception("splitter %s: comparing copies of %s failed", splitter.name, name)
        return False
