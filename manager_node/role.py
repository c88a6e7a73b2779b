"""The manager role: owns workflows and their files."""

from __future__ import annotations

import grpc

from daemon.roles import RoleContext
from daemon.rpc.v1 import manager_pb2_grpc
from manager_node.servicer import ManagerServicer
from manager_node.store import ManagerStore


class ManagerRole:
    name = "manager"

    def __init__(self, context: RoleContext) -> None:
        self._store = ManagerStore(context.data_dir)

    def register(self, server: grpc.aio.Server) -> None:
        manager_pb2_grpc.add_ManagerServiceServicer_to_server(ManagerServicer(self._store), server)

    async def open(self) -> None:
        await self._store.open()

    async def start(self, address: str) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        await self._store.close()
