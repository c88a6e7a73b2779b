"""mDNS lookups that outlive their zeroconf instance, on a real zeroconf bound to loopback.

A CLI client closes its quick-sweep instance while lookups it started may still be pending;
they used to end in "Task exception was never retrieved" tracebacks on the user's screen.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from zeroconf import DNSQuestionType, IPVersion
from zeroconf.asyncio import AsyncZeroconf

from daemon.discovery.mdns import MdnsDiscovery
from daemon.discovery.peers import SERVICE_TYPE, PeerTable
from daemon.models import NodeIdentity

pytestmark = pytest.mark.integration


def discovery() -> MdnsDiscovery:
    identity = NodeIdentity("a" * 32, "host", ("manager",), "lookups", "0", 1)
    return MdnsDiscovery(identity, None, ["127.0.0.1"], PeerTable(ttl=60))


async def test_a_lookup_on_a_closed_instance_finds_nothing_and_raises_nothing() -> None:
    instance = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    await instance.async_close()
    lookups = discovery()
    await lookups._resolve(instance, f"someone.{SERVICE_TYPE}", DNSQuestionType.QU)
    assert lookups.table.names() == []


async def test_a_background_lookup_that_fails_is_logged_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lookups = discovery()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("lookup broke")

    with caplog.at_level(logging.WARNING):
        task = lookups._look_up(broken(), "a lookup")
        await asyncio.wait_for(failed.wait(), 5)
        await asyncio.wait([task], timeout=5)  # waits without retrieving its exception
    assert len(lookups._supervisor) == 0, "the ended task is let go"
    logged = [r for r in caplog.records if "a lookup" in r.getMessage()]
    assert [r.exc_info[1] for r in logged if r.exc_info] == [task.exception()]
