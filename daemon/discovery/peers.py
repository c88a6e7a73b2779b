"""The peer table: parsed mDNS announcements, kept fresh or expired. Pure logic, no sockets.

Anything may announce `_vcnode._tcp`: a record with missing or odd TXT keys becomes a peer
with a `skipped_reason`, shown to people but never used, and never a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

SERVICE_TYPE = "_vcnode._tcp.local."
TXT_KEYS = ("id", "roles", "cluster", "proto", "version", "port", "join")


@dataclass(frozen=True)
class Peer:
    service_name: str
    node_id: str
    roles: tuple[str, ...]
    cluster: str
    protocol_version: int
    host: str
    port: int
    version: str
    last_seen: float
    skipped_reason: str = ""
    # A coordinator's plaintext port for join requests (0: none announced).
    join_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def join_address(self) -> str | None:
        return f"{self.host}:{self.join_port}" if self.join_port else None

    @property
    def usable(self) -> bool:
        return not self.skipped_reason


def txt_record(
    node_id: str,
    roles: tuple[str, ...],
    cluster: str,
    protocol_version: int,
    version: str,
    port: int,
    join_port: int = 0,
) -> dict[str, str]:
    """The port is in the SRV record too; TXT repeats it for tools that show only TXT. A
    coordinator adds its join port, where a node with a token joins."""
    record = {
        "id": node_id,
        "roles": ",".join(roles),
        "cluster": cluster,
        "proto": str(protocol_version),
        "version": version,
        "port": str(port),
    }
    if join_port:
        record["join"] = str(join_port)
    return record


def _text(properties: Mapping[bytes, bytes | None], key: str) -> str:
    value = properties.get(key.encode())
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace").strip()


def _whole_number(text: str) -> int | None:
    """`text` as a plain ASCII number, else None (`"²".isdigit()` is true, int() fails)."""
    if not text.isascii() or not text.isdecimal():
        return None
    return int(text)


def _port(text: str) -> int:
    number = _whole_number(text)
    return number if number is not None and 0 < number < 65536 else 0


def choose_host(addresses: list[str]) -> str:
    """Prefers an address another machine can reach; loopback only if that is all there is."""
    usable = [a for a in addresses if not ipaddress.ip_address(a).is_link_local]
    remote = [a for a in usable if not ipaddress.ip_address(a).is_loopback]
    return (remote or usable or [""])[0]


def parse_announcement(
    service_name: str,
    properties: Mapping[bytes, bytes | None],
    addresses: list[str],
    port: int | None,
    *,
    cluster: str,
    protocol_version: int,
    now: float,
) -> Peer:
    """Turns one resolved service into a Peer, marking it skipped when we cannot use it."""
    fields = {key: _text(properties, key) for key in TXT_KEYS}
    proto_text = fields["proto"]
    protocol = _whole_number(proto_text)
    peer = Peer(
        service_name=service_name,
        node_id=fields["id"],
        roles=tuple(role for role in fields["roles"].split(",") if role),
        cluster=fields["cluster"],
        protocol_version=protocol if protocol is not None else 0,
        host=choose_host(addresses),
        port=port or 0,
        version=fields["version"],
        last_seen=now,
        join_port=_port(fields["join"]),
    )
    missing = [key for key in ("id", "roles", "cluster", "proto") if not fields[key]]
    if missing:
        reason = f"TXT record lacks {', '.join(missing)}"
    elif protocol is None:
        reason = f"TXT proto={proto_text!r} is not a number"
    elif peer.cluster != cluster:
        reason = f"other cluster {peer.cluster!r}"
    elif peer.protocol_version != protocol_version:
        reason = f"protocol version {peer.protocol_version}, we speak {protocol_version}"
    elif not peer.host or not peer.port:
        reason = "no address or port"
    else:
        reason = ""
    return replace(peer, skipped_reason=reason)


class PeerTable:
    """Peers by mDNS service name; an entry not refreshed within `ttl` seconds expires."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._peers: dict[str, Peer] = {}

    def upsert(self, peer: Peer) -> bool:
        """Adds or refreshes a peer; True if what we know about it changed."""
        previous = self._peers.get(peer.service_name)
        self._peers[peer.service_name] = peer
        return previous is None or replace(previous, last_seen=peer.last_seen) != peer

    def remove(self, service_name: str) -> bool:
        return self._peers.pop(service_name, None) is not None

    def expire(self, now: float) -> list[Peer]:
        expired = [p for p in self._peers.values() if now - p.last_seen > self.ttl]
        for peer in expired:
            del self._peers[peer.service_name]
        return expired

    def names(self) -> list[str]:
        return list(self._peers)

    def peers(self, predicate: Callable[[Peer], bool] | None = None) -> list[Peer]:
        chosen = [p for p in self._peers.values() if predicate is None or predicate(p)]
        return sorted(chosen, key=lambda p: (p.cluster, p.service_name))

    def coordinators(self) -> list[Peer]:
        """Usable coordinators, most recently seen first."""
        found = self.peers(lambda p: p.usable and "coordinator" in p.roles)
        return sorted(found, key=lambda p: -p.last_seen)
