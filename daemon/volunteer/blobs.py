"""The volunteer's blob cache and its transfers with managers (TransferService)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from daemon.models import FileRef
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.client import download, upload

GIB = 1024**3
HASH_BLOCK_BYTES = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class BlobTransfers:
    def __init__(self, root: Path, quota_bytes: int) -> None:
        self.store = BlobStore(root, max_blob_bytes=quota_bytes, quota_bytes=quota_bytes)

    async def open(self) -> None:
        await self.store.open()

    async def fetch(self, manager_address: str, ref: FileRef) -> Path:
        return await download(manager_address, ref.sha256, ref.size, self.store)

    async def send(self, manager_address: str, path: Path, purpose: str) -> FileRef:
        sha256, size = await asyncio.to_thread(sha256_file, path)
        await upload(manager_address, path, sha256, size, purpose)
        return FileRef(path.name, sha256, size)
