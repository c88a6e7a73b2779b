"""The manager role: owns workflows, serves their inputs, receives and merges their outputs."""

from __future__ import annotations

import asyncio
import json
import logging

import grpc

from daemon.config import NodeConfig
from daemon.roles import RoleContext
from daemon.rpc.v1 import manager_pb2_grpc
from daemon.supervision import Supervisor
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.servicer import TransferServicer, add_transfer_service
from daemon.web.site import WebSite
from manager_node.coordinator_client import CoordinatorClient
from manager_node.images import ImageArchives
from manager_node.manager import WorkflowManager
from manager_node.servicer import ManagerServicer
from manager_node.store import ManagerStore

log = logging.getLogger(__name__)

REVOKED_META = "revoked_members"

GIB = 1024**3
MAX_BLOB_BYTES = 64 * GIB
BLOB_QUOTA_BYTES = 512 * GIB
# An upload nobody resumed for this long is dropped (at start, and checked this often).
ABANDONED_UPLOAD_SECONDS = 3600.0
ABANDONED_UPLOAD_CHECK_SECONDS = 600.0
# A whole blob nothing refers to (an upload for a submission that never came, outputs of an
# attempt that never reported) is deleted once it is this old.
ORPHAN_BLOB_SECONDS = 24 * 3600.0


class ManagerRole:
    name = "manager"

    def __init__(self, context: RoleContext) -> None:
        self._context = context
        self._store = ManagerStore(context.data_dir)
        self._blobs = BlobStore(
            context.data_dir / "blobs", max_blob_bytes=MAX_BLOB_BYTES, quota_bytes=BLOB_QUOTA_BYTES
        )
        images = ImageArchives(self._blobs, self._store, context.data_dir / "images")
        self._supervisor = Supervisor(context.on_fatal)
        self._revoked: frozenset[str] = frozenset()
        self.manager = WorkflowManager(
            self._store, self._blobs, context.data_dir / "workflows", images, self._supervisor
        )
        self._transfers = TransferServicer(self._blobs, self.manager)

    def web(self, site: WebSite) -> None:
        from manager_node.dashboard import ManagerDashboard  # only with --http

        ManagerDashboard(self.manager, self._store, self._transfers).attach(site)

    def register(self, server: grpc.aio.Server) -> None:
        manager_pb2_grpc.add_ManagerServiceServicer_to_server(
            ManagerServicer(self.manager, self._store, self._context.policy), server
        )
        add_transfer_service(server, self._transfers)

    async def open(self) -> None:
        await self._store.open()
        await self._blobs.open()
        await self._drop_abandoned_uploads()
        if "coordinator" not in self._context.identity.roles:
            # Before the first call: whom the coordinator had revoked is refused from the
            # start, not from the first answer after a restart.
            known = await self._store.meta(REVOKED_META)
            self._revoked = frozenset(json.loads(known)) if known else frozenset()
            self._context.policy.revoked = lambda node_id: node_id in self._revoked
        await self.manager.open()

    async def start(self, address: str, advertised: str) -> None:
        config = self._context.config
        coordinator = config.coordinator
        if coordinator is None and "coordinator" in self._context.identity.roles:
            coordinator = address
        client = CoordinatorClient(
            manager_id=self._context.identity.node_id,
            explicit_address=coordinator,
            directory=self._context.directory,
            credential=self._context.trust.live,
            on_event=self.manager.on_event,
            after_sequence=self.manager.last_sequence,
        )
        # Volunteers on other hosts fetch inputs from and send outputs to this address.
        await self.manager.start(client, advertised)
        self._supervisor.spawn(client.run(advertised), "coordinator client")
        self._supervisor.spawn(self._drop_abandoned_uploads_forever(), "abandoned uploads")
        if "coordinator" not in self._context.identity.roles:
            # Beside a coordinator the policy asks its membership itself.
            self._supervisor.spawn(self._follow_revocations(client), "revocations")

    async def _drop_abandoned_uploads(self) -> None:
        dropped = await self._blobs.expire_partials(ABANDONED_UPLOAD_SECONDS)
        if dropped:
            minutes = ABANDONED_UPLOAD_SECONDS / 60
            log.info("dropped %d uploads abandoned for over %.0f min", dropped, minutes)

    async def _drop_abandoned_uploads_forever(self) -> None:
        while True:
            await asyncio.sleep(ABANDONED_UPLOAD_CHECK_SECONDS)  # a period, not a wait
            await self._drop_abandoned_uploads()
            await self.manager.collect_orphans(ORPHAN_BLOB_SECONDS)

    async def _follow_revocations(self, client: CoordinatorClient) -> None:
        """Refuses, here too, whom the coordinator revoked (asked every two heartbeats),
        and keeps the list for the next start."""
        while True:
            latest = await client.revoked()
            if latest is not None and latest != self._revoked:
                log.info("the coordinator revoked %d members in all", len(latest))
                await self._store.set_meta(REVOKED_META, json.dumps(sorted(latest)))
                self._revoked = latest
            await asyncio.sleep(2 * self._context.config.heartbeat_seconds)  # a period

    async def reconfigure(self, config: NodeConfig) -> None:
        """Nothing of a reloaded configuration applies here while running."""

    async def stop(self) -> None:
        await self._supervisor.stop()  # event following and merges
        await self.manager.stop()

    async def close(self) -> None:
        await self._blobs.close()
        await self._store.close()
