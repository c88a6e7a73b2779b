"""The identity of a local file as the blob store knows it: its sha256 and size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of the file, read once."""
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256")
        return digest.hexdigest(), os.fstat(file.fileno()).st_size
