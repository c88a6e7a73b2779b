"""What ran on this volunteer: one compact record per attempt that ended here, kept after the
task and outbox rows are pruned (`vcnode history`), and the per-day totals made of them.

Light on purpose: the volunteer's store imports it, and the CLI reads the records with plain
sqlite3 while the daemon runs or is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.errors import DataDirError


class Outcome(StrEnum):
    """How an attempt ended on this volunteer."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by its coordinator or manager
    HANDED_BACK = "handed_back"  # given back unfinished (the owner paused or stopped it)
    ABANDONED = "abandoned"  # the volunteer's process died while it ran


@dataclass(frozen=True)
class RanTask:
    """One attempt at a task that ended on this volunteer, with what it cost the machine."""

    task_id: str
    attempt: int
    workflow_id: str
    manager_id: str
    user: str  # who submitted the workflow, as its manager says; empty when a node did
    image: str
    outcome: Outcome
    error: str
    exit_code: int | None
    received_at: float
    started_at: float | None  # its container started; None if it never did
    finished_at: float
    cpu_seconds: float | None
    peak_memory_mb: float | None
    bytes_in: int  # fetched for it: inputs not sent inline, and the image archive
    bytes_out: int  # outputs and logs uploaded or carried with the result

    @property
    def run_seconds(self) -> float | None:
        """How long its container ran."""
        if self.started_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)


# The `history` table has one column per field, in this order (volunteer/0002_history).
COLUMNS = tuple(field.name for field in dataclasses.fields(RanTask))


def to_row(entry: RanTask) -> tuple[Any, ...]:
    return tuple(getattr(entry, name) for name in COLUMNS)


def from_row(row: Iterable[Any]) -> RanTask:
    values = dict(zip(COLUMNS, row, strict=True))
    return RanTask(**{**values, "outcome": Outcome(values["outcome"])})


def select_since(db: sqlite3.Connection, since: float) -> list[RanTask]:
    rows = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM history WHERE finished_at >= ? "
        "ORDER BY finished_at, task_id, attempt",
        (since,),
    ).fetchall()
    return [from_row(row) for row in rows]


def read_history(db_path: Path, since: float) -> list[RanTask]:
    """The attempts that ended since `since`, read from the volunteer's database file without
    writing to it: it works while the daemon runs, and while it is stopped."""
    if not db_path.is_file():
        raise DataDirError(
            f"no volunteer has run in {db_path.parent}: there is no {db_path.name} there "
            "(pass --data-dir DIR, the data dir of the volunteer's daemon)"
        )
    # A daemon that stopped leaves no -wal: all is in the file, read as immutable so that we
    # make no -wal and -shm of our own (owned by whoever ran us, they could keep the daemon
    # from writing). A running daemon's, or a crashed one's, -wal is read as it stands.
    running = db_path.with_name(f"{db_path.name}-wal").exists()
    uri = f"{db_path.absolute().as_uri()}?mode=ro{'' if running else '&immutable=1'}"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as db:
            return select_since(db, since)
    except sqlite3.OperationalError as error:
        if "no such table: history" in str(error):
            raise DataDirError(
                f"{db_path} was written by an older volunteer that kept no history; start "
                f"its daemon once (node daemon --data-dir {db_path.parent}) to upgrade it"
            ) from None
        raise DataDirError(f"cannot read {db_path}: {error}") from None
    except sqlite3.DatabaseError as error:
        raise DataDirError(f"cannot read {db_path}: {error}") from None


# --- --since --------------------------------------------------------------------------------

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None, tz: datetime.tzinfo | None = None) -> float:
    """The moment `text` names: a time back from `now` (`30m`, `12h`, `7d`), or a date or
    date-time (`2026-12-01`, `2026-12-01T08:00`) in `tz` (None: this machine's local time)."""
    cleaned = text.strip()
    if (match := _AGO.fullmatch(cleaned)) is not None:
        return (time.time() if now is None else now) - float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        moment = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            "expected a time back from now such as 30m, 12h or 7d, or a date such as "
            f"2026-12-01, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)  # naive with tz None: local time, DST included
    return moment.timestamp()


# --- totals per day ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DayTotal:
    """One calendar day: the attempts that ended on it, and the container time it held."""

    day: datetime.date
    tasks: int
    completed: int
    failed: int
    # Container time within the day, summed over tasks (concurrent tasks add up): a task
    # that ran across midnight counts on each day for its part.
    busy_seconds: float
    cpu_seconds: float
    bytes_in: int
    bytes_out: int


@dataclass
class _Tally:
    tasks: int = 0
    completed: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    cpu_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


def local_date(timestamp: float, tz: datetime.tzinfo | None) -> datetime.date:
    return datetime.datetime.fromtimestamp(timestamp, tz).date()


def _next_midnight(day: datetime.date, tz: datetime.tzinfo | None) -> float:
    following = day + datetime.timedelta(days=1)
    return datetime.datetime.combine(following, datetime.time.min, tzinfo=tz).timestamp()


def _busy_by_day(
    entry: RanTask, tz: datetime.tzinfo | None
) -> Iterator[tuple[datetime.date, float]]:
    if entry.started_at is None:
        return
    start = entry.started_at
    while start < entry.finished_at:
        day = local_date(start, tz)
        end = min(entry.finished_at, _next_midnight(day, tz))
        yield day, end - start
        start = end


def day_totals(entries: Iterable[RanTask], tz: datetime.tzinfo | None = None) -> list[DayTotal]:
    """Totals per calendar day in `tz` (None: local time), oldest first. An attempt counts
    (tasks, outcome, CPU, bytes) on the day it ended; its container time on the days it ran."""
    tallies: dict[datetime.date, _Tally] = {}
    for entry in entries:
        tally = tallies.setdefault(local_date(entry.finished_at, tz), _Tally())
        tally.tasks += 1
        tally.completed += entry.outcome is Outcome.COMPLETED
        tally.failed += entry.outcome is Outcome.FAILED
        tally.cpu_seconds += entry.cpu_seconds or 0.0
        tally.bytes_in += entry.bytes_in
        tally.bytes_out += entry.bytes_out
        for day, seconds in _busy_by_day(entry, tz):
            tallies.setdefault(day, _Tally()).busy_seconds += seconds
    return [
        DayTotal(day=day, **dataclasses.asdict(tally)) for day, tally in sorted(tallies.items())
    ]


# --- rendering ------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """0.4s, 42s, 3m 12s, 1h 05m, 2d 3h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def ran_task_json(entry: RanTask) -> dict[str, Any]:
    return {**dataclasses.asdict(entry), "outcome": entry.outcome.value}


def day_total_json(total: DayTotal) -> dict[str, Any]:
    return {**dataclasses.asdict(total), "day": total.day.isoformat()}


def history_json(entries: Iterable[RanTask], tz: datetime.tzinfo | None = None) -> dict[str, Any]:
    """What `vcnode history --json` prints."""
    listed = list(entries)
    return {
        "tasks": [ran_task_json(entry) for entry in listed],
        "days": [day_total_json(total) for total in day_totals(listed, tz)],
    }
