"""mDNS announcements into the peer table: anything odd is skipped with a reason, never a crash."""

from __future__ import annotations

from daemon.discovery.peers import Peer, PeerTable, choose_host, parse_announcement

GOOD = {
    b"id": b"n1",
    b"roles": b"coordinator",
    b"cluster": b"lab",
    b"proto": b"1",
    b"port": b"7450",
}


def parse(
    properties: dict[bytes, bytes | None], addresses: list[str] | None = None, now: float = 0.0
) -> Peer:
    return parse_announcement(
        "n1._vcnode._tcp.local.",
        properties,
        ["127.0.0.1"] if addresses is None else addresses,
        7450,
        cluster="lab",
        protocol_version=1,
        now=now,
    )


def test_a_good_announcement_is_a_usable_peer() -> None:
    peer = parse(GOOD)
    assert peer.usable
    assert peer.address == "127.0.0.1:7450"
    assert peer.roles == ("coordinator",)


def test_odd_announcements_are_skipped_with_a_reason() -> None:
    assert parse({b"roles": b"coordinator"}).skipped_reason == "TXT record lacks id, cluster, proto"
    assert parse({**GOOD, b"proto": b"x"}).skipped_reason == "TXT proto='x' is not a number"
    assert parse({**GOOD, b"cluster": b"home"}).skipped_reason == "other cluster 'home'"
    assert parse({**GOOD, b"proto": b"2"}).skipped_reason == "protocol version 2, we speak 1"
    assert parse(GOOD, addresses=[]).skipped_reason == "no address or port"
    assert parse({**GOOD, b"id": None}).skipped_reason.startswith("TXT record lacks id")
    assert parse({**GOOD, b"cluster": b"\xff\xfe"}).skipped_reason.startswith("other cluster")


def test_choose_host_prefers_a_reachable_address() -> None:
    assert choose_host(["127.0.0.1", "192.0.2.7"]) == "192.0.2.7"
    assert choose_host(["127.0.0.1"]) == "127.0.0.1"
    assert choose_host(["169.254.1.1"]) == ""


def test_table_reports_real_changes_and_expires_stale_peers() -> None:
    table = PeerTable(ttl=30)
    assert table.upsert(parse(GOOD, now=0))
    assert not table.upsert(parse(GOOD, now=5)), "a refresh is not a change"
    assert table.upsert(parse(GOOD, addresses=["127.0.0.2"], now=6))
    assert table.expire(now=30) == []
    assert [p.node_id for p in table.expire(now=36.1)] == ["n1"]
    assert table.peers() == []


def test_coordinators_are_usable_ones_most_recent_first() -> None:
    table = PeerTable(ttl=30)
    older = parse_announcement(
        "a._vcnode._tcp.local.", {**GOOD, b"id": b"a"}, ["127.0.0.1"], 1, cluster="lab",
        protocol_version=1, now=1,
    )  # fmt: skip
    newer = parse_announcement(
        "b._vcnode._tcp.local.", {**GOOD, b"id": b"b"}, ["127.0.0.1"], 2, cluster="lab",
        protocol_version=1, now=2,
    )  # fmt: skip
    stranger = parse_announcement(
        "c._vcnode._tcp.local.", {**GOOD, b"id": b"c", b"cluster": b"x"}, ["127.0.0.1"], 3,
        cluster="lab", protocol_version=1, now=3,
    )  # fmt: skip
    volunteer = parse_announcement(
        "d._vcnode._tcp.local.", {**GOOD, b"id": b"d", b"roles": b"volunteer"}, ["127.0.0.1"], 4,
        cluster="lab", protocol_version=1, now=4,
    )  # fmt: skip
    for peer in (older, newer, stranger, volunteer):
        table.upsert(peer)
    assert [p.node_id for p in table.coordinators()] == ["b", "a"]
