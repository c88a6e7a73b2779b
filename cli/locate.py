"""Finds the daemon a client command should talk to, and says what it tried when none answers.

Order: an explicit HOST:PORT, then the address file of --data-dir, then that of the default
data dir, then mDNS (a node of the wanted role in the wanted cluster).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cli.credentials import client_credential
from daemon.config import default_data_dir
from daemon.datadir import read_address, read_roles
from daemon.discovery.browsing import listening
from daemon.discovery.peers import Peer, PeerTable
from daemon.errors import UnreachableError
from daemon.transport.channels import Dial
from daemon.trust.pki import ANY_NODE, role_name


@dataclass(frozen=True)
class Target:
    """Where a client command looks for its daemon."""

    role: str | None  # None: any node will do
    address: str | None
    data_dir: Path | None
    cluster: str
    mdns_interfaces: tuple[str, ...]
    timeout: float


async def browse(cluster: str, interfaces: tuple[str, ...], seconds: float) -> list[Peer]:
    """Everything mDNS shows within `seconds`."""
    async with listening(cluster, interfaces) as directory:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            await directory.wait_for(lambda _: None, remaining)
        return directory.table.peers()


async def _find_on_mdns(target: Target) -> tuple[str | None, list[Peer]]:
    """The address of a node of the wanted role and cluster, and every peer mDNS showed."""

    def pick(table: PeerTable) -> str | None:
        for peer in table.peers(lambda p: p.usable):
            if target.role is None or target.role in peer.roles:
                return peer.address
        return None

    async with listening(target.cluster, target.mdns_interfaces) as directory:
        found = await directory.wait_for(pick, target.timeout)
        return found, directory.table.peers()


def _seen(peers: list[Peer]) -> str:
    """What mDNS did show, by cluster: `cluster 'lab': coordinator, manager (2 nodes)`."""
    if not peers:
        return "mDNS showed no vcnode node at all"
    by_cluster: dict[str, list[Peer]] = {}
    for peer in peers:
        by_cluster.setdefault(peer.cluster or "?", []).append(peer)
    parts = []
    for cluster, members in sorted(by_cluster.items()):
        roles = sorted({role for peer in members for role in peer.roles})
        count = f"{len(members)} node{'s' if len(members) > 1 else ''}"
        parts.append(f"cluster {cluster!r}: {', '.join(roles) or 'no roles'} ({count})")
    return "mDNS showed " + "; ".join(parts)


def _role_mismatch(target: Target, data_dir: Path) -> str | None:
    """Why the daemon serving from `data_dir` is not what the command looks for."""
    roles = read_roles(data_dir)
    if target.role is None or roles is None or target.role in roles:
        return None
    return f"the daemon serving from {data_dir} runs {', '.join(roles)}, not {target.role}"


async def locate(target: Target) -> Dial:
    """The daemon to talk to, with the credential to present and the role to expect."""
    address = await _locate_address(target)
    peer = role_name(target.role) if target.role else ANY_NODE
    return Dial(address, client_credential(target.data_dir), peer)


async def _locate_address(target: Target) -> str:
    if target.address:
        return target.address
    role_flag = f"--{target.role}" if target.role else "--node"
    if target.data_dir is not None:
        address = read_address(target.data_dir)
        mismatch = _role_mismatch(target, target.data_dir)
        if address and mismatch:
            raise UnreachableError(
                f"{mismatch}; pass {role_flag} HOST:PORT, or --cluster NAME to look on mDNS"
            )
        if address:
            return address
        raise UnreachableError(
            f"no daemon is serving from data dir {target.data_dir} (it has no address file); "
            f"start one with 'node daemon --data-dir {target.data_dir}' "
            f"or pass {role_flag} HOST:PORT"
        )
    default_dir = default_data_dir()
    address = read_address(default_dir)
    # A daemon of another role on this machine (a volunteer's own) does not end the search.
    mismatch = _role_mismatch(target, default_dir) if address else None
    if address and not mismatch:
        return address
    found, seen = await _find_on_mdns(target)
    if found:
        return found
    what = target.role or "node"
    here = mismatch or f"no daemon serves from the default data dir {default_dir}"
    raise UnreachableError(
        f"no {what} of cluster {target.cluster!r} answered on mDNS within {target.timeout:g} s "
        f"({_seen(seen)}), and {here}; pass --cluster NAME (or set VCNODE_CLUSTER), "
        f"{role_flag} HOST:PORT or --data-dir DIR"
    )
