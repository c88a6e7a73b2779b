"""mDNS announcements into the peer table: anything odd is skipped with a reason, never a crash."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daemon.discovery.peers import Peer, PeerTable, choose_host, parse_announcement

GOOD: dict[bytes, bytes | None] = {
    b"id": b"n1",
    b"roles": b"coordinator,manager",
    b"cluster": b"lab",
    b"proto": b"1",
    b"version": b"0.1.0",
    b"port": b"7450",
}


def parse(
    properties: dict[bytes, bytes | None],
    addresses: list[str] | None = None,
    port: int | None = 7450,
    now: float = 0.0,
    name: str = "n1._vcnode._tcp.local.",
) -> Peer:
    return parse_announcement(
        name,
        properties,
        ["192.0.2.7"] if addresses is None else addresses,
        port,
        cluster="lab",
        protocol_version=1,
        now=now,
    )


def coordinator(name: str, now: float, **txt: bytes) -> Peer:
    properties: dict[bytes, bytes | None] = {**GOOD, b"id": name.encode()}
    properties.update({key.encode(): value for key, value in txt.items()})
    return parse(properties, now=now, name=f"{name}._vcnode._tcp.local.")


def test_a_good_announcement_is_a_usable_peer() -> None:
    peer = parse(GOOD, now=12.0)
    assert peer.usable
    assert peer.skipped_reason == ""
    assert peer.node_id == "n1"
    assert peer.roles == ("coordinator", "manager")
    assert (peer.cluster, peer.protocol_version, peer.version) == ("lab", 1, "0.1.0")
    assert peer.address == "192.0.2.7:7450"
    assert peer.last_seen == 12.0


@pytest.mark.parametrize(
    ("properties", "addresses", "port", "reason"),
    [
        ({b"roles": b"coordinator"}, None, 7450, "TXT record lacks id, cluster, proto"),
        ({}, None, 7450, "TXT record lacks id, roles, cluster, proto"),
        ({**GOOD, b"id": None}, None, 7450, "TXT record lacks id"),
        ({**GOOD, b"roles": None, b"proto": None}, None, 7450, "TXT record lacks roles, proto"),
        ({**GOOD, b"proto": b"x"}, None, 7450, "TXT proto='x' is not a number"),
        ({**GOOD, b"proto": b"-1"}, None, 7450, "TXT proto='-1' is not a number"),
        ({**GOOD, b"proto": b"\xff"}, None, 7450, "TXT proto='\ufffd' is not a number"),
        # U+00B2 SUPERSCRIPT TWO: str.isdigit() says yes, int() says no.
        ({**GOOD, b"proto": "\u00b2".encode()}, None, 7450, "TXT proto='\u00b2' is not a number"),
        ({**GOOD, b"cluster": b"home"}, None, 7450, "other cluster 'home'"),
        ({**GOOD, b"cluster": b"\xff\xfe"}, None, 7450, "other cluster '\ufffd\ufffd'"),
        ({**GOOD, b"proto": b"2"}, None, 7450, "protocol version 2, we speak 1"),
        (GOOD, [], 7450, "no address or port"),
        (GOOD, ["169.254.1.1"], 7450, "no address or port"),
        (GOOD, None, None, "no address or port"),
        (GOOD, None, 0, "no address or port"),
    ],
)
def test_odd_announcements_are_skipped_with_a_reason(
    properties: dict[bytes, bytes | None],
    addresses: list[str] | None,
    port: int | None,
    reason: str,
) -> None:
    peer = parse(properties, addresses=addresses, port=port)
    assert peer.skipped_reason == reason
    assert not peer.usable


@pytest.mark.parametrize(
    ("addresses", "chosen"),
    [
        (["127.0.0.1", "192.0.2.7"], "192.0.2.7"),
        (["169.254.1.1", "127.0.0.1", "10.0.0.3"], "10.0.0.3"),
        (["127.0.0.1"], "127.0.0.1"),
        (["169.254.1.1"], ""),
        ([], ""),
    ],
)
def test_choose_host_prefers_a_reachable_address(addresses: list[str], chosen: str) -> None:
    assert choose_host(addresses) == chosen


def test_upsert_reports_only_real_changes() -> None:
    table = PeerTable(ttl=30)
    assert table.upsert(parse(GOOD, now=0))
    assert not table.upsert(parse(GOOD, now=5)), "a refresh is not a change"
    assert table.peers()[0].last_seen == 5, "but it is recorded"
    assert table.upsert(parse(GOOD, addresses=["192.0.2.8"], now=6))
    assert table.upsert(parse({**GOOD, b"roles": b"volunteer"}, addresses=["192.0.2.8"], now=7))
    assert table.upsert(parse({**GOOD, b"proto": b"2"}, addresses=["192.0.2.8"], now=8))
    assert len(table.peers()) == 1


def test_expire_drops_entries_older_than_the_ttl() -> None:
    table = PeerTable(ttl=30)
    table.upsert(coordinator("old", now=0))
    table.upsert(coordinator("new", now=10))
    assert table.expire(now=30) == []
    assert [peer.node_id for peer in table.expire(now=30.5)] == ["old"]
    assert table.names() == ["new._vcnode._tcp.local."]
    assert [peer.node_id for peer in table.expire(now=41)] == ["new"]
    assert table.peers() == []


def test_coordinators_are_usable_ones_most_recent_first() -> None:
    table = PeerTable(ttl=30)
    for peer in (
        coordinator("a", now=1),
        coordinator("c", now=3),
        coordinator("b", now=2),
        coordinator("stranger", now=4, cluster=b"x"),
        coordinator("volunteer", now=5, roles=b"volunteer"),
        replace(coordinator("unaddressed", now=6), host="", skipped_reason="no address or port"),
    ):
        table.upsert(peer)
    assert [peer.node_id for peer in table.coordinators()] == ["c", "b", "a"]
    assert len(table.peers()) == 6
