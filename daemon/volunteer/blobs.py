"""The volunteer's blob cache and its transfers with managers (TransferService)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from daemon.models import FileRef
from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.client import download, upload
from daemon.transfer.hashing import sha256_file
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.transport.errors import error_from_rpc

GIB = 1024**3
# Exporting a large image on the manager's first request takes a while.
EXPORT_TIMEOUT_SECONDS = 600.0


class BlobTransfers:
    def __init__(self, root: Path, quota_bytes: int) -> None:
        self.store = BlobStore(root, max_blob_bytes=quota_bytes, quota_bytes=quota_bytes)
        # One channel per manager: a new one per transfer cost ~4 ms a file (measured).
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def open(self) -> None:
        await self.store.open()

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = open_channel(address)
        return self._channels[address]

    async def fetch(self, manager_address: str, ref: FileRef) -> Path:
        return await download(self._channel(manager_address), ref.sha256, ref.size, self.store)

    async def send(self, manager_address: str, path: Path, purpose: str) -> FileRef:
        sha256, size = await asyncio.to_thread(sha256_file, path)
        await upload(self._channel(manager_address), path, sha256, size, purpose)
        return FileRef(path.name, sha256, size)

    async def image_archive(self, manager_address: str, image: str, image_id: str) -> FileRef:
        stub = manager_pb2_grpc.ManagerServiceStub(self._channel(manager_address))
        try:
            reply = await stub.GetImageArchive(
                manager_pb2.GetImageArchiveRequest(image=image, image_id=image_id),
                timeout=EXPORT_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, manager_address, "manager") from None
        return convert.file_ref_from_proto(reply)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        await self.store.close()
