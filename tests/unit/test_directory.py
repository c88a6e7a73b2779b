"""Waiting on the peer table: at once if the answer is there, on notify(), or not past `within`."""

from __future__ import annotations

import asyncio

from daemon.discovery.directory import PeerDirectory
from daemon.discovery.peers import Peer, PeerTable, parse_announcement


def announcement(node_id: str, roles: str) -> Peer:
    return parse_announcement(
        f"{node_id}._vcnode._tcp.local.",
        {b"id": node_id.encode(), b"roles": roles.encode(), b"cluster": b"lab", b"proto": b"1"},
        ["192.0.2.7"],
        7450,
        cluster="lab",
        protocol_version=1,
        now=0.0,
    )


def first_coordinator(table: PeerTable) -> str | None:
    found = table.coordinators()
    return found[0].node_id if found else None


async def test_returns_at_once_when_the_answer_is_already_there() -> None:
    directory = PeerDirectory(PeerTable(ttl=30))
    directory.table.upsert(announcement("c1", "coordinator"))
    assert await directory.wait_for(first_coordinator, within=0) == "c1"


async def test_returns_once_another_task_changes_the_table_and_notifies() -> None:
    directory = PeerDirectory(PeerTable(ttl=30))

    async def announce() -> None:
        directory.table.upsert(announcement("c1", "coordinator"))
        directory.notify()

    loop = asyncio.get_running_loop()
    started = loop.time()
    # The task runs only once wait_for blocks, so the change comes while it waits.
    announcer = asyncio.create_task(announce())
    assert await directory.wait_for(first_coordinator, within=5.0) == "c1"
    assert loop.time() - started < 2.5, "woken by notify(), not by the deadline"
    await announcer


async def test_returns_none_when_nothing_changes_within_the_window() -> None:
    directory = PeerDirectory(PeerTable(ttl=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await directory.wait_for(first_coordinator, within=0.05) is None
    assert loop.time() - started >= 0.04


async def test_a_change_that_does_not_satisfy_the_predicate_keeps_it_waiting() -> None:
    directory = PeerDirectory(PeerTable(ttl=30))

    async def announce_a_volunteer() -> None:
        directory.table.upsert(announcement("v1", "volunteer"))
        directory.notify()

    announcer = asyncio.create_task(announce_a_volunteer())
    assert await directory.wait_for(first_coordinator, within=0.05) is None
    await announcer
    assert directory.table.names() == ["v1._vcnode._tcp.local."]
