"""Task images for volunteers that lack them: the manager pins each task to the ID of the
image its own Docker engine holds, and exports that image as a blob only when a volunteer
asks (once per image ID), to be fetched over TransferService and loaded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from daemon.errors import NotFoundError
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

    async def image_id(self, image: str) -> str | None:
        """The ID of the image this host's engine holds, or None (then volunteers need the
        image already): a cheap inspect, done at submit to pin each task's image."""
        try:
            return await self._docker.image_id(image)
        except Exception as error:  # no engine here is a normal manager setup
            log.info("cannot inspect %s here (%s): volunteers need it already", image, error)
            return None

    async def archive(self, image: str, image_id: str) -> FileRef:
        """The image as a blob, exported on first request and kept (by image ID)."""
        async with self._lock:
            if await self.image_id(image) != image_id:
                raise NotFoundError(f"image {image} here is no longer {image_id}")
            key = f"image:{image_id}"
            if cached := await self._store.meta(key):
                cached_sha256, cached_size = cached.split(":")
                if await self._blobs.has(cached_sha256):
                    return FileRef(ARCHIVE_NAME, cached_sha256, int(cached_size))
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
            return FileRef(ARCHIVE_NAME, sha256, size)

    async def close(self) -> None:
        await self._docker.close()
