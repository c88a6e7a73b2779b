"""`vcnode pause`, `resume` and `drain`: the machine's owner controls the volunteer running
on it, through the control socket in its data dir (no certificate: the socket's permissions
say who may)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from cli import views
from cli.durations import parse_duration
from cli.local_volunteer import volunteer_data_dir
from daemon.config import default_data_dir
from daemon.errors import AccessDeniedError, InvalidInputError, NodeError, UnreachableError
from daemon.rpc.v1 import control_pb2, control_pb2_grpc
from daemon.transport import convert
from daemon.transport.local_socket import SOCKET_NAME, ControlSocketError, open_control_channel

CALL_TIMEOUT_SECONDS = 10.0
DRAIN_POLL_SECONDS = 0.5


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pause = commands.add_parser(
        "pause",
        help="freeze this volunteer's tasks and take no new ones (its owner's command)",
        description="Freezes the running task containers (docker pause) and declines new "
        "offers with the reason 'paused by owner', until `vcnode resume` or the end of "
        "--for. A pause longer than the volunteer's --pause-grace hands its tasks back to "
        "the pool, to run elsewhere.",
    )
    pause.add_argument(
        "--for", dest="seconds", type=parse_duration, metavar="DURATION",
        help="end the pause by itself after DURATION (90s, 30m, 2h, 1h30m)",
    )  # fmt: skip
    _add_data_dir(pause)
    pause.set_defaults(handler=_command(_pause))
    resume = commands.add_parser(
        "resume", help="end a pause or a drain: frozen tasks go on, new ones are taken"
    )
    _add_data_dir(resume)
    resume.set_defaults(handler=_command(_resume))
    drain = commands.add_parser(
        "drain",
        help="take no new tasks and let the running ones finish (before maintenance)",
        description="Declines new offers, hands back the tasks that have not started, and "
        "lets the running ones finish; it stays drained until `vcnode resume`.",
    )
    drain.add_argument(
        "--wait", action="store_true", help="return once the running tasks have finished"
    )
    _add_data_dir(drain)
    drain.set_defaults(handler=_command(_drain))
    config = commands.add_parser("config", help="the running volunteer's configuration")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    reload = actions.add_parser(
        "reload",
        help="read the config file again and apply it without a restart (as SIGHUP does)",
        description="Applies at once the owner's limits, the [schedule] rules, the pause "
        "grace and the log level; says which other settings changed and wait for a restart. "
        "A config with an error is refused and the one in use stays.",
    )
    _add_data_dir(reload)
    reload.set_defaults(handler=_command(_reload, show=_reloaded))
    cache = commands.add_parser("cache", help="the volunteer's cache of inputs and images")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    clear = actions.add_parser(
        "clear",
        help="remove every cached input and image archive no task is using now",
        description="Frees the disk the volunteer keeps fetched inputs and image archives on "
        "(at most --max-disk-mb): what running tasks use stays; later tasks fetch again.",
    )
    _add_data_dir(clear)
    clear.set_defaults(handler=_command(_clear_cache, show=_cleared))


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the volunteer's data dir (default {default_data_dir()}, else an installed "
        "service's)",
    )


if TYPE_CHECKING:
    Stub = control_pb2_grpc.OwnerControlAsyncStub


Reply = TypeVar(
    "Reply",
    control_pb2.VolunteerWork,
    control_pb2.ReloadConfigReply,
    control_pb2.ClearCacheReply,
)


def _command(
    action: Callable[[Stub, argparse.Namespace], Awaitable[Reply]],
    show: Callable[[Reply], str] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """`show`: the reply in words (what the volunteer does now, by default)."""

    def run(args: argparse.Namespace) -> int:
        reply = asyncio.run(_call(action, args))
        print(show(reply) if show is not None else describe(reply))  # type: ignore[arg-type]
        return 0

    return run


async def _call(
    action: Callable[[Stub, argparse.Namespace], Awaitable[Reply]], args: argparse.Namespace
) -> Reply:
    data_dir = args.data_dir or volunteer_data_dir(SOCKET_NAME)
    try:
        channel = open_control_channel(data_dir)
    except ControlSocketError as error:
        raise (AccessDeniedError if error.not_the_owner else UnreachableError)(str(error)) from None
    async with channel:
        try:
            stub: Stub = control_pb2_grpc.OwnerControlStub(channel)
            return await action(stub, args)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInputError(error.details() or "refused") from None
            why = error.details() or error.code().name
            raise NodeError(f"the volunteer of {data_dir} did not answer: {why}") from None


async def _reload(stub: Stub, args: argparse.Namespace) -> control_pb2.ReloadConfigReply:
    return await stub.ReloadConfig(control_pb2.ReloadConfigRequest(), timeout=CALL_TIMEOUT_SECONDS)


def _reloaded(reply: control_pb2.ReloadConfigReply) -> str:
    return f"reloaded: {reply.summary}"


async def _clear_cache(stub: Stub, args: argparse.Namespace) -> control_pb2.ClearCacheReply:
    return await stub.ClearCache(control_pb2.ClearCacheRequest(), timeout=CALL_TIMEOUT_SECONDS)


def _cleared(reply: control_pb2.ClearCacheReply) -> str:
    kept = f"; {views.size(reply.left_bytes)} kept for running tasks" if reply.left_bytes else ""
    return (
        f"cleared {reply.blobs} cached blob{'s' if reply.blobs != 1 else ''}, "
        f"{views.size(reply.freed_bytes)} freed{kept} (cap {views.size(reply.quota_bytes)})"
    )


async def _pause(stub: Stub, args: argparse.Namespace) -> control_pb2.VolunteerWork:
    request = control_pb2.PauseRequest(seconds=args.seconds or 0.0)
    return await stub.Pause(request, timeout=CALL_TIMEOUT_SECONDS)


async def _resume(stub: Stub, args: argparse.Namespace) -> control_pb2.VolunteerWork:
    return await stub.Resume(control_pb2.ResumeRequest(), timeout=CALL_TIMEOUT_SECONDS)


async def _drain(stub: Stub, args: argparse.Namespace) -> control_pb2.VolunteerWork:
    work = await stub.Drain(control_pb2.DrainRequest(), timeout=CALL_TIMEOUT_SECONDS)
    if not args.wait:
        return work
    said = ""
    while work.draining and work.attempts:
        line = f"waiting for {_tasks(work.attempts)}"
        if line != said:
            print(line, flush=True)
            said = line
        await asyncio.sleep(DRAIN_POLL_SECONDS)  # polls the daemon's state until drained
        work = await stub.GetWork(control_pb2.GetWorkRequest(), timeout=CALL_TIMEOUT_SECONDS)
    return work


async def local_work(data_dir: Path) -> control_pb2.VolunteerWork | None:
    """What the volunteer of `data_dir` does, from its control socket; None when this user
    cannot reach it (a node on another host, or run by another user)."""
    try:
        channel = open_control_channel(data_dir)
    except ControlSocketError:
        return None
    async with channel:
        stub: Stub = control_pb2_grpc.OwnerControlStub(channel)
        try:
            return await stub.GetWork(control_pb2.GetWorkRequest(), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError:
            return None


def work_json(work: control_pb2.VolunteerWork) -> dict[str, object]:
    return {
        "holds": [
            {"name": h.name, "reason": h.reason, "since": h.since, "until": h.until or None}
            for h in work.holds
        ],
        "draining": work.draining,
        "tasks": [
            {
                "task_id": a.task_id,
                "attempt": a.attempt,
                "workflow_id": a.workflow_id,
                "phase": a.phase,
            }
            for a in work.attempts
        ],
        "unacknowledged_results": work.unacknowledged,
        "slots": work.slots,
        "limits": dataclasses.asdict(convert.limits_from_proto(work.limits)),
    }


def limits_text(work: control_pb2.VolunteerWork) -> str:
    limits = convert.limits_from_proto(work.limits)
    caps = [
        f"{work.slots} task{'s' if work.slots != 1 else ''} at once",
        f"{limits.max_cpus} CPUs" if limits.max_cpus else "",
        f"{limits.max_memory_mb} MiB" if limits.max_memory_mb else "",
        f"{limits.max_disk_mb} MiB of disk" if limits.max_disk_mb else "",
        f"each task at most {limits.cpu_throttle_percent}% of its CPUs"
        if limits.cpu_throttle_percent
        else "",
        "network allowed" if limits.allow_network else "",
        "pulls allowed" if limits.allow_pull else "",
        f"managers {', '.join(limits.allow_managers)}" if limits.allow_managers else "",
        f"users {', '.join(limits.allow_users)}" if limits.allow_users else "",
        f"images {', '.join(limits.allow_images)}" if limits.allow_images else "",
    ]
    return ", ".join(cap for cap in caps if cap)


def describe(work: control_pb2.VolunteerWork) -> str:
    """What the volunteer does now, in the owner's words."""
    lines = []
    for hold in work.holds:
        until_resumed = hold.until == 0 and hold.name == "owner"
        lines.append(hold.reason + (" (until `vcnode resume`)" if until_resumed else ""))
    held = [a for a in work.attempts if a.phase not in ("delivering", "stopping")]
    if work.holds and held:
        # As the volunteer does it: the grace runs from the first hold, and ends with the
        # last; a pause that ends first hands nothing back.
        handed = min(h.since for h in work.holds) + work.hold_grace_seconds
        ends = max(h.until or math.inf for h in work.holds)
        if time.time() < handed < ends:
            lines.append(f"its tasks go back to the pool at {views.clock(handed)} unless resumed")
    if work.draining:
        lines.append(
            "draining: takes no new tasks until `vcnode resume`"
            + ("" if work.attempts else "; drained (no task left)")
        )
    if work.stopping:
        lines.append("stopping")
    if not lines:
        lines.append(f"working: takes tasks (holds up to {work.held_most}, runs {work.slots})")
    lines.append(f"tasks: {_tasks(work.attempts) if work.attempts else 'none'}")
    if work.unacknowledged:
        lines.append(f"results waiting for the coordinator: {work.unacknowledged}")
    lines.append(f"coordinator: {work.coordinator or 'none (looking for one)'}")
    return "\n".join(lines)


def _tasks(attempts: Iterable[control_pb2.HeldAttempt]) -> str:
    return ", ".join(f"{a.task_id} ({a.phase})" for a in attempts)
