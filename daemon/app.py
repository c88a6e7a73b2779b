"""A node's lifecycle: data dir -> state -> gRPC server -> discovery -> roles, and back down.

Start-up is ordered so nobody is ever answered by half a node: roles open their state before
the server takes calls, the address file is written once the server answers, and mDNS
announces last. Shutdown runs the same steps in reverse and tolerates a partial start.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from daemon.config import JOIN_PORT, PROTOCOL_VERSION, NodeConfig, split_host_port
from daemon.datadir import DataDir
from daemon.discovery.browsing import listening
from daemon.discovery.directory import PeerDirectory
from daemon.discovery.finder import CoordinatorFinder
from daemon.discovery.mdns import RECORD_TTL_SECONDS, MdnsDiscovery, discovery_interfaces
from daemon.discovery.peers import PeerTable
from daemon.errors import ConfigError, NodeError
from daemon.models import NodeIdentity
from daemon.node_servicer import NodeServicer
from daemon.reload import Reloaded, compare
from daemon.resources import measure_resources
from daemon.roles import ROLE_SERVICES, START_ORDER, Role, RoleContext, create_role
from daemon.rpc.v1 import node_pb2_grpc
from daemon.supervision import Supervisor
from daemon.transport import addresses
from daemon.transport.access import AccessPolicy
from daemon.transport.channels import bind, create_server
from daemon.transport.operations import Operations
from daemon.trust.bootstrap import establish
from daemon.trust.renewal import Renewal
from daemon.version import VERSION
from daemon.web.sessions import DashboardDoor, LoginCodes, SessionSigner
from daemon.web.site import WebSite

if TYPE_CHECKING:
    from daemon.web.server import DashboardServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 2.0
MAX_JOIN_ADDRESSES = 8
# How long a node with a token looks on mDNS for its coordinator's join port.
JOIN_BROWSE_SECONDS = 3.0


def connectable_address(listen_host: str, port: int) -> str:
    """Where a client on this machine reaches a server bound to `listen_host`."""
    host = "127.0.0.1" if listen_host in ("0.0.0.0", "", "::") else listen_host
    return f"{host}:{port}"


def reachable_at(config: NodeConfig, port: int) -> tuple[str, ...]:
    """Every address peers may dial this host's `port` at, the LAN's before loopback."""
    if config.advertise:
        hosts = [addresses.split(addresses.advertised("", 1, config.advertise))[0]]
    else:
        hosts = discovery_interfaces(config.listen_host, config.mdns_interfaces)
    ordered = sorted(hosts, key=addresses.is_loopback)[:MAX_JOIN_ADDRESSES]
    return tuple(addresses.join(host, port) for host in ordered)


def validate(config: NodeConfig) -> None:
    if "volunteer" in config.roles and not config.mdns and not config.coordinator:
        raise ConfigError(
            "a volunteer with --no-mdns cannot find a coordinator: pass --coordinator HOST:PORT"
        )


class Node:
    def __init__(
        self, config: NodeConfig, read_config: Callable[[], NodeConfig] | None = None
    ) -> None:
        """`read_config`: reads the configuration again, from where it first came (flags,
        environment, file), for a reload (SIGHUP, `vcnode config reload`)."""
        validate(config)
        self.config = config
        self._read_config = read_config
        self._roles: list[Role] = []
        self._reloads: set[asyncio.Task[None]] = set()
        # One reload at a time: two SIGHUPs in a row apply in turn.
        self._reloading = asyncio.Lock()
        # Set once the roles started: a reload before would change a config they never saw.
        self._serving = False
        self._stop = asyncio.Event()
        self._fatal: NodeError | None = None
        self.address: str | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: read the configuration again and apply what can change while running."""
        reload = asyncio.get_running_loop().create_task(self._reload_logged())
        self._reloads.add(reload)
        reload.add_done_callback(self._reloads.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except NodeError as error:
            log.error("reload refused, the configuration in use stays: %s", error)

    async def reload(self) -> Reloaded:
        """Reads the configuration again; applies the live settings (daemon/reload.py) to
        the running roles; raises ConfigError, changing nothing, when it is wrong."""
        if self._read_config is None:
            raise ConfigError("this daemon has no configuration source to read again")
        if not self._serving:
            raise ConfigError("the daemon is still starting: reload once it serves")
        async with self._reloading:
            read = await asyncio.to_thread(self._read_config)
            validate(read)
            self.config, reloaded = compare(self.config, read)
            logging.getLogger().setLevel(self.config.log_level)
            for role in self._roles:
                await role.reconfigure(self.config)
            log.info("reloaded the configuration: %s", reloaded.describe())
            return reloaded

    def _on_fatal(self, error: NodeError) -> None:
        if self._fatal is None:
            self._fatal = error
        self._stop.set()

    async def _join_addresses(self) -> list[str]:
        """Where a coordinator of our cluster takes join requests now: on the host of
        --coordinator at the default join port, and as mDNS announces them."""
        config = self.config
        found: list[str] = []
        if config.coordinator:
            host, _ = addresses.split(config.coordinator)
            found.append(addresses.join(host, JOIN_PORT))
        if config.mdns:
            interfaces = tuple(discovery_interfaces(config.listen_host, config.mdns_interfaces))
            async with listening(config.cluster, interfaces) as directory:

                def joinable(table: PeerTable) -> list[str] | None:
                    ports = [p.join_address for p in table.coordinators() if p.join_address]
                    return [address for address in ports if address] or None

                found += await directory.wait_for(joinable, JOIN_BROWSE_SECONDS) or []
        return found

    def _coordinator_finder(self, directory: PeerDirectory | None) -> Callable[[], Awaitable[str]]:
        """Where this node's coordinator is now: as configured, else found on mDNS."""
        finder: CoordinatorFinder | None = None

        async def find() -> str:
            nonlocal finder
            if finder is None:
                finder = CoordinatorFinder(self.config.coordinator, directory)
            return await finder.next_address()

        return find

    async def _serve_dashboard(
        self,
        door: DashboardDoor,
        roles: list[Role],
        identity: NodeIdentity,
        policy: AccessPolicy,
    ) -> DashboardServer:
        from daemon.web.server import DashboardServer  # aiohttp and prometheus: --http only

        site = WebSite(f"{identity.hostname} ({', '.join(identity.roles)})", identity.roles)
        for role in roles:
            role.web(site)
        cookie = f"vcnode_{identity.node_id[:12]}"
        server = DashboardServer(site, policy, door.signer, door.codes, cookie)
        address = self.config.http or ""
        host, port = split_host_port(address, "http")
        try:
            door.port = await server.start(host, port)
        except OSError as error:
            raise ConfigError(
                f"cannot serve the dashboard on {address} ({error.strerror}): the port is taken "
                "or the address is not this machine's; pass --http HOST:PORT with a free port "
                "(0 picks one)"
            ) from None
        log.info(
            "dashboard and /metrics at http://%s (`vcnode dashboard` prints a login link)",
            connectable_address(host, door.port),
        )
        return server

    async def run(self) -> None:
        """Serves until asked to stop; raises the NodeError that stopped it, if any."""
        config = self.config
        data_dir = DataDir.open(config.data_dir)
        async with AsyncExitStack() as stack:
            stack.callback(data_dir.close)
            identity = NodeIdentity(
                node_id=data_dir.node_id,
                hostname=socket.gethostname(),
                roles=tuple(name for name in START_ORDER if name in config.roles),
                cluster=config.cluster,
                version=VERSION,
                protocol_version=PROTOCOL_VERSION,
            )
            directory = (
                PeerDirectory(PeerTable(ttl=2 * RECORD_TTL_SECONDS)) if config.mdns else None
            )
            trust = await establish(
                data_dir.path,
                identity.node_id,
                identity.roles,
                config.cluster,
                config.token,
                self._join_addresses,
            )
            policy = AccessPolicy(identity.node_id, trust.live.own_certificates)
            server = create_server(policy)
            port = bind(server, config.listen, trust.live)
            if port == 0:
                raise ConfigError(
                    f"cannot listen on {config.listen}: the port is taken or the address is not "
                    "this machine's; pass --listen HOST:PORT with a free port (0 picks one)"
                )
            self.address = connectable_address(config.listen_host, port)
            advertised = addresses.advertised(config.listen_host, port, config.advertise)
            join_addresses: tuple[str, ...] = ()
            join_port = 0
            if trust.authority is not None:
                join_port = bind(server, config.join_address, None)
                if join_port == 0:
                    raise ConfigError(
                        f"cannot take join requests on {config.join_address}: the port is taken "
                        "or the address is not this machine's; pass --join-listen HOST:PORT"
                    )
                join_addresses = reachable_at(config, join_port)
            context = RoleContext(
                config,
                identity,
                data_dir.path,
                directory,
                self._on_fatal,
                trust,
                policy,
                join_addresses,
                reload=self.reload,
            )
            roles: list[Role] = [create_role(name, context) for name in identity.roles]
            self._roles = roles
            door = (
                DashboardDoor(
                    SessionSigner.for_data_dir(data_dir.path),
                    LoginCodes(),
                    split_host_port(config.http, "http")[0],
                )
                if config.http
                else None
            )
            node_pb2_grpc.add_NodeServiceServicer_to_server(
                NodeServicer(
                    identity,
                    address=lambda: self.address or "",
                    data_dir=str(data_dir.path),
                    started_at=time.time(),
                    resources=lambda: measure_resources(data_dir.path),
                    directory=directory,
                    board=context.board,
                    dashboard=door,
                ),
                server,
            )
            for role in roles:
                role.register(server)
            operations = Operations(
                server, [name for role in identity.roles for name in ROLE_SERVICES[role]]
            )
            # The exit stack unwinds in reverse: mDNS says goodbye, roles end their streams
            # while the server still answers, the server stops, and state closes last.
            for role in roles:
                await role.open()
                stack.push_async_callback(role.close)

            # The dashboard listens before anyone learns the node's address, so a login link
            # (NodeService.OpenDashboard) never names a port not bound yet.
            dashboard = await self._serve_dashboard(door, roles, identity, policy) if door else None
            await server.start()
            stack.push_async_callback(server.stop, SHUTDOWN_GRACE_SECONDS)
            for role in roles:
                stack.push_async_callback(role.stop)
            if dashboard is not None:
                stack.push_async_callback(dashboard.stop)  # its streams end before the roles
            data_dir.write_address(self.address, identity.roles)

            if directory is not None:
                interfaces = discovery_interfaces(config.listen_host, config.mdns_interfaces)
                mdns = MdnsDiscovery(
                    identity,
                    port,
                    interfaces,
                    directory.table,
                    directory.notify,
                    self._on_fatal,
                    join_port,
                )
                try:
                    await mdns.start()
                except OSError as error:
                    raise ConfigError(
                        f"mDNS cannot start on {', '.join(interfaces) or 'any interface'} "
                        f"({error}); pass --mdns-interfaces ADDR or --no-mdns"
                    ) from None
                stack.push_async_callback(mdns.stop)

            for role in roles:
                await role.start(self.address, advertised)
            self._serving = True
            await operations.serving()
            # First on the way down: probes see NOT_SERVING while the roles wind down.
            stack.push_async_callback(operations.stopping)
            background = Supervisor(self._on_fatal)
            stack.push_async_callback(background.stop)
            renewal = Renewal(
                trust.live, data_dir.path, trust.authority, self._coordinator_finder(directory)
            )
            background.spawn(renewal.forever(), "certificate renewal")
            log.info(
                "node %s serving %s at %s (cluster %r, data dir %s)",
                identity.node_id[:8],
                ",".join(identity.roles),
                self.address,
                config.cluster,
                data_dir.path,
            )
            await self._stop.wait()
            log.info("stopping")
        if self._fatal is not None:
            raise self._fatal
