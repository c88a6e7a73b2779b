"""Addresses handed to peers on other hosts: never a loopback one for a wildcard listen."""

from __future__ import annotations

import pytest

from daemon.transport.addresses import advertised, filled, is_loopback, peer_host, split, valid


@pytest.mark.parametrize(
    ("listen_host", "advertise", "expected"),
    [
        ("0.0.0.0", None, ":7451"),  # the host is left for peers to fill in
        ("::", None, ":7451"),
        ("10.0.0.2", None, "10.0.0.2:7451"),
        ("127.0.0.1", None, "127.0.0.1:7451"),  # reachable here only, as asked
        ("0.0.0.0", "lab.example.org", "lab.example.org:7451"),
        ("0.0.0.0", "203.0.113.7:17451", "203.0.113.7:17451"),  # NAT: another port outside
        ("0.0.0.0", "fd00::5", "[fd00::5]:7451"),
        ("0.0.0.0", "[fd00::5]:9000", "[fd00::5]:9000"),
    ],
)
def test_a_node_advertises_what_a_peer_can_dial(
    listen_host: str, advertise: str | None, expected: str
) -> None:
    assert advertised(listen_host, 7451, advertise) == expected


def test_an_open_host_is_filled_with_where_its_owner_was_seen() -> None:
    assert filled(":7451", "10.0.0.2") == "10.0.0.2:7451"
    assert filled("0.0.0.0:7451", "fd00::2") == "[fd00::2]:7451"
    assert filled("10.0.0.9:7451", "10.0.0.2") == "10.0.0.9:7451"


def test_peer_hosts_come_from_grpc_peer_strings() -> None:
    assert peer_host("ipv4:10.0.0.2:5012") == "10.0.0.2"
    assert peer_host("ipv6:[::1]:5012") == "::1"
    assert peer_host("unix:/tmp/socket") is None
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback("10.0.0.2")
    assert split("[fd00::5]:9000") == ("fd00::5", 9000)


def test_only_host_port_shapes_are_valid() -> None:
    assert valid("10.0.0.2:7451")
    assert valid(":7451")
    assert valid("[fd00::5]:9000")
    assert not valid("")
    assert not valid("x")
    assert not valid("10.0.0.2:0")
    assert not valid("10.0.0.2:99999")
