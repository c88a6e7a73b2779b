"""What a blob store holds on disk, for tests that check nothing was written."""

from __future__ import annotations

from pathlib import Path

from daemon.transfer.blobstore import SYNC_MARK


def files_under(root: Path) -> list[str]:
    """The blob files of a store (complete and partial), not the store's own sync mark."""
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != SYNC_MARK
    )
