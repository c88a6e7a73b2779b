"""Announces this node as `_vcnode._tcp` and browses for peers, with python-zeroconf.

Two browsers feed one peer table. A continuous one on the shared mDNS port hears
announcements and goodbyes for as long as the node runs. A quick first sweep asks from a
socket of its own (a "legacy unicast" query, answered straight to it): when several
processes on one host share port 5353, answers sent to that port reach only one of them at
random, and the multicast path took ~1.1 s here against ~0.05 s for the sweep.

Handlers never block: a browse event only schedules a resolve task, kept in a set until it
ends. Multicast goes only to the interfaces we were told about, never everywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psutil
from zeroconf import DNSQuestionType, IPVersion, NotRunningException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from daemon.discovery.peers import SERVICE_TYPE, PeerTable, parse_announcement, txt_record
from daemon.errors import NodeError
from daemon.models import NodeIdentity
from daemon.supervision import Supervisor

log = logging.getLogger(__name__)

RECORD_TTL_SECONDS = 30
REFRESH_SECONDS = 5.0
RESOLVE_TIMEOUT_MS = 1500
QUICK_SWEEP_SECONDS = 3.0


def discovery_interfaces(listen_host: str, configured: tuple[str, ...] = ()) -> list[str]:
    """The IPv4 addresses to multicast on: as configured, else the one we listen on, else
    every interface that is up with an IPv4 address (loopback included)."""
    if configured:
        return list(configured)
    if listen_host not in ("0.0.0.0", "", "::"):
        try:
            address = socket.gethostbyname(listen_host)
        except OSError:
            return []
        return [address]
    stats = psutil.net_if_stats()
    addresses = []
    for name, entries in psutil.net_if_addrs().items():
        if name not in stats or not stats[name].isup:
            continue
        for entry in entries:
            if (
                entry.family == socket.AF_INET
                and not ipaddress.ip_address(entry.address).is_link_local
            ):
                addresses.append(entry.address)
    return addresses


def announced_addresses(interfaces: list[str]) -> list[str]:
    """Loopback is announced only when it is all we have: a LAN peer cannot reach it."""
    remote = [a for a in interfaces if not ipaddress.ip_address(a).is_loopback]
    return remote or interfaces


def instance_name(identity: NodeIdentity) -> str:
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in identity.hostname)[:40]
    return f"{host}-{identity.node_id[:8]}.{SERVICE_TYPE}"


class MdnsDiscovery:
    def __init__(
        self,
        identity: NodeIdentity,
        port: int | None,
        interfaces: list[str],
        table: PeerTable,
        on_change: Callable[[], None] = lambda: None,
        on_fatal: Callable[[NodeError], None] = lambda error: None,
        join_port: int = 0,
    ) -> None:
        """`port` None browses without announcing (what a CLI client does). `on_fatal` hears
        of a crash of the refresh loop, without which peers would silently expire (a client
        browsing for a moment may ignore it: the crash is logged either way)."""
        self.identity = identity
        self.port = port
        self.join_port = join_port
        self.interfaces = interfaces
        self.table = table
        self._on_change = on_change
        self._zeroconf: AsyncZeroconf | None = None
        self._browsers: list[AsyncServiceBrowser] = []
        self._info: AsyncServiceInfo | None = None
        self._supervisor = Supervisor(on_fatal)

    @property
    def own_service_name(self) -> str:
        return instance_name(self.identity)

    async def start(self) -> None:
        if not self.interfaces:
            raise OSError("no network interface to run mDNS on")
        self._zeroconf = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        if self.port is not None:
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.own_service_name,
                addresses=[socket.inet_aton(a) for a in announced_addresses(self.interfaces)],
                port=self.port,
                properties=txt_record(
                    self.identity.node_id,
                    self.identity.roles,
                    self.identity.cluster,
                    self.identity.protocol_version,
                    self.identity.version,
                    self.port,
                    self.join_port,
                ),
                server=f"vcnode-{self.identity.node_id[:12]}.local.",
                host_ttl=RECORD_TTL_SECONDS,
                other_ttl=RECORD_TTL_SECONDS,
            )
            # A restarted node re-announces the same name: its old records may still sit in
            # peers' caches, and announcing with cache-flush replaces them.
            await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        self._browse(self._zeroconf, DNSQuestionType.QM)
        self._look_up(self._quick_sweep(), "mDNS quick sweep")
        self._supervisor.spawn(self._refresh_forever(), "mDNS refresh")
        log.info("mDNS on %s as %s", ", ".join(self.interfaces), self.own_service_name)

    def _look_up(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        # Discovery goes on without a lookup that crashed (the supervisor logs it); nothing
        # is waiting for its result.
        return self._supervisor.spawn(coroutine, name, on_crash=lambda error: None)

    def _browse(
        self, instance: AsyncZeroconf, question_type: DNSQuestionType
    ) -> AsyncServiceBrowser:
        # zeroconf calls handlers with these keyword names.
        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if name == self.own_service_name:
                return
            if state_change is ServiceStateChange.Removed:
                if self.table.remove(name):
                    self._on_change()
                return
            self._look_up(self._resolve(instance, name, question_type), f"mDNS lookup of {name}")

        browser = AsyncServiceBrowser(
            instance.zeroconf, [SERVICE_TYPE], handlers=[on_change], question_type=question_type
        )
        self._browsers.append(browser)
        return browser

    async def _quick_sweep(self) -> None:
        sweeper = AsyncZeroconf(
            interfaces=self.interfaces, ip_version=IPVersion.V4Only, unicast=True
        )
        browser = self._browse(sweeper, DNSQuestionType.QU)
        try:
            await asyncio.sleep(QUICK_SWEEP_SECONDS)
        finally:
            self._browsers.remove(browser)
            await browser.async_cancel()
            await sweeper.async_close()

    async def _resolve(
        self, instance: AsyncZeroconf, name: str, question_type: DNSQuestionType
    ) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            found = await info.async_request(
                instance.zeroconf, RESOLVE_TIMEOUT_MS, question_type=question_type
            )
        except NotRunningException:
            # The quick sweep's instance closed before this resolve got going; the main
            # browser sees the same name and resolves it.
            return
        if found:
            self._record(name, info)

    def _record(self, name: str, info: AsyncServiceInfo) -> None:
        try:
            addresses = info.parsed_addresses(IPVersion.V4Only)
        except ValueError:
            addresses = []
        peer = parse_announcement(
            name,
            info.properties or {},
            addresses,
            info.port,
            cluster=self.identity.cluster,
            protocol_version=self.identity.protocol_version,
            now=time.time(),
        )
        if peer.node_id == self.identity.node_id:
            return
        if self.table.upsert(peer):
            log.info(
                "peer %s at %s%s",
                name,
                peer.address,
                f" (skipped: {peer.skipped_reason})" if peer.skipped_reason else "",
            )
            self._on_change()

    async def _refresh_forever(self) -> None:
        """Keeps live peers fresh from zeroconf's cache (no traffic) and expires the rest."""
        assert self._zeroconf is not None
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for name in self.table.names():
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if info.load_from_cache(self._zeroconf.zeroconf):
                    self._record(name, info)
            if self.table.expire(time.time()):
                self._on_change()

    async def stop(self) -> None:
        await self._supervisor.stop()
        for browser in self._browsers:
            await browser.async_cancel()
        self._browsers.clear()
        if self._zeroconf is not None:
            if self._info is not None:
                # Sends a goodbye, so browsers drop us at once instead of at TTL expiry.
                await self._zeroconf.async_unregister_service(self._info)
            await self._zeroconf.async_close()
        self._zeroconf = None
