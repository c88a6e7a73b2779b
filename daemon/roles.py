"""What every role gets from the node, and the registry that maps role names to classes.

The daemon never imports a role package directly; it looks it up here by name, so
dependencies point one way: cli -> the roles -> workflows -> splitters -> daemon, and no role
imports another. `make lint` holds the code to that (import-linter, in pyproject.toml).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from daemon.config import NodeConfig
from daemon.discovery.directory import PeerDirectory
from daemon.errors import NodeError
from daemon.models import NodeIdentity
from daemon.reload import Reloaded
from daemon.status_board import StatusBoard
from daemon.transport.access import AccessPolicy
from daemon.trust.bootstrap import NodeTrust
from daemon.web.site import WebSite

ROLE_CLASSES = {
    "coordinator": "coordinator_node.role:CoordinatorRole",
    "manager": "manager_node.role:ManagerRole",
    "volunteer": "volunteer_node.role:VolunteerRole",
}
# The gRPC services each role adds to the node's server (for health and reflection).
ROLE_SERVICES = {
    "coordinator": ("vcnode.v1.CoordinatorService", "vcnode.v1.TrustService"),
    "manager": ("vcnode.v1.ManagerService", "vcnode.v1.TransferService"),
    "volunteer": (),
}
# Start order: whoever serves others comes up first; stop runs in reverse.
START_ORDER = ("coordinator", "manager", "volunteer")


@dataclass(frozen=True)
class RoleContext:
    config: NodeConfig
    identity: NodeIdentity
    data_dir: Path
    # None when mDNS is off.
    directory: PeerDirectory | None
    # A role calls this when it cannot go on (e.g. its coordinator refuses it for good);
    # the node then stops and exits with the error's message and code.
    on_fatal: Callable[[NodeError], None]
    # This node's certificate (and on a coordinator the cluster's CA), for every channel.
    trust: NodeTrust
    # The rule every call to this node passes; a coordinator plugs its revocations in.
    policy: AccessPolicy
    # Where a coordinator takes join requests, as peers on other hosts dial it (else empty).
    join_addresses: tuple[str, ...] = ()
    # What the roles tell the node's owner about themselves (`vcnode status`).
    board: StatusBoard = field(default_factory=StatusBoard)
    # Reads the configuration again and applies what can change while running (the owner's
    # `vcnode config reload`); None when nothing can.
    reload: Callable[[], Awaitable[Reloaded]] | None = None


class Role(Protocol):
    name: str

    def register(self, server: grpc.aio.Server) -> None:
        """Adds this role's servicers; called before the server starts."""

    def web(self, site: WebSite) -> None:
        """Adds this role's part to the web dashboard (only on a node started with --http)."""

    async def open(self) -> None:
        """Loads state; called before the server takes its first call."""

    async def start(self, address: str, advertised: str) -> None:
        """Begins background work once the server answers at `address` (for this host);
        `advertised` is what peers on other hosts are told to dial (its host may be left
        open for them to fill in: see daemon.transport.addresses)."""

    async def stop(self) -> None:
        """Ends background work and long-lived streams; the server still answers."""

    async def reconfigure(self, config: NodeConfig) -> None:
        """The configuration was read again (daemon/reload.py): apply its live settings."""

    async def close(self) -> None:
        """Flushes and closes state; called after the server stopped."""


def create_role(name: str, context: RoleContext) -> Role:
    module_name, class_name = ROLE_CLASSES[name].split(":")
    role_class = getattr(importlib.import_module(module_name), class_name)
    role: Role = role_class(context)
    return role
