"""What operators' tools expect of a gRPC server, as they are: the standard health service
(`grpc.health.v1.Health`, for grpcurl and probes) and server reflection (grpcurl lists and
calls methods without the .proto files). Both pass the same edge as everything else: health
answers anyone who reaches the port, reflection members only (see access.RULES)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

NODE_SERVICE = "vcnode.v1.NodeService"


class Operations:
    def __init__(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        """`services`: the full names of the services this server serves besides
        NodeService."""
        self._services = [NODE_SERVICE, *services]
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )

    async def serving(self) -> None:
        """The node answers: the server as a whole ("") and each of its services."""
        for name in ("", *self._services):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        """Every service says NOT_SERVING from now on, so probes see the end coming."""
        await self._health.enter_graceful_shutdown()
