"""The owner's rules that stop work by themselves: hours, idle, other load, battery (pure).

The `[schedule]` table of the config (flags `--schedule-*`, variables `VCNODE_SCHEDULE_*`):

    days = ["mon", "tue", "wed", "thu", "fri"]  # or "mon-fri", "mon,wed,fri"; default every day
    hours = "18:00-08:00"   # local time, may wrap midnight; default all day ("00:00-24:00")
    idle_minutes = 10       # run only after 10 min without input (0: off)
    max_other_load = 25     # stop while other processes use over 25% of the CPUs (0: off)
    on_battery = false      # run on battery too (default: mains power only)

A day in `days` means the window that *starts* that day, as BOINC has it: with
`hours = "22:00-06:00"` and `days = ["fri"]`, tasks run from friday 22:00 to saturday 06:00,
and not from thursday 22:00 on. Windows are wall-clock times of the machine's time zone, and
daylight saving time is taken as the clock shows it: a window opening in the hour the clock
skips opens when the clock jumps past it; one ending in the hour the clock repeats ends the
second time (it runs an hour longer, rather than stop and start again).

Each rule that applies is a lifecycle `Hold` (volunteer_node/lifecycle.py) of its own name
(SCHEDULE_HOLD, IDLE_HOLD, LOAD_HOLD, BATTERY_HOLD) with a reason the owner's `vcnode
status`, the coordinator and `vcnode status --why` show, and, for the schedule, when it ends.
This module decides (`evaluate`); volunteer_node/rule_watch.py measures the machine and
carries the decisions out. The settings themselves (`OwnerRules`, `Hours`) and their parsers
are daemon/config.py's, where every setting is read (the daemon layer imports no role's
module), and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

# The settings and their parsers live with the other settings (the config is read before
# any role's module), and are this module's too.
from daemon.config import (
    ALL_DAY,
    ALL_DAYS,
    WEEKDAYS,
    Hours,
    OwnerRules,
    day_names,
    days_text,
    parse_days,
    parse_hours,
    parse_load_percent,
)
from volunteer_node.lifecycle import Hold

__all__ = [
    "ALL_DAY",
    "ALL_DAYS",
    "BATTERY_HOLD",
    "BATTERY_REASON",
    "IDLE_HOLD",
    "LOAD_HOLD",
    "RESUME_LOAD_SHARE",
    "RULE_HOLDS",
    "SCHEDULE_HOLD",
    "WEEKDAYS",
    "Facts",
    "Hours",
    "OwnerRules",
    "Verdict",
    "day_names",
    "days_text",
    "evaluate",
    "next_change",
    "next_opening",
    "parse_days",
    "parse_hours",
    "parse_load_percent",
    "resume_load",
    "schedule_open",
]

SCHEDULE_HOLD = "schedule"
IDLE_HOLD = "idle"
LOAD_HOLD = "load"
BATTERY_HOLD = "battery"
RULE_HOLDS = (SCHEDULE_HOLD, IDLE_HOLD, LOAD_HOLD, BATTERY_HOLD)

# Tasks stopped for other processes' load start again only once that load is below this
# share of the threshold: a load that hovers around the threshold must not freeze and thaw
# them every check.
RESUME_LOAD_SHARE = 0.8
BATTERY_REASON = "on battery: its owner runs tasks on mains power only"


def resume_load(rules: OwnerRules) -> float:
    """Below this share of the CPUs used by others, tasks stopped for the load go on."""
    return rules.max_other_load * RESUME_LOAD_SHARE


# --- the schedule -------------------------------------------------------------------------


def _instant(wall: datetime, zone: tzinfo, *, later: bool) -> datetime:
    """The moment (UTC) the clock of `zone` shows the naive time `wall`: the first or, with
    `later`, the second time when the clock shows it twice (DST ends); when the clock skips
    it (DST starts), the moment it jumps past it."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first
    if first < second:
        return second if later else first
    # In a gap, fold=1 reads it with the offset after the jump (a moment before it) and fold=0
    # with the one before (a moment after it): the jump is between, on a whole second.
    before, after = int(second.timestamp()), math.ceil(first.timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def _window(hours: Hours, day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The window that starts on `day`, as moments."""
    opens = datetime.combine(day, time()) + timedelta(minutes=hours.start)
    closes = opens + timedelta(minutes=hours.length)
    return _instant(opens, zone, later=False), _instant(closes, zone, later=True)


def _zone(now: datetime) -> tzinfo:
    if now.tzinfo is None:
        raise ValueError("`now` must be an aware datetime in the machine's time zone")
    return now.tzinfo


def _current_window(rules: OwnerRules, now: datetime) -> tuple[datetime, datetime] | None:
    zone = _zone(now)
    today = now.date()
    for day in (today - timedelta(days=1), today):
        if day.weekday() in rules.days:
            opens, closes = _window(rules.hours, day, zone)
            if opens <= now < closes:
                return opens, closes
    return None


def schedule_open(rules: OwnerRules, now: datetime) -> bool:
    return not rules.has_schedule or _current_window(rules, now) is not None


def next_opening(rules: OwnerRules, now: datetime) -> datetime | None:
    """When the next window after `now` opens (local time); None: never (no day)."""
    zone = _zone(now)
    for step in range(8):
        day = now.date() + timedelta(days=step)
        if day.weekday() in rules.days:
            opens, _ = _window(rules.hours, day, zone)
            if opens > now:
                return opens.astimezone(zone)
    return None


def next_change(rules: OwnerRules, now: datetime) -> datetime | None:
    """When the schedule may open or close next (local time): the end of the window `now`
    is in, else the next opening; None when there is no schedule (or no day)."""
    if not rules.has_schedule:
        return None
    window = _current_window(rules, now)
    if window is not None:
        return window[1].astimezone(_zone(now))
    return next_opening(rules, now)


def _when(moment: datetime) -> str:
    return f"{WEEKDAYS[moment.weekday()]} {moment:%H:%M}"


# --- all rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What was measured of the machine; None where nothing was (or nothing can be)."""

    # True on battery; None: no battery, or the platform cannot tell.
    on_battery: bool | None = None
    # Since the last input anyone gave; None: no source says (taken as idle); math.inf:
    # nobody is logged in.
    idle_seconds: float | None = None
    # Percent of the machine's CPUs that processes other than the volunteer's used; None:
    # not measured yet.
    other_load: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Holds to place (or to renew, with a new reason or end), and the names to lift.
    A rule in neither stays as it is."""

    holds: tuple[Hold, ...] = ()
    lifts: tuple[str, ...] = ()


def _ago(seconds: float) -> str:
    return "input just now" if seconds < 60 else f"input {int(seconds // 60)} min ago"


def _percent(value: float) -> str:
    return f"{round(value, 1):g}%"


def evaluate(
    rules: OwnerRules, now: datetime, facts: Facts, holding: Collection[str] = ()
) -> Verdict:
    """The holds that apply at `now` (an aware local datetime) given `facts`, and which of
    the rule holds `holding` (the names held now) to lift."""
    since = now.timestamp()
    holds: list[Hold] = []
    undecided: set[str] = set()

    if rules.has_schedule and _current_window(rules, now) is None:
        opening = next_opening(rules, now)
        until = opening.timestamp() if opening is not None else math.inf
        ends = f"until {_when(opening)}" if opening is not None else "on no day"
        reason = f"outside its hours ({rules.schedule_text()}) {ends}"
        holds.append(Hold(SCHEDULE_HOLD, reason, until, since))

    idle = facts.idle_seconds
    if rules.idle_minutes and idle is not None and idle < rules.idle_minutes * 60:
        reason = f"in use: {_ago(idle)}, runs after {rules.idle_minutes} min idle"
        holds.append(Hold(IDLE_HOLD, reason, math.inf, since))

    if rules.max_other_load:
        load = facts.other_load
        if load is None:
            undecided.add(LOAD_HOLD)  # no figure yet: as it was
        elif load > rules.max_other_load or (LOAD_HOLD in holding and load >= resume_load(rules)):
            reason = (
                f"busy with its owner's work: other processes use {_percent(load)} of the "
                f"CPUs (runs below {_percent(resume_load(rules))})"
            )
            holds.append(Hold(LOAD_HOLD, reason, math.inf, since))

    if not rules.on_battery and facts.on_battery:
        holds.append(Hold(BATTERY_HOLD, BATTERY_REASON, math.inf, since))

    applying = {hold.name for hold in holds} | undecided
    lifts = tuple(name for name in RULE_HOLDS if name in holding and name not in applying)
    return Verdict(tuple(holds), lifts)
