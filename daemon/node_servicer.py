"""NodeService: every daemon answers who it is and what it sees, whatever its roles."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from daemon.discovery.directory import PeerDirectory
from daemon.errors import AccessDeniedError, RejectedError
from daemon.models import NodeIdentity, Resources
from daemon.rpc.v1 import node_pb2, node_pb2_grpc
from daemon.status_board import StatusBoard
from daemon.transport import convert
from daemon.transport.access import current_caller
from daemon.transport.errors import maps_errors
from daemon.trust import pki
from daemon.web.sessions import DashboardDoor


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        identity: NodeIdentity,
        *,
        address: Callable[[], str],
        data_dir: str,
        started_at: float,
        resources: Callable[[], Resources],
        directory: PeerDirectory | None,
        board: StatusBoard | None = None,
        dashboard: DashboardDoor | None = None,
    ) -> None:
        self._dashboard = dashboard
        self._board = board or StatusBoard()
        self._identity = identity
        self._address = address
        self._data_dir = data_dir
        self._started_at = started_at
        self._resources = resources
        self._directory = directory

    async def GetInfo(
        self,
        request: node_pb2.GetInfoRequest,
        context: grpc.aio.ServicerContext[node_pb2.GetInfoRequest, node_pb2.NodeInfo],
    ) -> node_pb2.NodeInfo:
        info = node_pb2.NodeInfo(
            node_id=self._identity.node_id,
            hostname=self._identity.hostname,
            roles=list(self._identity.roles),
            version=self._identity.version,
            protocol_version=self._identity.protocol_version,
            cluster=self._identity.cluster,
            address=self._address(),
            resources=convert.resources_to_proto(self._resources()),
            started_at=self._started_at,
            data_dir=self._data_dir,
            mdns=self._directory is not None,
            coordinator=self._board.coordinator,
        )
        if self._board.trust is not None:
            info.trust.CopyFrom(convert.trust_record_to_proto(self._board.trust))
        return info

    async def Health(
        self,
        request: node_pb2.HealthRequest,
        context: grpc.aio.ServicerContext[node_pb2.HealthRequest, node_pb2.HealthReply],
    ) -> node_pb2.HealthReply:
        return node_pb2.HealthReply(serving=True)

    async def ListPeers(
        self,
        request: node_pb2.ListPeersRequest,
        context: grpc.aio.ServicerContext[node_pb2.ListPeersRequest, node_pb2.ListPeersReply],
    ) -> node_pb2.ListPeersReply:
        peers = self._directory.table.peers() if self._directory else []
        return node_pb2.ListPeersReply(peers=[convert.peer_to_proto(p) for p in peers])

    @maps_errors
    async def OpenDashboard(
        self,
        request: node_pb2.OpenDashboardRequest,
        context: grpc.aio.ServicerContext[
            node_pb2.OpenDashboardRequest, node_pb2.OpenDashboardReply
        ],
    ) -> node_pb2.OpenDashboardReply:
        if self._dashboard is None:
            raise RejectedError(
                "this node serves no dashboard: start its daemon with --http HOST:PORT "
                "(e.g. --http 0.0.0.0:7480)"
            )
        caller = current_caller()
        if request.end_sessions:
            if not caller.sees_everything:
                raise AccessDeniedError(
                    f"only an admin or this node's owner may end every dashboard session, "
                    f"not {caller.describe()}"
                )
            self._dashboard.signer.end_every_session()
            return node_pb2.OpenDashboardReply(host=self._dashboard.host, port=self._dashboard.port)
        presented = list(context.auth_context().get("x509_pem_cert", []))
        link = self._dashboard.open(
            caller,
            request.scrape_token,
            certificate_expires_at=_expiry(presented[0]) if presented else 0.0,
        )
        return node_pb2.OpenDashboardReply(
            host=link.host,
            port=link.port,
            login_path=link.login_path,
            scrape_token=link.scrape_token,
            expires_at=link.expires_at,
        )


def _expiry(pem: bytes) -> float:
    """When the certificate a caller presented (TLS proved it) expires: no session it opens
    may last longer. Read with `cryptography`, imported only by this rare call."""
    return pki.load_cert(pem).not_valid_after_utc.timestamp()
