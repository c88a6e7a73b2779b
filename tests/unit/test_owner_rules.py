"""The owner's rules (volunteer_node/rules.py), pure: parsing the [schedule] settings, windows
that wrap midnight, the days they start on, daylight saving days, each rule's reason, and the
other-load rule's hysteresis."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.config import render, resolve
from daemon.errors import ConfigError
from volunteer_node.rules import (
    ALL_DAY,
    BATTERY_HOLD,
    BATTERY_REASON,
    IDLE_HOLD,
    LOAD_HOLD,
    RULE_HOLDS,
    SCHEDULE_HOLD,
    Facts,
    Hours,
    OwnerRules,
    day_names,
    days_text,
    evaluate,
    next_change,
    next_opening,
    parse_days,
    parse_hours,
    parse_load_percent,
    schedule_open,
)

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS_ONLY = frozenset(range(5))


def paris(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS, fold=fold)


def rules(days: str = "mon-sun", hours: str = "00:00-24:00", **others: object) -> OwnerRules:
    return OwnerRules(days=parse_days(days), hours=parse_hours(hours), **others)  # type: ignore[arg-type]


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("mon,wed,fri", {0, 2, 4}),
        (["sat", "sun"], {5, 6}),
        (["mon-wed", "fri"], {0, 1, 2, 4}),
        ("fri-mon", {4, 5, 6, 0}),
        ("Monday, TUE", {0, 1}),
        ("sun-sun", {6}),
    ],
)
def test_days_are_names_lists_and_ranges_that_may_wrap_the_week(
    value: object, days: set[int]
) -> None:
    assert parse_days(value) == frozenset(days)


@pytest.mark.parametrize("value", ["", " , ", "mon-xyz", "weekdays", 3, ["mon", 2]])
def test_days_that_are_not_days_are_refused_with_what_is_expected(value: object) -> None:
    with pytest.raises(ValueError, match="day"):
        parse_days(value)


def test_days_read_back_as_they_are_written() -> None:
    assert days_text(parse_days("mon-fri")) == "mon-fri"
    assert days_text(parse_days("fri,mon,wed")) == "mon,wed,fri"
    assert days_text(parse_days("sat-mon")) == "sat-mon"
    assert days_text(parse_days("tue-sun,mon")) == "mon-sun"
    assert day_names(parse_days("sun,mon")) == ["mon", "sun"]


def test_hours_are_a_window_that_may_run_past_midnight() -> None:
    evening = parse_hours("18:00-08:00")
    assert (evening.start, evening.end, evening.length) == (18 * 60, 8 * 60, 14 * 60)
    assert str(evening) == "18:00-08:00"
    assert parse_hours("9:30-17:00") == Hours(9 * 60 + 30, 17 * 60)
    assert parse_hours("00:00-24:00") == ALL_DAY
    assert ALL_DAY.all_day
    assert parse_hours("22:00-00:00").length == 120


@pytest.mark.parametrize(
    "value", ["8-17", "25:00-01:00", "08:60-09:00", "24:00-08:00", "08:00-24:30", "08:00-08:00"]
)
def test_hours_that_are_no_window_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"HH:MM|time of day|empty"):
        parse_hours(value)


def test_the_load_threshold_is_a_percentage_below_a_hundred() -> None:
    assert parse_load_percent("25") == 25.0
    assert parse_load_percent("12.5%") == 12.5
    for wrong in ("100", "-1", "lots", True):
        with pytest.raises(ValueError, match="percentage"):
            parse_load_percent(wrong)


def test_the_default_rules_have_no_schedule() -> None:
    default = OwnerRules()
    assert not default.has_schedule
    assert schedule_open(default, paris(2024, 5, 4, 3, 0))
    assert next_change(default, paris(2024, 5, 4, 3, 0)) is None
    assert evaluate(default, paris(2024, 5, 4, 3, 0), Facts()).holds == ()


# --- windows and days ---------------------------------------------------------------------

# 2024-05-03 is a friday.
FRIDAY_NIGHTS = rules("fri", "22:00-06:00")


@pytest.mark.parametrize(
    ("when", "is_open"),
    [
        ((2024, 5, 3, 21, 59), False),  # friday, before its window
        ((2024, 5, 3, 22, 0), True),  # friday's window opens
        ((2024, 5, 4, 5, 59), True),  # saturday morning: still friday's window
        ((2024, 5, 4, 6, 0), False),  # it closed
        ((2024, 5, 4, 23, 0), False),  # saturday's own night: not a day of the schedule
        ((2024, 5, 3, 5, 0), False),  # friday morning: thursday's window, not one of them
        ((2024, 5, 2, 23, 0), False),  # thursday night
    ],
)
def test_a_day_means_the_window_that_starts_that_day(
    when: tuple[int, int, int, int, int], is_open: bool
) -> None:
    assert schedule_open(FRIDAY_NIGHTS, paris(*when)) is is_open


def test_outside_its_hours_it_holds_until_the_next_opening() -> None:
    evenings = rules("mon-fri", "18:00-08:00")
    saturday_noon = paris(2024, 5, 4, 12, 0)
    verdict = evaluate(evenings, saturday_noon, Facts())
    [hold] = verdict.holds
    assert hold.name == SCHEDULE_HOLD
    assert hold.reason == "outside its hours (mon-fri 18:00-08:00) until mon 18:00"
    assert hold.until == paris(2024, 5, 6, 18, 0).timestamp()
    assert hold.since == saturday_noon.timestamp()
    # Friday evening's window runs into saturday morning.
    assert evaluate(evenings, paris(2024, 5, 4, 7, 59), Facts()).holds == ()
    tuesday_noon = evaluate(evenings, paris(2024, 5, 7, 12, 0), Facts())
    assert tuesday_noon.holds[0].reason.endswith("until tue 18:00")


def test_days_without_hours_hold_until_the_next_such_day_begins() -> None:
    weekend = rules("sat-sun")
    [hold] = evaluate(weekend, paris(2024, 5, 3, 23, 59), Facts()).holds
    assert hold.reason == "outside its hours (sat-sun) until sat 00:00"
    assert hold.until == paris(2024, 5, 4, 0, 0).timestamp()
    assert schedule_open(weekend, paris(2024, 5, 5, 23, 59))
    assert next_change(weekend, paris(2024, 5, 4, 10, 0)) == paris(2024, 5, 5, 0, 0)
    assert next_change(weekend, paris(2024, 5, 5, 10, 0)) == paris(2024, 5, 6, 0, 0)


def test_hours_every_day_wrap_midnight() -> None:
    nights = rules(hours="23:00-01:00")
    assert schedule_open(nights, paris(2024, 5, 4, 0, 30))
    assert not schedule_open(nights, paris(2024, 5, 4, 1, 0))
    assert next_opening(nights, paris(2024, 5, 4, 1, 0)) == paris(2024, 5, 4, 23, 0)
    assert next_change(nights, paris(2024, 5, 4, 0, 30)) == paris(2024, 5, 4, 1, 0)
    [hold] = evaluate(nights, paris(2024, 5, 4, 12, 0), Facts()).holds
    assert hold.reason == "outside its hours (23:00-01:00) until sat 23:00"


def test_a_fixed_offset_zone_works_too() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = datetime(2024, 5, 4, 12, 0, tzinfo=plus_two)
    opening = next_opening(rules(hours="18:00-19:00"), now)
    assert opening == datetime(2024, 5, 4, 18, 0, tzinfo=plus_two)


def test_now_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        evaluate(rules(hours="18:00-19:00"), datetime(2024, 5, 4, 12, 0), Facts())


# --- daylight saving time (Europe/Paris: 2024-03-31 02:00 -> 03:00, 2024-10-27 03:00 -> 02:00)


def test_a_window_opening_in_the_skipped_hour_opens_as_the_clock_jumps() -> None:
    early = rules(hours="02:30-05:00")
    before = paris(2024, 3, 31, 1, 59)
    opening = next_opening(early, before)
    assert opening is not None
    assert opening.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    assert f"{opening:%H:%M}" == "03:00"
    [hold] = evaluate(early, before, Facts()).holds
    assert hold.reason.endswith("until sun 03:00")
    assert hold.until == datetime(2024, 3, 31, 1, 0, tzinfo=UTC).timestamp()
    assert schedule_open(early, paris(2024, 3, 31, 3, 0))
    assert next_change(early, paris(2024, 3, 31, 3, 10)) == paris(2024, 3, 31, 5, 0)
    # Other days are as usual.
    assert next_opening(early, paris(2024, 3, 31, 6, 0)) == paris(2024, 4, 1, 2, 30)


def test_a_window_ending_in_the_repeated_hour_ends_the_second_time() -> None:
    late = rules(hours="22:00-02:30")
    first_pass = paris(2024, 10, 27, 2, 45, fold=0)  # 00:45 UTC, summer time
    assert schedule_open(late, first_pass)
    end = next_change(late, first_pass)
    assert end is not None
    assert end.astimezone(UTC) == datetime(2024, 10, 27, 1, 30, tzinfo=UTC)
    assert schedule_open(late, paris(2024, 10, 27, 2, 15, fold=1))  # the second 02:15
    assert not schedule_open(late, paris(2024, 10, 27, 2, 30, fold=1))


def test_a_window_opening_in_the_repeated_hour_opens_the_first_time() -> None:
    repeated = rules(hours="02:15-04:00")
    opening = next_opening(repeated, paris(2024, 10, 27, 1, 0))
    assert opening is not None
    assert opening.astimezone(UTC) == datetime(2024, 10, 27, 0, 15, tzinfo=UTC)


def test_a_whole_day_follows_the_clock_on_a_short_day() -> None:
    sundays = rules("sun")
    assert schedule_open(sundays, paris(2024, 3, 31, 23, 30))
    end = next_change(sundays, paris(2024, 3, 31, 12, 0))
    assert end == paris(2024, 4, 1, 0, 0)
    start = next_opening(sundays, paris(2024, 3, 30, 12, 0))
    assert start is not None
    assert end.timestamp() - start.timestamp() == 23 * 3600


# --- idle, load, battery ------------------------------------------------------------------

NOON = paris(2024, 5, 4, 12, 0)


def test_in_use_holds_until_idle_long_enough() -> None:
    idle = rules(idle_minutes=10)
    [hold] = evaluate(idle, NOON, Facts(idle_seconds=125)).holds
    assert (hold.name, hold.until) == (IDLE_HOLD, math.inf)
    assert hold.reason == "in use: input 2 min ago, runs after 10 min idle"
    [hold] = evaluate(idle, NOON, Facts(idle_seconds=5)).holds
    assert hold.reason == "in use: input just now, runs after 10 min idle"
    assert evaluate(idle, NOON, Facts(idle_seconds=600), [IDLE_HOLD]).lifts == (IDLE_HOLD,)
    # Nobody logged in, or no source that tells: idle.
    assert evaluate(idle, NOON, Facts(idle_seconds=math.inf), [IDLE_HOLD]).lifts == (IDLE_HOLD,)
    assert evaluate(idle, NOON, Facts(idle_seconds=None), [IDLE_HOLD]).lifts == (IDLE_HOLD,)


def test_other_load_stops_above_the_threshold_and_resumes_only_well_below_it() -> None:
    load = rules(max_other_load=25.0)
    [hold] = evaluate(load, NOON, Facts(other_load=63.2)).holds
    assert (hold.name, hold.until) == (LOAD_HOLD, math.inf)
    assert hold.reason == (
        "busy with its owner's work: other processes use 63.2% of the CPUs (runs below 20%)"
    )
    # Between the resume level and the threshold: stays as it is, whichever that is.
    assert [h.name for h in evaluate(load, NOON, Facts(other_load=22.0), [LOAD_HOLD]).holds] == [
        LOAD_HOLD
    ]
    assert evaluate(load, NOON, Facts(other_load=22.0)).holds == ()
    assert evaluate(load, NOON, Facts(other_load=25.0)).holds == ()
    below = evaluate(load, NOON, Facts(other_load=19.9), [LOAD_HOLD])
    assert (below.holds, below.lifts) == ((), (LOAD_HOLD,))
    # Not measured yet: neither held nor lifted.
    unknown = evaluate(load, NOON, Facts(other_load=None), [LOAD_HOLD])
    assert (unknown.holds, unknown.lifts) == ((), ())


def test_on_battery_it_holds_unless_its_owner_allows_it() -> None:
    [hold] = evaluate(OwnerRules(), NOON, Facts(on_battery=True)).holds
    assert (hold.name, hold.reason, hold.until) == (BATTERY_HOLD, BATTERY_REASON, math.inf)
    assert hold.reason == "on battery: its owner runs tasks on mains power only"
    assert evaluate(OwnerRules(), NOON, Facts(on_battery=False), [BATTERY_HOLD]).lifts == (
        BATTERY_HOLD,
    )
    # No battery (or no way to tell): never holds.
    assert evaluate(OwnerRules(), NOON, Facts(on_battery=None)).holds == ()
    allowed = OwnerRules(on_battery=True)
    verdict = evaluate(allowed, NOON, Facts(on_battery=True), [BATTERY_HOLD])
    assert (verdict.holds, verdict.lifts) == ((), (BATTERY_HOLD,))


def test_rules_turned_off_lift_their_holds_and_leave_other_holds_alone() -> None:
    facts = Facts(on_battery=True, idle_seconds=0, other_load=90)
    everything = rules("mon", "18:00-19:00", idle_minutes=5, max_other_load=10)
    assert {h.name for h in evaluate(everything, NOON, facts).holds} == set(RULE_HOLDS)
    verdict = evaluate(OwnerRules(on_battery=True), NOON, facts, [*RULE_HOLDS, "owner"])
    assert verdict.holds == ()
    assert verdict.lifts == RULE_HOLDS


# --- the [schedule] settings --------------------------------------------------------------


def test_the_schedule_comes_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text(
        'roles = ["volunteer"]\n\n[schedule]\ndays = ["mon-wed", "fri"]\n'
        'hours = "18:00-08:00"\nidle_minutes = 10\nmax_other_load = 50\n'
    )
    config, sources = resolve(
        {"schedule.max_other_load": "25", "schedule.days": None},
        {"VCNODE_SCHEDULE_ON_BATTERY": "yes"},
        path,
    )
    assert config.schedule == OwnerRules(
        days=frozenset({0, 1, 2, 4}),
        hours=Hours(18 * 60, 8 * 60),
        idle_minutes=10,
        max_other_load=25.0,
        on_battery=True,
    )
    assert sources["schedule.days"] == f"{path} (schedule.days)"
    assert sources["schedule.max_other_load"] == "flag --schedule-max-other-load"
    assert sources["schedule.on_battery"] == "environment variable VCNODE_SCHEDULE_ON_BATTERY"
    assert config.schedule.schedule_text() == "mon-wed,fri 18:00-08:00"


def test_no_schedule_given_is_the_default_rules() -> None:
    config, _ = resolve({"roles": "volunteer"}, {})
    assert config.schedule == OwnerRules()
    assert not config.schedule.has_schedule


def test_print_config_shows_the_schedule_and_reads_back_the_same(tmp_path: Path) -> None:
    config, sources = resolve(
        {"roles": "volunteer", "schedule.days": "mon-fri", "schedule.hours": "22:00-06:00"},
        {"VCNODE_SCHEDULE_IDLE_MINUTES": "5"},
    )
    text = render(config, sources)
    schedule = text[text.index("[schedule]") :]
    assert schedule.splitlines() == [
        "[schedule]",
        'days = ["mon", "tue", "wed", "thu", "fri"]  # flag --schedule-days',
        'hours = "22:00-06:00"  # flag --schedule-hours',
        "idle_minutes = 5  # environment variable VCNODE_SCHEDULE_IDLE_MINUTES",
        "max_other_load = 0.0  # default",
        "on_battery = false  # default",
    ]
    path = tmp_path / "printed.toml"
    path.write_text(text.replace('token = "(set: used once to join)"', ""))
    again, _ = resolve({}, {}, path)
    assert again.schedule == config.schedule


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"schedule.hours": "8-17"}, {}, "flag --schedule-hours: expected HH:MM-HH:MM"),
        ({"schedule.days": "mon-fry"}, {}, "flag --schedule-days: unknown day 'fry'"),
        ({}, {"VCNODE_SCHEDULE_MAX_OTHER_LOAD": "120"}, "VCNODE_SCHEDULE_MAX_OTHER_LOAD: "),
        ({"schedule.idle_minutes": "-3"}, {}, "flag --schedule-idle-minutes: must be 0 or more"),
    ],
)
def test_a_wrong_schedule_says_where_it_came_from(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve({"roles": "volunteer", **flags}, environ)


def test_an_unknown_schedule_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text('roles = ["volunteer"]\n[schedule]\nweekdays = ["mon"]\n')
    with pytest.raises(ConfigError, match=r"unknown key 'schedule.weekdays'; known: days, hours"):
        resolve({}, {}, path)
