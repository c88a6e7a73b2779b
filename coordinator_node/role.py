"""The coordinator role: keeps the pool of volunteers."""

from __future__ import annotations

import grpc

from coordinator_node.membership import Membership
from coordinator_node.membership_store import MembershipStore
from coordinator_node.pool import Pool
from coordinator_node.registry import VolunteerRegistry
from coordinator_node.scheduler import Scheduler
from coordinator_node.servicer import CoordinatorServicer
from coordinator_node.store import CoordinatorStore
from coordinator_node.trust_servicer import TrustServicer
from daemon.config import NodeConfig
from daemon.errors import ConfigError
from daemon.roles import RoleContext
from daemon.rpc.v1 import coordinator_pb2_grpc, trust_pb2_grpc
from daemon.supervision import Supervisor
from daemon.trust.bootstrap import admin_identity
from daemon.web.site import WebSite


class CoordinatorRole:
    name = "coordinator"

    def __init__(self, context: RoleContext) -> None:
        self._store = CoordinatorStore(context.data_dir)
        self.pool = Pool(
            self._store,
            VolunteerRegistry(context.config.heartbeat_seconds),
            Scheduler(),
            cluster=context.identity.cluster,
            protocol_version=context.identity.protocol_version,
            supervisor=Supervisor(context.on_fatal),
        )
        self._node_id = context.identity.node_id
        self._node_identity = context.trust.credential.identity
        authority = context.trust.authority
        if authority is None:
            raise ConfigError("a coordinator needs the cluster's CA in its data dir")
        self._membership_store = MembershipStore(context.data_dir)
        self.membership = Membership(self._membership_store, authority, context.identity.cluster)
        context.policy.revoked = self.membership.is_revoked
        self._join_addresses = context.join_addresses

    def register(self, server: grpc.aio.Server) -> None:
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(
            CoordinatorServicer(self.pool, self._node_id), server
        )
        trust_pb2_grpc.add_TrustServiceServicer_to_server(
            TrustServicer(self.membership, self._join_addresses, self.pool.expel),
            server,
        )

    def web(self, site: WebSite) -> None:
        from coordinator_node.dashboard import CoordinatorDashboard  # only with --http

        CoordinatorDashboard(self.pool).attach(site)

    async def open(self) -> None:
        await self._membership_store.open()
        await self.membership.open([self._node_identity, admin_identity(self._node_id)])
        await self._store.open()
        await self.pool.start()

    async def start(self, address: str, advertised: str) -> None:
        pass

    async def reconfigure(self, config: NodeConfig) -> None:
        """Nothing of a reloaded configuration applies here while running."""

    async def stop(self) -> None:
        await self.pool.stop()

    async def close(self) -> None:
        await self._store.close()
        await self._membership_store.close()
