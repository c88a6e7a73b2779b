"""What ran on a volunteer (`vcnode history`): each ended attempt is kept in the volunteer's
SQLite file, read back by the store and by the CLI without writing (daemon running or
stopped), totalled per local calendar day, and shown as a table or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest

from cli.history import add_parser
from daemon.errors import DataDirError
from daemon.store import PlainDatabase
from volunteer_node.history import (
    DayTotal,
    Outcome,
    RanTask,
    day_totals,
    human_duration,
    parse_since,
    read_history,
)
from volunteer_node.store import MIGRATIONS, VolunteerStore

HOUR = 3600.0
DAY = 86400.0
# Fixed offsets: the day totals must not depend on the machine's time zone.
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))
MANAGER_ID = "3fa2b1c9d8e7f6a5b4c3d2e1f0a9b8c7"


def ran(
    name: str,
    finished_at: float,
    *,
    ran_for: float | None = 60.0,
    outcome: Outcome = Outcome.COMPLETED,
    attempt: int = 1,
    **figures: Any,
) -> RanTask:
    entry = RanTask(
        task_id=f"sweep-1a2b3c4d.{name}",
        attempt=attempt,
        workflow_id="sweep-1a2b3c4d",
        manager_id=MANAGER_ID,
        user="alice",
        image="vcnode/python:3.11",
        outcome=outcome,
        error="" if outcome is Outcome.COMPLETED else f"{name} ended: {outcome.value}",
        exit_code=0 if outcome is Outcome.COMPLETED else None,
        received_at=finished_at - (ran_for or 0.0) - 5.0,
        started_at=None if ran_for is None else finished_at - ran_for,
        finished_at=finished_at,
        cpu_seconds=None if ran_for is None else ran_for / 2,
        peak_memory_mb=None if ran_for is None else 212.0,
        bytes_in=3 * 2**20,
        bytes_out=4096,
    )
    return dataclasses.replace(entry, **figures)


def db_path(data_dir: Path) -> Path:
    return data_dir / VolunteerStore.FILE_NAME


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# --- the store and the read-only reader -------------------------------------------------------


async def test_the_store_keeps_ended_attempts_and_both_readers_return_them_in_the_order_they_ended(
    tmp_path: Path,
) -> None:
    now = time.time()
    late = ran("late", now - 60, outcome=Outcome.FAILED, exit_code=3, cpu_seconds=1.25)
    early = ran("early", now - 2 * HOUR, ran_for=None, outcome=Outcome.CANCELLED)
    too_old = ran("old", now - 8 * DAY)
    store = VolunteerStore(tmp_path)
    await store.open()
    try:
        for entry in (late, too_old, early):
            await store.record_ran(entry)
        # Recorded again (the result was re-sent): replaced, not doubled.
        late = dataclasses.replace(late, bytes_out=99)
        await store.record_ran(late)
        since = now - DAY
        assert await store.history(since) == [early, late]
        # The daemon runs: the CLI reads the same file beside it.
        assert read_history(db_path(tmp_path), since) == [early, late]
    finally:
        await store.close()
    before = db_path(tmp_path).read_bytes()
    # The daemon stopped: still readable, and reading wrote nothing, not even a -wal or -shm
    # that the daemon, run by another user, could not write to.
    assert read_history(db_path(tmp_path), since) == [early, late]
    assert read_history(db_path(tmp_path), 0.0) == [too_old, early, late]
    assert db_path(tmp_path).read_bytes() == before
    assert names_in(tmp_path) == [VolunteerStore.FILE_NAME]


async def test_the_history_outlives_a_restart_of_the_volunteer(tmp_path: Path) -> None:
    entry = ran("kept", time.time())
    store = VolunteerStore(tmp_path)
    await store.open()
    await store.record_ran(entry)
    await store.close()
    reopened = VolunteerStore(tmp_path)
    await reopened.open()
    try:
        assert await reopened.history(0.0) == [entry]
    finally:
        await reopened.close()


async def test_an_older_volunteers_file_says_to_start_the_daemon_once_and_then_reads(
    tmp_path: Path,
) -> None:
    older = PlainDatabase(db_path(tmp_path), MIGRATIONS[:1])  # before volunteer/0002_history
    await older.open()
    await older.close()
    with pytest.raises(DataDirError, match=r"older volunteer.*start its daemon once"):
        read_history(db_path(tmp_path), 0.0)
    upgraded = VolunteerStore(tmp_path)
    await upgraded.open()
    await upgraded.close()
    assert read_history(db_path(tmp_path), 0.0) == []


def test_a_data_dir_where_no_volunteer_ran_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match=f"no volunteer has run in {tmp_path}") as raised:
        read_history(db_path(tmp_path), 0.0)
    assert not db_path(tmp_path).exists()  # reading made no file
    assert raised.value.exit_code == 2


# --- totals per day ---------------------------------------------------------------------------


def at(day: int, hour: int, minute: int = 0) -> float:
    """A moment of December 2026, at UTC+2."""
    return datetime.datetime(2026, 12, day, hour, minute, tzinfo=PLUS_TWO).timestamp()


def test_day_totals_count_a_task_on_the_day_it_ended_and_its_run_on_each_day_it_ran() -> None:
    across_midnight = ran("night", at(2, 0, 30), ran_for=HOUR, cpu_seconds=100.0)
    failed_morning = ran("morning", at(1, 10, 10), ran_for=600.0, outcome=Outcome.FAILED)
    never_started = ran("cancelled", at(2, 9), ran_for=None, outcome=Outcome.CANCELLED)
    totals = day_totals([across_midnight, failed_morning, never_started], PLUS_TWO)
    assert totals == [
        DayTotal(
            day=datetime.date(2026, 12, 1),
            tasks=1,
            completed=0,
            failed=1,
            busy_seconds=600.0 + 1800.0,  # the morning task, and the night one until midnight
            cpu_seconds=300.0,
            bytes_in=3 * 2**20,
            bytes_out=4096,
        ),
        DayTotal(
            day=datetime.date(2026, 12, 2),
            tasks=2,
            completed=1,
            failed=0,
            busy_seconds=1800.0,
            cpu_seconds=100.0,
            bytes_in=2 * 3 * 2**20,
            bytes_out=2 * 4096,
        ),
    ]


def test_day_totals_follow_the_time_zone_they_are_given() -> None:
    # 23:30 at UTC+2 on the 1st is 21:30 UTC: the 1st either way; 01:30 UTC+2 is the 1st in UTC.
    entry = ran("late", at(2, 1, 30), ran_for=60.0)
    assert [t.day for t in day_totals([entry], PLUS_TWO)] == [datetime.date(2026, 12, 2)]
    assert [t.day for t in day_totals([entry], datetime.UTC)] == [datetime.date(2026, 12, 1)]


def test_a_day_with_nothing_ended_is_not_listed() -> None:
    assert day_totals([], PLUS_TWO) == []


# --- --since and durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds_back"),
    [("7d", 7 * DAY), ("12h", 12 * HOUR), ("30m", 1800.0), ("90s", 90.0), (" 1.5h ", 5400.0)],
)
def test_since_takes_a_time_back_from_now(text: str, seconds_back: float) -> None:
    assert parse_since(text, now=1_800_000_000.0) == 1_800_000_000.0 - seconds_back


def test_since_takes_a_date_or_date_time_in_the_time_zone_given() -> None:
    assert parse_since("2026-12-01", tz=PLUS_TWO) == at(1, 0)
    assert parse_since("2026-12-01T08:15", tz=PLUS_TWO) == at(1, 8, 15)
    assert parse_since("2026-12-01T08:15+00:00", tz=PLUS_TWO) == at(1, 10, 15)


@pytest.mark.parametrize("text", ["", "7", "7w", "-3d", "yesterday", "2026-13-01"])
def test_since_says_what_it_expects_when_it_cannot_read_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=f"such as 30m, 12h or 7d.*not {text!r}"):
        parse_since(text)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.42, "0.4s"), (42.0, "42s"), (192.0, "3m 12s"), (3900.0, "1h 05m"), (183600.0, "2d 3h")],
)
def test_durations_read_as_people_say_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


# --- the command --------------------------------------------------------------------------------


def history_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="node")
    add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(["history", *argv])
    code: int = args.handler(args)
    return code


async def record(data_dir: Path, *entries: RanTask) -> None:
    store = VolunteerStore(data_dir)
    await store.open()
    try:
        for entry in entries:
            await store.record_ran(entry)
    finally:
        await store.close()


async def test_history_shows_each_task_with_its_figures_then_totals_per_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    done = ran("render", now - HOUR, ran_for=192.0, cpu_seconds=180.25, peak_memory_mb=211.6)
    failed = ran("fit", now - 60, outcome=Outcome.FAILED, exit_code=3, attempt=2)
    handed_back = ran("idle", now - 30, ran_for=None, outcome=Outcome.HANDED_BACK)
    await record(tmp_path, done, failed, handed_back, ran("old", now - 8 * DAY))

    assert history_command("--data-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("3 tasks ended on this volunteer since")
    rows = {line.split()[3]: line for line in lines if line.startswith("20") and "#" in line}
    assert "old" not in rows  # older than the default 7 days
    render = rows["render"]
    for shown in (
        "sweep-1a2b3c4d", "render #1", f"alice@{MANAGER_ID[:8]}", "vcnode/python:3.11",
        "3m 12s", "180.2", "212", "3.0 MiB", "4.0 KiB", "completed (exit 0)",
    ):  # fmt: skip
        assert shown in render, (shown, render)
    assert "fit #2" in rows["fit"]
    assert rows["fit"].endswith("failed (exit 3)")
    assert rows["idle"].endswith("handed back")
    assert "sweep-1a2b3c4d fit #2: fit ended: failed" in lines
    day_header = lines.index(next(line for line in lines if line.startswith("DAY")))
    assert lines[day_header - 1].startswith("Per day (local time")
    assert lines[day_header].split() == [
        "DAY", "TASKS", "COMPLETED", "FAILED", "BUSY", "CPU", "S", "IN", "OUT",
    ]  # fmt: skip
    assert lines[day_header + 1 :], "no day rows"


async def test_history_json_is_one_object_of_tasks_and_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    done = ran("render", now - 2 * HOUR)
    failed = ran("fit", now - HOUR, outcome=Outcome.FAILED, exit_code=3)
    await record(tmp_path, done, failed)

    assert history_command("--json", "--since", "1d", "--data-dir", str(tmp_path)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"tasks", "days"}
    assert [task["task_id"] for task in shown["tasks"]] == [done.task_id, failed.task_id]
    assert shown["tasks"][1] == {**dataclasses.asdict(failed), "outcome": "failed"}
    assert sum(day["tasks"] for day in shown["days"]) == 2
    assert sum(day["failed"] for day in shown["days"]) == 1
    assert all(datetime.date.fromisoformat(day["day"]) for day in shown["days"])


async def test_history_reads_the_default_data_dir_and_says_plainly_when_nothing_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "vcnode").mkdir()
    await record(tmp_path / "vcnode", ran("old", time.time() - 30 * DAY))

    assert history_command() == 0
    assert capsys.readouterr().out.startswith("No task ended on this volunteer since")
    assert history_command("--json") == 0
    assert json.loads(capsys.readouterr().out) == {"tasks": [], "days": []}


def test_history_of_a_data_dir_where_no_volunteer_ran_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataDirError, match=f"no volunteer has run in {missing}"):
        history_command("--data-dir", str(missing))


def test_a_since_the_command_cannot_read_exits_2_saying_what_it_expects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        history_command("--since", "last week", "--data-dir", str(tmp_path))
    assert exited.value.code == 2
    assert "such as 30m, 12h or 7d" in capsys.readouterr().err
