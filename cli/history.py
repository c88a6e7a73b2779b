"""`vcnode history`: what ran on this machine as a volunteer, read from its data dir (no daemon
needs to run), with totals per day."""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from pathlib import Path

from cli import views
from cli.durations import parse_duration
from cli.local_volunteer import volunteer_data_dir
from daemon.config import default_data_dir
from volunteer_node.history import (
    DayTotal,
    RanTask,
    day_totals,
    history_json,
    human_duration,
    parse_since,
    read_history,
)
from volunteer_node.store import VolunteerStore

DEFAULT_SINCE = "7d"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "history",
        help="what ran on this volunteer: each task, whose, how long, what it cost; per day",
        description="Every task attempt that ended on this volunteer: its workflow, the user "
        "and manager it came from, image, start, run time, CPU seconds, peak memory, bytes in "
        "and out, and how it ended; then totals per day (local time). Read from the data dir: "
        "works whether the daemon runs or not.",
    )
    parser.add_argument(
        "--since",
        type=_since,
        default=DEFAULT_SINCE,
        metavar="WHEN",
        help=f"tasks that ended since: 30m, 12h, 7d back, or a date such as 2026-12-01 "
        f"(default {DEFAULT_SINCE})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the volunteer's data dir (default {default_data_dir()})",
    )
    parser.set_defaults(handler=show_history)


def _since(text: str) -> float:
    try:
        return time.time() - parse_duration(text)  # 7d, 12h, 1h30m: as long ago
    except argparse.ArgumentTypeError:
        pass
    try:
        return parse_since(text)
    except ValueError as error:
        # argparse shows only an ArgumentTypeError's own words (and exits 2).
        raise argparse.ArgumentTypeError(str(error)) from None


def show_history(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or volunteer_data_dir(VolunteerStore.FILE_NAME)
    entries = read_history(data_dir / VolunteerStore.FILE_NAME, args.since)
    if args.json:
        views.print_json(history_json(entries))
        return 0
    since = _when(args.since)
    if not entries:
        print(f"No task ended on this volunteer since {since} (data dir {data_dir}).")
        return 0
    count = f"{len(entries)} task{'s' if len(entries) != 1 else ''}"
    print(f"{count} ended on this volunteer since {since} (data dir {data_dir}):")
    print()
    print(tasks_table(entries))
    failures = errors_text(entries)
    if failures:
        print()
        print(failures)
    print()
    print(days_table(day_totals(entries)))
    return 0


def _when(timestamp: float, tz: datetime.tzinfo | None = None) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M")


def _task_name(entry: RanTask) -> str:
    """Task ids are WORKFLOW.NAME: the workflow has a column of its own."""
    name = entry.task_id.removeprefix(f"{entry.workflow_id}.")
    return f"{name} #{entry.attempt}"


def _came_from(entry: RanTask) -> str:
    manager = entry.manager_id[:8] or "?"
    return f"{entry.user}@{manager}" if entry.user else manager


def _ended(entry: RanTask) -> str:
    words = entry.outcome.value.replace("_", " ")
    return f"{words} (exit {entry.exit_code})" if entry.exit_code is not None else words


def tasks_table(entries: Sequence[RanTask], tz: datetime.tzinfo | None = None) -> str:
    """One line per attempt, in the order they ended."""
    rows = []
    for entry in entries:
        run = entry.run_seconds
        rows.append(
            [
                _when(entry.started_at or entry.received_at, tz),
                entry.workflow_id,
                _task_name(entry),
                _came_from(entry),
                entry.image,
                "-" if run is None else human_duration(run),
                "-" if entry.cpu_seconds is None else f"{entry.cpu_seconds:.1f}",
                "-" if entry.peak_memory_mb is None else f"{entry.peak_memory_mb:.0f}",
                views.size(entry.bytes_in),
                views.size(entry.bytes_out),
                _ended(entry),
            ]
        )
    headers = (
        "STARTED", "WORKFLOW", "TASK", "FROM", "IMAGE", "RAN", "CPU S", "PEAK MIB", "IN", "OUT",
        "ENDED",
    )  # fmt: skip
    return views.table(headers, rows)


def errors_text(entries: Sequence[RanTask]) -> str:
    """Why the attempts that did not complete ended so, one line each."""
    return "\n".join(
        f"{entry.workflow_id} {_task_name(entry)}: {entry.error}"
        for entry in entries
        if entry.error
    )


def days_table(totals: Sequence[DayTotal]) -> str:
    headers = ("DAY", "TASKS", "COMPLETED", "FAILED", "BUSY", "CPU S", "IN", "OUT")
    rows = [
        [
            total.day.isoformat(),
            str(total.tasks),
            str(total.completed),
            str(total.failed),
            human_duration(total.busy_seconds),
            f"{total.cpu_seconds:.1f}",
            views.size(total.bytes_in),
            views.size(total.bytes_out),
        ]
        for total in totals
    ]
    return "Per day (local time; BUSY sums the time each task's container ran)\n" + views.table(
        headers, rows
    )
