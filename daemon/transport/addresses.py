"""Addresses one node hands another, made to work across hosts.

A node listening on every interface does not know which of its addresses a peer on another
host can reach, and `127.0.0.1` reaches only itself. So it hands out its port with the host
left open (`:7451`), and whoever passes the address on fills the host in with the one it saw
that node at: the coordinator with the address a manager's call came from, a volunteer with
the host it reached its coordinator at (for a manager on the coordinator's own host). An
owner may name the host instead (`--advertise`), for NAT and multi-homed machines.
"""

from __future__ import annotations

import ipaddress

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def split(address: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port` or `:port` (the host left open)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def valid(address: str) -> bool:
    """Whether `address` is something `split` reads: HOST:PORT, [v6]:PORT or :PORT."""
    try:
        _, port = split(address)
    except ValueError:
        return False
    return 0 < port < 65536


def join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertised(listen_host: str, port: int, advertise: str | None) -> str:
    """What this node tells peers to dial: `advertise` (HOST or HOST:PORT) when its owner
    set one, else the listen host, or for a wildcard listen the port with the host open."""
    if advertise:
        host, sep, port_text = advertise.rpartition(":")
        if sep and port_text.isdigit() and (host.endswith("]") or ":" not in host):
            return join(host.removeprefix("[").removesuffix("]"), int(port_text))
        return join(advertise.removeprefix("[").removesuffix("]"), port)
    return join("" if listen_host in WILDCARD_HOSTS else listen_host, port)


def peer_host(peer: str) -> str | None:
    """The host of a gRPC `context.peer()` (`ipv4:10.0.0.2:5012`, `ipv6:[::1]:5012`);
    None for any other kind of peer (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    return split(rest)[0]


def filled(address: str, seen_at: str) -> str:
    """`address` with an open host (empty or a wildcard) filled in with `seen_at`, the host
    its owner was seen at or reached at; an address with a host of its own stays as it is."""
    host, port = split(address)
    return join(seen_at, port) if host in WILDCARD_HOSTS else address
