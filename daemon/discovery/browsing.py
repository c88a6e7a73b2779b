"""Browsing mDNS for a while without announcing anything: what a client command does, and a
node that looks for its coordinator's join port before it serves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from daemon.config import PROTOCOL_VERSION
from daemon.discovery.directory import PeerDirectory
from daemon.discovery.peers import PeerTable
from daemon.models import NodeIdentity
from daemon.version import VERSION


@asynccontextmanager
async def listening(cluster: str, interfaces: tuple[str, ...]) -> AsyncIterator[PeerDirectory]:
    """Browses mDNS (on `interfaces`, else every up one) as long as the block runs."""
    # zeroconf only when something browses: most clients find their daemon by address.
    from daemon.discovery.mdns import MdnsDiscovery, discovery_interfaces

    directory = PeerDirectory(PeerTable(ttl=3600))
    identity = NodeIdentity(
        node_id=f"browser-{uuid.uuid4().hex}",
        hostname="browser",
        roles=(),
        cluster=cluster,
        version=VERSION,
        protocol_version=PROTOCOL_VERSION,
    )
    discovery = MdnsDiscovery(
        identity,
        None,
        discovery_interfaces("0.0.0.0", interfaces),
        directory.table,
        directory.notify,
    )
    await discovery.start()
    try:
        yield directory
    finally:
        await discovery.stop()
