"""Task images as blobs: the manager exports each image its own Docker engine holds, once
per image ID, so volunteers that lack it can fetch it over TransferService and load it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from daemon.models import FileRef
from daemon.runtime.docker import DockerRuntime
from daemon.transfer.blobstore import BlobStore
from manager_node.store import ManagerStore

log = logging.getLogger(__name__)

ARCHIVE_NAME = "image.tar"


class ImageArchives:
    def __init__(self, blobs: BlobStore, store: ManagerStore, scratch: Path) -> None:
        self._blobs = blobs
        self._store = store
        self._scratch = scratch
        self._docker = DockerRuntime()
        self._lock = asyncio.Lock()

    async def archive_for(self, image: str) -> tuple[str, FileRef] | None:
        """The image's ID and archive blob, or None when this host's engine lacks it (then
        volunteers need the image already)."""
        async with self._lock:
            try:
                image_id = await self._docker.image_id(image)
            except Exception as error:  # no engine here is a normal manager setup
                log.info("cannot export %s (%s): volunteers need it already", image, error)
                return None
            if image_id is None:
                return None
            key = f"image:{image_id}"
            if cached := await self._store.meta(key):
                cached_sha256, cached_size = cached.split(":")
                if await self._blobs.has(cached_sha256):
                    return image_id, FileRef(ARCHIVE_NAME, cached_sha256, int(cached_size))
            await asyncio.to_thread(self._scratch.mkdir, parents=True, exist_ok=True)
            target = self._scratch / f"{image_id.replace(':', '-')}.tar"
            try:
                await self._docker.export_image(image, target)
                sha256, size = await self._blobs.put_file(target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(target.unlink)
            await self._store.set_meta(key, f"{sha256}:{size}")
            log.info(
                "exported %s (%s, %.0f MiB) for volunteers", image, image_id[:19], size / 2**20
            )
            return image_id, FileRef(ARCHIVE_NAME, sha256, size)

    async def close(self) -> None:
        await self._docker.close()
