"""The volunteer's blob cache and its transfers with managers (TransferService).

The cache keeps what was fetched for later tasks and makes room within its quota by
evicting the blobs used least recently (cache.py says which may go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from daemon.errors import NotFoundError
from daemon.models import FileRef, TaskSpec
from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc
from daemon.transfer.blobstore import BlobStore, StoreUsage
from daemon.transfer.client import download, upload
from daemon.transfer.hashing import sha256_file
from daemon.transfer.servicer import UPLOADS_PER_PEER
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.transport.errors import error_from_rpc
from daemon.trust.credentials import Credential, LiveCredential
from daemon.trust.pki import id_name
from volunteer_node.cache import CacheIndex
from volunteer_node.live_logs import LogPush

log = logging.getLogger(__name__)

GIB = 1024**3
# Exporting a large image on the manager's first request takes a while.
EXPORT_TIMEOUT_SECONDS = 600.0
PUSH_LOG_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ManagerPeer:
    """A task's manager: where it listens, and which node it must prove to be there (as its
    certificate proved to the coordinator that offered the task)."""

    address: str
    node_id: str

    @classmethod
    def of(cls, task: TaskSpec) -> ManagerPeer:
        return cls(task.manager_address, task.manager_id)


@dataclass(frozen=True)
class CacheCleared:
    blobs: int
    freed_bytes: int
    # What is left: blobs tasks are using, within the cap.
    left: StoreUsage


class BlobTransfers:
    def __init__(self, root: Path, quota_bytes: int, credential: LiveCredential) -> None:
        self._credential = credential
        # Channels opened with a certificate since renewed: closed with the rest.
        self._retired: list[grpc.aio.Channel] = []
        # A manager takes so many uploads from one peer at once: the rest wait here.
        self._upload_slots: dict[ManagerPeer, asyncio.Semaphore] = {}
        self.store = BlobStore(root, max_blob_bytes=quota_bytes, quota_bytes=quota_bytes)
        # One channel per manager: a new one per transfer cost ~4 ms a file (measured).
        # By manager, with the certificate each was opened with.
        self._channels: dict[ManagerPeer, tuple[Credential, grpc.aio.Channel]] = {}
        self._index = CacheIndex()
        # Held while pinning a blob and while evicting: a blob is never evicted between
        # being found in the cache and being pinned.
        self._room = asyncio.Lock()

    def set_quota(self, quota_bytes: int) -> None:
        """The owner changed the cache's cap (a config reload): the next fetch makes room
        under the new one, evicting what was used least recently."""
        self.store.max_blob_bytes = self.store.quota_bytes = quota_bytes

    async def clear(self) -> CacheCleared:
        """`vcnode cache clear`: removes every cached blob no task is using now (inputs
        being fetched or handed to a task stay), and broken partial fetches."""
        before = await self.store.usage()
        async with self._room:
            removed = await self.store.free_up(before.quota_bytes + 1, self._index.victims())
        for sha256 in removed:
            self._index.forget(sha256)
        after = await self.store.usage()
        log.info("cache cleared by its owner: %d blobs removed", len(removed))
        return CacheCleared(len(removed), before.used_bytes - after.used_bytes, after)

    async def open(self) -> None:
        await self.store.open()
        self._index.load((blob.sha256, blob.size) for blob in await self.store.held())

    def _channel(self, manager: ManagerPeer) -> grpc.aio.Channel:
        credential = self._credential.current
        opened = self._channels.get(manager)
        if opened is None or opened[0] is not credential:
            if opened is not None:
                self._retired.append(opened[1])
            # Only that very manager passes the handshake.
            channel = open_channel(manager.address, credential, id_name(manager.node_id))
            self._channels[manager] = opened = (credential, channel)
        return opened[1]

    @contextlib.asynccontextmanager
    async def fetched(self, manager: ManagerPeer, ref: FileRef) -> AsyncIterator[Path]:
        """A verified local copy of the blob, from the cache or fetched; it stays in place
        until the block ends."""
        sha256 = ref.sha256
        async with self._room:
            self._index.pin(sha256)
        try:
            try:
                path = await self.store.path(sha256)  # one look for a cached input
            except NotFoundError:
                await self._make_room(ref)
                self._index.fetching(sha256, ref.size)
                try:
                    channel = self._channel(manager)
                    path = await download(channel, sha256, ref.size, self.store)
                finally:
                    self._index.fetched(sha256)
            self._index.used(sha256, ref.size)
            yield path
        finally:
            self._index.unpin(sha256)

    async def _make_room(self, ref: FileRef) -> None:
        async with self._room:
            needed = self._index.room_needed(ref.sha256, ref.size)
            evicted = await self.store.free_up(needed, self._index.victims())
        for sha256 in evicted:
            self._index.forget(sha256)
        if evicted:
            log.info(
                "evicted %d cached blobs, least recently used first, to make room for %s",
                len(evicted),
                ref.name,
            )

    async def send(self, manager: ManagerPeer, path: Path, purpose: str) -> FileRef:
        sha256, size = await asyncio.to_thread(sha256_file, path)
        slots = self._upload_slots.setdefault(manager, asyncio.Semaphore(UPLOADS_PER_PEER))
        async with slots:
            await upload(self._channel(manager), path, sha256, size, purpose)
        return FileRef(path.name, sha256, size)

    async def image_archive(self, manager: ManagerPeer, image: str, image_id: str) -> FileRef:
        stub = manager_pb2_grpc.ManagerServiceStub(self._channel(manager))
        try:
            reply = await stub.GetImageArchive(
                manager_pb2.GetImageArchiveRequest(image=image, image_id=image_id),
                timeout=EXPORT_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, manager.address, "manager") from None
        return convert.file_ref_from_proto(reply)

    async def push_log(self, manager: ManagerPeer, push: LogPush) -> bool:
        """A running task's new output, to its manager (see live_logs); whether someone
        follows the task there."""
        stub = manager_pb2_grpc.ManagerServiceStub(self._channel(manager))
        try:
            reply = await stub.PushTaskLog(
                convert.log_push_to_proto(push.task_id, push.attempt, push.chunks, push.final),
                timeout=PUSH_LOG_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, manager.address, "manager") from None
        return reply.followed

    async def close(self) -> None:
        for channel in [*(opened[1] for opened in self._channels.values()), *self._retired]:
            await channel.close()
        self._channels.clear()
        self._retired.clear()
        await self.store.close()
