"""`node`: the daemon and the commands people and scripts use to talk to it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from cli import views
from cli.locate import Target, browse, locate
from cli.rpc import connected
from daemon import config as config_module
from daemon.errors import NodeError
from daemon.log_format import JsonLogFormatter
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import Dial
from daemon.version import VERSION

CALL_TIMEOUT_SECONDS = 5.0
# --log-file: rotated so that a donor's disk never fills with logs (60 MiB at most).
LOG_FILE_MAX_BYTES = 10 * 2**20
LOG_FILE_BACKUPS = 5
T = TypeVar("T")


# --- the daemon ---------------------------------------------------------------------------


def _add_daemon_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "daemon",
        help="run this machine as a node (coordinator, volunteer, manager, or several)",
        description=(
            "Run a node. Settings: flags > VCNODE_* environment > --config file > defaults."
        ),
    )
    _add_setting_arguments(parser)
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings and where each came from, then exit",
    )
    parser.set_defaults(handler=_run_daemon)


def _add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's settings: `daemon` runs with them, `service install` writes them into
    the service's config file."""
    parser.add_argument(
        "--role",
        dest="roles",
        metavar="ROLES",
        help="coordinator, volunteer, manager, or a comma list (coordinator,volunteer)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"state, blobs and lock (default {config_module.default_data_dir()})",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"gRPC address; port 0 picks a free one (default 0.0.0.0:"
        f"{config_module.COORDINATOR_PORT} for a coordinator, "
        f"{config_module.MANAGER_PORT} for a manager, any port otherwise)",
    )
    parser.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="the coordinator to join (default: one of the cluster found on mDNS)",
    )
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help=f"keeps meshes on one LAN apart (default {config_module.DEFAULT_CLUSTER!r})",
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST[:PORT]",
        help="what peers on other hosts dial to reach this node, for NAT or several "
        "interfaces (default: the listen address; for 0.0.0.0, the address each peer "
        "reached it at)",
    )
    parser.add_argument(
        "--no-mdns",
        dest="mdns",
        action="store_const",
        const=False,
        help="neither announce nor browse on mDNS",
    )
    parser.add_argument(
        "--mdns-interfaces",
        metavar="ADDRS",
        help="IPv4 addresses of the interfaces to use for mDNS, comma separated "
        "(default: the listen address, or every up interface for 0.0.0.0)",
    )
    parser.add_argument(
        "--heartbeat",
        dest="heartbeat_seconds",
        metavar="SECONDS",
        help=f"heartbeat interval; a volunteer is lost after 3 missed "
        f"(default {config_module.DEFAULT_HEARTBEAT_SECONDS:g})",
    )
    parser.add_argument(
        "--pause-grace",
        dest="pause_grace_seconds",
        metavar="SECONDS",
        help="how long `vcnode pause` may freeze a volunteer's tasks before it hands them "
        f"back to the pool (default {config_module.DEFAULT_PAUSE_GRACE_SECONDS:g})",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="join the cluster with this token (`vcnode token create` on the coordinator's "
        "host prints one); needed only the first time",
    )
    parser.add_argument(
        "--join-listen",
        metavar="HOST:PORT",
        help=f"where a coordinator takes join requests (default: the listen host, port "
        f"{config_module.JOIN_PORT} next to {config_module.COORDINATOR_PORT}, any port otherwise)",
    )
    parser.add_argument("--config", metavar="FILE", type=Path, help="a TOML config file")
    parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    parser.add_argument(
        "--log-format",
        metavar="FORMAT",
        help="text (default), or json: one object per line (time, level, logger, message)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="log to this file instead of stderr (for hosts without journald), rotated at "
        f"{LOG_FILE_MAX_BYTES // 2**20} MiB with {LOG_FILE_BACKUPS} old files kept (PATH.1 ... "
        f"PATH.{LOG_FILE_BACKUPS})",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the web dashboard and Prometheus /metrics here (off by default); "
        "`vcnode dashboard` prints a login link",
    )
    limits = parser.add_argument_group("owner's limits (volunteer)")
    limits.add_argument("--max-cpus", dest="limits.max_cpus", metavar="N")
    limits.add_argument("--max-memory-mb", dest="limits.max_memory_mb", metavar="MB")
    limits.add_argument("--max-disk-mb", dest="limits.max_disk_mb", metavar="MB")
    limits.add_argument("--max-concurrent-tasks", dest="limits.max_concurrent_tasks", metavar="N")
    limits.add_argument(
        "--cpu-throttle-percent",
        dest="limits.cpu_throttle_percent",
        metavar="PERCENT",
        help="let each task's container use at most this share of the CPUs it is given "
        "(Docker's CPU quota; the process runtime cannot); default: all of them",
    )
    limits.add_argument(
        "--allow-network",
        dest="limits.allow_network",
        action="store_const",
        const=True,
        help="let tasks that ask for it have a network",
    )
    limits.add_argument(
        "--allow-process-runtime",
        dest="limits.allow_process_runtime",
        action="store_const",
        const=True,
        help="run tasks in a bubblewrap sandbox when Docker is missing (needs root and bwrap)",
    )
    limits.add_argument(
        "--allow-pull",
        dest="limits.allow_pull",
        action="store_const",
        const=True,
        help="pull a task's image from its registry when it is not here",
    )
    limits.add_argument(
        "--allow-managers",
        dest="limits.allow_managers",
        metavar="ID,...",
        help="take tasks only from these managers (their node ids); default: any",
    )
    limits.add_argument(
        "--allow-users",
        dest="limits.allow_users",
        metavar="NAME,...",
        help="take only tasks of workflows these users submitted (as their managers say); "
        "default: anyone's",
    )
    limits.add_argument(
        "--allow-images",
        dest="limits.allow_images",
        metavar="PATTERN,...",
        help="run only these images: fnmatch patterns on the image name (vcnode/*) or "
        "sha256: image IDs; default: any",
    )
    rules = parser.add_argument_group(
        "owner's rules (volunteer): when tasks run; [schedule] in a config file"
    )
    rules.add_argument(
        "--schedule-days",
        dest="schedule.days",
        metavar="DAYS",
        help="days tasks may run: mon-fri, mon,wed,fri or sat-mon; a day's window is the one "
        "that starts that day (default: every day)",
    )
    rules.add_argument(
        "--schedule-hours",
        dest="schedule.hours",
        metavar="HH:MM-HH:MM",
        help="local hours tasks may run, past midnight too (18:00-08:00); outside them "
        "running tasks are frozen (default: all day)",
    )
    rules.add_argument(
        "--schedule-idle-minutes",
        dest="schedule.idle_minutes",
        metavar="N",
        help="run only once nobody has used the machine for N minutes, as systemd-logind "
        "tells (0, the default: off)",
    )
    rules.add_argument(
        "--schedule-max-other-load",
        dest="schedule.max_other_load",
        metavar="PERCENT",
        help="stop tasks while other processes use over PERCENT of the CPUs, go on below "
        "80%% of it (0, the default: off)",
    )
    rules.add_argument(
        "--schedule-on-battery",
        dest="schedule.on_battery",
        action="store_const",
        const=True,
        help="run tasks on battery too (default: on mains power only)",
    )


def _resolve_config(args: argparse.Namespace) -> tuple[config_module.NodeConfig, dict[str, str]]:
    flags = {name: getattr(args, name, None) for name in config_module.flag_settings()}
    return config_module.resolve(flags, os.environ, args.config)


def _keep_numpy_out() -> None:
    """sqlite-utils imports numpy whenever it can, which costs every daemon ~15 MiB. Only a
    manager handles arrays (splitting and merging); on a volunteer's donated machine or a
    coordinator, make the import fail so sqlite-utils goes without."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]


def configure_logging(
    level: str,
    log_format: str,
    log_file: Path | None = None,
    max_bytes: int = LOG_FILE_MAX_BYTES,
) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=max_bytes, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        except OSError as error:
            raise NodeError(
                f"cannot write the log file {log_file}: {error.strerror or error}; "
                "pick a writable path for --log-file (or VCNODE_LOG_FILE, log_file)"
            ) from None
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _run_daemon(args: argparse.Namespace) -> int:
    # A reload asked before the daemon can take one (`systemctl reload` as it starts) must
    # not end it: SIGHUP's default is to exit, which systemd counts as a clean stop.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config, sources = _resolve_config(args)
    if args.print_config:
        sys.stdout.write(config_module.render(config, sources))
        return 0
    if "manager" not in config.roles:
        _keep_numpy_out()
    configure_logging(config.log_level, config.log_format, config.log_file)
    from daemon.app import Node  # the daemon's imports (zeroconf, roles) only for it

    # A reload reads the configuration again from the same flags, environment and file.
    node = Node(config, read_config=lambda: _resolve_config(args)[0])

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, node.request_stop)
        loop.add_signal_handler(signal.SIGHUP, node.request_reload)
        await node.run()

    asyncio.run(serve())
    return 0


# --- client commands ----------------------------------------------------------------------


def _add_target_arguments(parser: argparse.ArgumentParser, role: str | None) -> None:
    if role is not None:
        parser.add_argument(
            f"--{role}", dest="address", metavar="HOST:PORT", help=f"the {role} to ask"
        )
    else:
        parser.add_argument("--node", dest="address", metavar="HOST:PORT", help="the node to ask")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="ask the daemon serving from this data dir"
    )
    parser.add_argument(
        "--cluster",
        default=os.environ.get("VCNODE_CLUSTER") or config_module.DEFAULT_CLUSTER,
        metavar="NAME",
        help="the cluster to look for on mDNS (default: $VCNODE_CLUSTER, else "
        f"{config_module.DEFAULT_CLUSTER!r})",
    )
    parser.add_argument(
        "--mdns-interfaces",
        default="",
        metavar="ADDRS",
        help="IPv4 addresses of the interfaces to browse (default: every up one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to look on mDNS (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(role=role)


def _target(args: argparse.Namespace) -> Target:
    return Target(
        role=args.role,
        address=args.address,
        data_dir=args.data_dir,
        cluster=args.cluster,
        mdns_interfaces=tuple(a for a in args.mdns_interfaces.split(",") if a),
        timeout=args.timeout,
    )


async def _call(address: Dial, what: str, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    async with connected(address, what) as channel:
        return await call(channel)


async def _volunteers(args: argparse.Namespace) -> int:
    address = await locate(_target(args))
    if args.clear_trust:
        cleared = await _call(
            address,
            "coordinator",
            lambda channel: coordinator_pb2_grpc.CoordinatorServiceStub(channel).ClearTrust(
                coordinator_pb2.ClearTrustRequest(volunteer_id=args.clear_trust),
                timeout=CALL_TIMEOUT_SECONDS,
            ),
        )
        record = convert.trust_record_from_proto(cleared.trust)
        if args.json:
            views.print_json(dataclasses.asdict(record))
        else:
            print(f"volunteer {args.clear_trust}: trust record cleared; it is offered tasks again")
        return 0
    reply = await _call(
        address,
        "coordinator",
        lambda channel: coordinator_pb2_grpc.CoordinatorServiceStub(channel).ListVolunteers(
            coordinator_pb2.ListVolunteersRequest(), timeout=CALL_TIMEOUT_SECONDS
        ),
    )
    volunteers = [convert.volunteer_from_proto(v) for v in reply.volunteers]
    if args.json:
        views.print_json([views.volunteer_json(v) for v in volunteers])
    else:
        print(views.volunteers_table(volunteers))
    return 0


async def _peers(args: argparse.Namespace) -> int:
    target = _target(args)
    if target.address or target.data_dir:
        address = await locate(target)
        reply = await _call(
            address,
            "node",
            lambda channel: node_pb2_grpc.NodeServiceStub(channel).ListPeers(
                node_pb2.ListPeersRequest(), timeout=CALL_TIMEOUT_SECONDS
            ),
        )
        peers = [convert.peer_from_proto(p) for p in reply.peers]
    else:
        peers = await browse(target.cluster, target.mdns_interfaces, target.timeout)
    if args.json:
        views.print_json([views.peer_json(p) for p in peers])
    else:
        print(views.peers_table(peers))
    return 0


async def _status(args: argparse.Namespace) -> int:
    if args.workflow:
        args.role = "manager"
        from cli import workflows

        return await workflows.status(await locate(_target(args)), args)
    address = await locate(_target(args))

    async def ask(channel: grpc.aio.Channel) -> tuple[node_pb2.NodeInfo, node_pb2.ListPeersReply]:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        info = await stub.GetInfo(node_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT_SECONDS)
        peers = await stub.ListPeers(node_pb2.ListPeersRequest(), timeout=CALL_TIMEOUT_SECONDS)
        return info, peers

    info, peer_reply = await _call(address, "node", ask)
    resources = convert.resources_from_proto(info.resources)
    peers = [convert.peer_from_proto(p) for p in peer_reply.peers]
    work = None
    if "volunteer" in info.roles:
        from cli import owner  # its owner's view: what runs and what stops it, when local

        work = await owner.local_work(Path(info.data_dir))
        if work is not None and work.node_id != info.node_id:
            work = None  # another host's node whose data dir has the same path as one here
    if args.json:
        views.print_json(
            {
                "node_id": info.node_id,
                "hostname": info.hostname,
                "roles": list(info.roles),
                "cluster": info.cluster,
                "address": info.address,
                "version": info.version,
                "protocol_version": info.protocol_version,
                "data_dir": info.data_dir,
                "mdns": info.mdns,
                "started_at": info.started_at,
                "coordinator": info.coordinator,
                "trust": (
                    dataclasses.asdict(convert.trust_record_from_proto(info.trust))
                    if info.HasField("trust")
                    else None
                ),
                "resources": {
                    "cpu_cores": resources.cpu_cores,
                    "memory_mb": resources.memory_mb,
                    "disk_free_mb": resources.disk_free_mb,
                    "gpus": resources.gpus,
                },
                "peers": [views.peer_json(p) for p in peers],
                **({"work": owner.work_json(work)} if work is not None else {}),
            }
        )
        return 0
    print(f"node      {info.node_id} ({info.hostname})")
    print(f"roles     {', '.join(info.roles)}")
    if "volunteer" in info.roles:
        print(f"coordinator {info.coordinator or 'none (looking for one)'}")
        if info.HasField("trust"):
            print(f"results   {views.standing(convert.trust_record_from_proto(info.trust))}")
    print(f"cluster   {info.cluster}")
    print(f"address   {info.address}")
    print(f"version   {info.version} (protocol {info.protocol_version})")
    print(f"up since  {views.ago(info.started_at)}")
    print(f"data dir  {info.data_dir}")
    print(
        f"machine   {resources.cpu_cores} cores, {resources.memory_mb / 1024:.1f} GiB RAM, "
        f"{resources.disk_free_mb / 1024:.1f} GiB free disk, {resources.gpus} GPUs"
    )
    print(f"mdns      {'on' if info.mdns else 'off'}")
    if work is not None:
        print(f"limits    {owner.limits_text(work)}")
        print()
        print(owner.describe(work))
    print()
    print(views.peers_table(peers) if info.mdns else "peers     (mDNS is off on this node)")
    return 0


def _add_trust_parsers(commands: Any) -> None:
    from cli.durations import parse_duration

    token = commands.add_parser("token", help="join tokens: who may join the cluster (admins)")
    actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="print a token a new node (--token) or person (login) joins with"
    )
    create.add_argument(
        "--role",
        dest="token_role",
        required=True,
        metavar="ROLES",
        help="volunteer, manager (or both, comma separated), user or admin",
    )
    create.add_argument("--name", help="the person's name, for a user or admin token")
    create.add_argument(
        "--vouched", action="store_true",
        help="volunteer tokens: the lab's own machines, trusted with results from the start",
    )  # fmt: skip
    create.add_argument(
        "--owner", metavar="NAME",
        help="volunteer tokens: whose machines these are; two copies of a task never share one",
    )  # fmt: skip
    create.add_argument(
        "--ttl", type=parse_duration, default=24 * 3600.0, metavar="DURATION",
        help="how long it may be used: 30m, 24h, 7d (default 24h)",
    )  # fmt: skip
    create.add_argument(
        "--uses", type=int, default=0, metavar="N", help="joins it allows (default: any number)"
    )
    _add_target_arguments(create, "coordinator")
    create.set_defaults(handler=_on_target(_lazy("trust", "create")))
    listing = actions.add_parser("list", help="every token and how many joined with it")
    _add_target_arguments(listing, "coordinator")
    listing.set_defaults(handler=_on_target(_lazy("trust", "list_tokens")))
    revoke = actions.add_parser(
        "revoke", help="refuse a token and every node or person that joined with it, at once"
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="as `vcnode token list` shows it")
    _add_target_arguments(revoke, "coordinator")
    revoke.set_defaults(handler=_on_target(_lazy("trust", "revoke")))

    login = commands.add_parser(
        "login", help="keep a person's credential for this cluster (from a user token)"
    )
    login.add_argument("token", metavar="TOKEN", help="from `vcnode token create --role user`")
    login.set_defaults(handler=_async(_lazy("trust", "login")))


def _add_client_parsers(commands: Any) -> None:
    _add_trust_parsers(commands)
    dashboard = commands.add_parser(
        "dashboard",
        help="a login link into a node's web dashboard (a node started with --http)",
    )
    dashboard.add_argument(
        "--scrape-token",
        action="store_true",
        help="print a bearer token for Prometheus to scrape /metrics (only that) instead; it "
        "lasts 90 days, or until your certificate expires",
    )
    dashboard.add_argument(
        "--end-sessions",
        action="store_true",
        help="end every dashboard session and scrape token of the node at once (an admin or "
        "the node's owner)",
    )
    _add_target_arguments(dashboard, None)
    dashboard.set_defaults(handler=_on_target(_lazy("dashboard", "open_dashboard")))
    status = commands.add_parser(
        "status", help="this node and the peers it sees, or a workflow's progress"
    )
    status.add_argument("workflow", nargs="?", help="a workflow id: show its tasks instead")
    status.add_argument(
        "--why",
        nargs="?",
        const="",
        metavar="TASK",
        help="with WORKFLOW: why its queued tasks (or TASK) are not running, against each "
        "volunteer of the pool",
    )
    status.add_argument(
        "--task",
        metavar="TASK",
        help="with WORKFLOW: one task (name or id) and every copy that ran of it, with "
        "its volunteer, output hashes and verdict",
    )
    status.add_argument(
        "--all",
        action="store_true",
        help="with WORKFLOW: list every task (else at most 40, those needing attention first)",
    )
    _add_target_arguments(status, None)
    status.add_argument(
        "--manager",
        dest="address",
        metavar="HOST:PORT",
        help="the manager to ask about WORKFLOW (same as --node)",
    )
    status.set_defaults(handler=_async(_status))

    volunteers = commands.add_parser(
        "volunteers", help="the coordinator's volunteers and how far their results are trusted"
    )
    _add_target_arguments(volunteers, "coordinator")
    volunteers.add_argument(
        "--clear-trust",
        metavar="ID",
        help="lift a volunteer's blocklisting: its trust record starts afresh (admins)",
    )
    volunteers.set_defaults(handler=_async(_volunteers))

    peers = commands.add_parser(
        "peers", help="what mDNS sees (a daemon's view with --node/--data-dir, else our own)"
    )
    _add_target_arguments(peers, None)
    peers.set_defaults(handler=_async(_peers))


def _add_workflow_parsers(commands: Any) -> None:
    from cli.durations import parse_duration

    submit = commands.add_parser("submit", help="split a workflow into tasks and run them")
    submit.add_argument(
        "workflow", type=Path, nargs="?", help="a workflow file (TOML); not with --resume"
    )
    submit.add_argument(
        "--resume",
        metavar="WORKFLOW_ID",
        help="run again only what did not complete of an ended workflow (rescue DAG)",
    )
    submit.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a [parameters] value (repeatable)",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the workflow ends; exit 0 only if it completed",
    )
    _add_target_arguments(submit, "manager")
    submit.set_defaults(handler=_on_target(_lazy("workflows", "submit")))

    watch = commands.add_parser(
        "watch", help="print a workflow's events as they happen (an ended one's: its history)"
    )
    watch.add_argument("workflow", help="the workflow id")
    watch.add_argument(
        "--since",
        type=parse_duration,
        metavar="DURATION",
        help="of an ended workflow's history, only the last DURATION (e.g. 30m, 2h)",
    )
    _add_target_arguments(watch, "manager")
    watch.set_defaults(handler=_on_target(_lazy("workflows", "watch")))

    for name, handler, help_text in (
        (
            "cancel",
            _lazy("workflows", "cancel"),
            "cancel a workflow; its running containers are stopped",
        ),
        (
            "delete",
            _lazy("workflows", "delete"),
            "forget an ended workflow and free the manager's disk of the files only it used",
        ),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("workflow", help="the workflow id")
        _add_target_arguments(parser, "manager")
        parser.set_defaults(handler=_on_target(handler))

    results = commands.add_parser("results", help="download a workflow's merged results")
    results.add_argument("workflow", help="the workflow id")
    results.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to write the result files (default: here)",
    )
    _add_target_arguments(results, "manager")
    results.set_defaults(handler=_on_target(_lazy("workflows", "results")))

    logs = commands.add_parser(
        "logs",
        help="what a task wrote to stdout (or --stderr): in its last attempt, in another "
        "(--attempt N), or as it runs (-f)",
    )
    logs.add_argument("workflow", help="the workflow id")
    logs.add_argument(
        "task",
        nargs="?",
        default="",
        help="the task's name or id (optional when the workflow has one task); copy N of a "
        "replicated task is TASK~N, as `vcnode status WF --task TASK` lists them",
    )
    logs.add_argument("--stderr", action="store_true", help="its stderr instead of stdout")
    logs.add_argument(
        "--attempt",
        type=int,
        metavar="N",
        help="attempt N's log, as status numbers attempts (each copy TASK~N has attempts of "
        "its own; TASK alone is its first copy). Default: the result that stands (a "
        "replicated task's: its accepted copy's), else the latest attempt that ended",
    )
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print what the running task wrote so far, then what it writes, until it ends "
        "(exit 0 only if it completed); a task not started is waited for, an ended one's log "
        "printed. Joining a running attempt, live output starts within 32 s (what it wrote "
        "before: --attempt N once it ends). TASK of a replicated task follows its first copy "
        "until the task ends; TASK~N follows copy N until that copy ends",
    )
    _add_target_arguments(logs, "manager")
    logs.set_defaults(handler=_on_target(_lazy("workflows", "logs")))

    validate = commands.add_parser(
        "validate", help="check a workflow file (parameters, files, split); submits nothing"
    )
    validate.add_argument("workflow", type=Path, help="a workflow file (TOML)")
    validate.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a [parameters] value (repeatable)",
    )
    validate.add_argument("--json", action="store_true", help="print JSON for scripts")
    validate.set_defaults(handler=_lazy("workflow_file", "validate"))

    init = commands.add_parser(
        "init",
        help="write a ready-to-run workflow file for a type",
        description="TYPE is tasks (your own commands, as a DAG) or a workflow type; an"
        " unknown TYPE lists them all.",
    )
    init.add_argument("type", metavar="TYPE", help="tasks, or a splitter name")
    init.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here (default: print it)"
    )
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.set_defaults(handler=_lazy("init", "init"))
    docs = commands.add_parser("docs", help="read the guides shipped with vcnode (no network)")
    docs.add_argument("topic", nargs="?", metavar="TOPIC", help="default: list the topics")
    docs.set_defaults(handler=_lazy("docs", "docs"))

    listing = commands.add_parser("workflows", help="the manager's workflows")
    _add_target_arguments(listing, "manager")
    listing.set_defaults(handler=_on_target(_lazy("workflows", "list_workflows")))


def _add_service_parser(commands: Any) -> None:
    service = commands.add_parser(
        "service",
        help="run the daemon as a systemd service on this machine: install, status, uninstall",
    )
    actions = service.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="write the daemon's config and a systemd unit, then enable and start it",
        description="Writes the settings given (the daemon's flags) to a TOML config file "
        "(/etc/vcnode/daemon.toml, data in /var/lib/vcnode; with --user "
        "$XDG_CONFIG_HOME/vcnode/daemon.toml, data in $XDG_DATA_HOME/vcnode) and a unit, "
        "vcnode.service, that runs `daemon --config` on it and restarts it on failure; logs "
        "go to journald. Where systemd is not running, the files are written and the "
        "command says how to run the daemon instead. Different existing files are replaced "
        "only with --force.",
    )
    _add_setting_arguments(install)
    install.add_argument(
        "--force", action="store_true", help="replace an existing unit or config file"
    )
    install.set_defaults(handler=_lazy("service", "install"))
    uninstall = actions.add_parser(
        "uninstall",
        help="stop and disable the service, remove its unit and config (keeps the data dir)",
    )
    uninstall.set_defaults(handler=_lazy("service", "uninstall"))
    status = actions.add_parser(
        "status", help="the service's state in systemd and the daemon's own `vcnode status`"
    )
    status.set_defaults(handler=_lazy("service", "status"))
    for parser in (install, uninstall, status):
        parser.add_argument(
            "--user",
            action="store_true",
            help="a user unit (systemctl --user) in your XDG dirs instead of a system one",
        )
        parser.add_argument(
            "--root",
            type=Path,
            metavar="DIR",
            help="write and read the files under DIR as if it were / and leave systemd "
            "alone (for building images, and tests)",
        )


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A command's function from cli.MODULE, imported when that command runs:
    each command loads only what it uses, so the CLI starts faster."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f"cli.{module}"), name)(*args)

    return call


def _on_target(
    command: Callable[[Dial, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    async def run(args: argparse.Namespace) -> int:
        return await command(await locate(_target(args)), args)

    return _async(run)


def _async(command: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))  # type: ignore[arg-type]

    return run


# --- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node",
        description="vcnode: a volunteer-computing mesh. Run 'node COMMAND --help' for more.",
    )
    parser.add_argument("--version", action="version", version=f"vcnode {VERSION}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_daemon_parser(commands)
    _add_service_parser(commands)
    _add_client_parsers(commands)
    _add_workflow_parsers(commands)
    from cli.demo import add_demo_parser
    from cli.history import add_parser as add_history_parser
    from cli.owner import add_parsers as add_owner_parsers

    add_demo_parser(commands)
    add_history_parser(commands)
    add_owner_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except NodeError as error:
        print(f"node: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`node status W | head`): stop quietly, as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code
