"""Blob ids: the sha256 of the content, as 64 lowercase hex digits, and nothing else.

Ids arrive from peers and become file names, so every path is built from an id that passed
`check_blob_id` first: '../../x', '', upper case or a trailing newline never reach the disk.
"""

from __future__ import annotations

import re

from daemon.transfer.errors import InvalidBlobIdError

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


def is_blob_id(text: str) -> bool:
    return _BLOB_ID.fullmatch(text) is not None


def check_blob_id(text: str) -> str:
    if not is_blob_id(text):
        shown = text if len(text) <= 80 else f"{text[:77]}..."
        raise InvalidBlobIdError(
            f"{shown!r} is not a blob id: expected a sha256 as 64 lowercase hex digits"
        )
    return text
