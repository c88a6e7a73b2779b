"""How client commands show things: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from daemon.discovery.peers import Peer
from daemon.models import TaskExplanation, TrustRecord, Volunteer


def print_json(value: Any) -> None:
    """One JSON document on stdout, indented, keys sorted: what `--json` prints."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def ago(timestamp: float, now: float | None = None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0.0, (now or time.time()) - timestamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def size(count: int) -> str:
    """A byte count for people: 512 bytes, 3.2 MiB, 1.5 GiB."""
    if count < 1024:
        return f"{count} bytes"
    power = min((count.bit_length() - 1) // 10, 3)  # 1 KiB, 2 MiB, 3 GiB
    return f"{count / 1024**power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def runtime_of(volunteer: Volunteer) -> str:
    """How its tasks run: said wherever a volunteer is shown, since a sandbox of rlimits is not
    a container of cgroups."""
    if volunteer.resources.docker_available:
        return "docker"
    if volunteer.limits.allow_process_runtime:
        return "process (sandbox)"
    return "none"


def volunteer_json(volunteer: Volunteer) -> dict[str, Any]:
    return {
        "id": volunteer.volunteer_id,
        "hostname": volunteer.hostname,
        "state": volunteer.state.value,
        "connected": volunteer.connected,
        "cpu_cores": volunteer.resources.cpu_cores,
        "memory_mb": volunteer.resources.memory_mb,
        "disk_free_mb": volunteer.resources.disk_free_mb,
        "gpus": volunteer.resources.gpus,
        "docker": volunteer.resources.docker_available,
        "runtime": runtime_of(volunteer),
        "isolated": volunteer.resources.docker_available,
        "images": list(volunteer.resources.images),
        "load": asdict(volunteer.load),
        "limits": asdict(volunteer.limits),
        "version": volunteer.version,
        "first_seen": volunteer.first_seen,
        "last_seen": volunteer.last_seen,
        "owner": volunteer.owner,
        "trust": asdict(volunteer.trust),
    }


def standing(trust: TrustRecord) -> str:
    """A volunteer's own view of how its coordinator trusts its results."""
    if trust.blocklisted:
        return (
            f"BLOCKLISTED by the coordinator: {trust.blocklist_reason}. No tasks come until "
            "an admin clears it (vcnode volunteers --clear-trust ID); check this machine's "
            "memory and its Docker images first"
        )
    checked = f"{trust.agreed} agreed with other volunteers', {trust.disagreed} disagreed"
    if trust.vouched:
        return f"trusted (vouched for); {checked}"
    return f"{checked}; {trust.streak} agreed in a row"


def trust_of(volunteer: Volunteer) -> str:
    """Its results as checked against other volunteers': "vouched", "7 agreed in a row",
    "blocklisted", "new"."""
    trust = volunteer.trust
    if trust.blocklisted:
        return f"blocklisted ({trust.disagreed} disagreed)"
    if trust.vouched:
        return "vouched" + (f", {trust.streak} agreed" if trust.streak else "")
    if trust.disagreed:
        return f"{trust.streak} agreed since a disagreement"
    return f"{trust.streak} agreed" if trust.streak else "new"


def volunteers_table(volunteers: Sequence[Volunteer]) -> str:
    if not volunteers:
        return "no volunteers have joined this coordinator yet"
    rows = [
        [
            v.volunteer_id[:8],
            v.hostname,
            str(v.resources.cpu_cores),
            f"{v.resources.memory_mb / 1024:.1f} GiB",
            f"{v.load.cpu_percent:.0f}% cpu, {v.load.running_tasks} tasks",
            runtime_of(v),
            trust_of(v),
            f"{v.state.value} (no tasks)" if v.connected and v.load.unavailable else v.state.value,
            ago(v.last_seen),
        ]
        for v in volunteers
    ]
    headers = ["ID", "HOST", "CORES", "RAM", "LOAD", "RUNTIME", "TRUST", "STATE", "LAST SEEN"]
    table_text = table(headers, rows)
    blocked = [v for v in volunteers if v.trust.blocklisted]
    for v in blocked:
        table_text += f"\n{v.volunteer_id[:8]} is blocklisted: {v.trust.blocklist_reason}"
    if blocked:
        table_text += "\n(an admin lifts it: vcnode volunteers --clear-trust ID)"
    for v in volunteers:
        if v.connected and v.load.unavailable:
            until = (
                f" (until {clock(v.load.unavailable_until)})" if v.load.unavailable_until else ""
            )
            table_text += f"\n{v.volunteer_id[:8]} takes no tasks: {v.load.unavailable}{until}"
    return table_text


def clock(epoch: float) -> str:
    """A time today as HH:MM, another day's as YYYY-MM-DD HH:MM (local time)."""
    moment = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", moment)
    return time.strftime("%Y-%m-%d %H:%M", moment)


def explanation_text(explanation: TaskExplanation) -> str:
    """Why one task is not running, a line per reason: "2 volunteers: not enough disk"."""
    lines = [f"task {explanation.name} ({explanation.state})"]
    if explanation.message:
        lines.append(f"  {explanation.message}")
    if not explanation.groups:
        waiting = explanation.state in ("queued", "waiting")
        lines.append("  no volunteer has joined the pool" if waiting else "  not waiting")
    for group in explanation.groups:
        count = len(group.volunteer_ids)
        if not count:
            lines.append(f"  {group.reason}")
            continue
        who = f"{count} volunteer{'s' if count != 1 else ''}"
        ids = ", ".join(vid[:8] for vid in group.volunteer_ids[:4])
        more = f" and {count - 4} more" if count > 4 else ""
        lines.append(f"  {who}: {group.reason} ({ids}{more})")
    return "\n".join(lines)


def peer_json(peer: Peer) -> dict[str, Any]:
    return {
        "service_name": peer.service_name,
        "node_id": peer.node_id,
        "roles": list(peer.roles),
        "cluster": peer.cluster,
        "protocol_version": peer.protocol_version,
        "address": peer.address,
        "version": peer.version,
        "last_seen": peer.last_seen,
        "usable": peer.usable,
        "skipped_reason": peer.skipped_reason,
    }


def peers_table(peers: Sequence[Peer]) -> str:
    if not peers:
        return "no peers seen on mDNS"
    rows = [
        [
            p.node_id[:8] or "?",
            ",".join(p.roles) or "?",
            p.cluster or "?",
            p.address,
            ago(p.last_seen),
            f"skipped: {p.skipped_reason}" if p.skipped_reason else "ok",
        ]
        for p in peers
    ]
    return table(["ID", "ROLES", "CLUSTER", "ADDRESS", "SEEN", "STATUS"], rows)
