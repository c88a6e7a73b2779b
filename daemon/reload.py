"""What a configuration re-read changes in a running daemon (SIGHUP, `vcnode config reload`).

Some settings apply at once: the owner's limits and rules, the pause grace, the log level.
The others (roles, addresses, the data dir, the cluster...) shape what the daemon opened at
its start: a change to them is kept for the next start and said so, never half applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from daemon.config import NodeConfig

# Settings a running daemon takes as they change.
LIVE = frozenset({"limits", "pause_grace_seconds", "log_level", "schedule"})
# Limits that decided what the daemon opened at its start (the process runtime, chosen
# when there is no Docker engine): they wait for the next start like the others.
LIMITS_AT_START = frozenset({"allow_process_runtime"})


@dataclass(frozen=True)
class Reloaded:
    """What a re-read found: settings applied now (`limits.max_cpus`, `schedule.hours`,
    ...), and settings that wait for a restart (`listen`, `roles`, ...)."""

    applied: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()

    def describe(self) -> str:
        if not (self.applied or self.needs_restart):
            return "the configuration is unchanged"
        said = []
        if self.applied:
            said.append(f"applied {', '.join(self.applied)}")
        if self.needs_restart:
            said.append(f"{', '.join(self.needs_restart)} changed: applied at the next start")
        return "; ".join(said)


def _changed(name: str, old: Any, new: Any) -> list[str]:
    """The names of what differs, a table's (limits, schedule) by its own fields."""
    if old == new:
        return []
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        return [
            f"{name}.{field.name}"
            for field in dataclasses.fields(old)
            if getattr(old, field.name) != getattr(new, field.name)
        ]
    return [name]


def compare(running: NodeConfig, read: NodeConfig) -> tuple[NodeConfig, Reloaded]:
    """The configuration to run with from now on (`running`, with the live settings of
    `read`) and what changed."""
    applied: list[str] = []
    waiting: list[str] = []
    live: dict[str, Any] = {}
    for field in dataclasses.fields(running):
        old, new = getattr(running, field.name), getattr(read, field.name)
        changed = _changed(field.name, old, new)
        if not changed:
            continue
        if field.name == "limits":
            at_start = {name: getattr(old, name) for name in LIMITS_AT_START}
            live["limits"] = dataclasses.replace(new, **at_start)
            for name in changed:
                (waiting if name.removeprefix("limits.") in LIMITS_AT_START else applied).append(
                    name
                )
        elif field.name in LIVE:
            live[field.name] = new
            applied += changed
        elif field.name != "token":  # used once, to join: nothing to apply
            waiting += changed
    return dataclasses.replace(running, **live), Reloaded(tuple(applied), tuple(waiting))
