"""The owner's rules' shell (volunteer_node/rule_watch.py) against the volunteer's real
lifecycle: it holds and lifts as the machine changes (the battery through a monkeypatched
psutil.sensors_battery, idle and load through fake probes), applies new rules at once, costs
nothing with no rule set, asks the idle source at most once a minute, and wakes for the
schedule's boundary by itself; a reload cut short, or one crossing start or stop, leaves the
rules watched by one poller, and none once stopped; plus its probes' pure parts (logind's
answer, CPU shares) and, on a real Docker engine, the task containers the load rule counts
as the volunteer's own."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import stat
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import psutil
import pytest

from daemon.models import OwnerLimits, Resources
from daemon.runtime.docker import OWNER_LABEL
from tests.unit.test_worker_phases import GatedRuntime, NoTransfers, Said, no_image, task
from volunteer_node import rule_watch
from volunteer_node.lifecycle import (
    OWNER_HOLD,
    AttemptView,
    Hold,
    LifecycleView,
    VolunteerLifecycle,
)
from volunteer_node.rule_watch import (
    TREE,
    CpuMeter,
    CpuSample,
    LogindIdle,
    Probes,
    RuleWatch,
    docker_task_containers,
    local_zone,
    machine_idle_seconds,
    other_share,
    parse_sessions,
    session_idle_seconds,
)
from volunteer_node.rules import (
    BATTERY_HOLD,
    BATTERY_REASON,
    IDLE_HOLD,
    LOAD_HOLD,
    SCHEDULE_HOLD,
    OwnerRules,
    parse_days,
    parse_hours,
)
from volunteer_node.store import VolunteerStore
from volunteer_node.worker import TaskWorker, WorkerConfig

WAIT_SECONDS = 5.0
PARIS = ZoneInfo("Europe/Paris")
# 2024-05-04 is a saturday.
SATURDAY_NOON = datetime(2024, 5, 4, 12, 0, tzinfo=PARIS).timestamp()


class Worker:
    """The worker as the watch sees it, over the real lifecycle; what it was asked, in order."""

    def __init__(self) -> None:
        self.machine = VolunteerLifecycle(OwnerLimits())
        self.asked: list[tuple[str, str]] = []

    async def hold(self, hold: Hold) -> None:
        self.asked.append(("hold", hold.name))
        self.machine.hold(hold)

    async def lift(self, name: str) -> None:
        self.asked.append(("lift", name))
        self.machine.lift(name)

    def view(self) -> LifecycleView:
        return self.machine.view()

    def holds(self) -> dict[str, Hold]:
        return {hold.name: hold for hold in self.machine.view().holds}


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def answers(*values: float | None) -> Callable[..., Awaitable[float | None]]:
    """A probe that gives `values` in turn, then the last for ever."""
    queue = deque(values)

    async def probe(*_: object) -> float | None:
        return queue.popleft() if len(queue) > 1 else queue[0]

    return probe


def fixed_zone() -> ZoneInfo:
    return PARIS


def no_battery() -> None:
    return None


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rule_watch, "CHECK_SECONDS", 0.02)


class Battery:
    """psutil.sensors_battery as a laptop's: plugged in or not, as the test says."""

    def __init__(self, plugged: bool | None) -> None:
        self.plugged = plugged
        self.looks = 0

    def __call__(self) -> SimpleNamespace:
        self.looks += 1
        return SimpleNamespace(percent=60.0, secsleft=3600, power_plugged=self.plugged)


async def test_no_rule_set_costs_no_task_and_no_timer() -> None:
    worker = Worker()
    looked: list[str] = []

    def battery() -> bool | None:
        looked.append("battery")
        return None

    for rules in (OwnerRules(on_battery=True), OwnerRules()):
        watch = RuleWatch(
            worker,
            rules,
            probes=Probes(battery=battery, idle_seconds=answers(0.0), zone=fixed_zone),
        )
        await watch.start()
        assert not watch.polling
        assert not watch.timed
        await watch.stop()
    # Battery allowed: not even looked for; mains power only: looked for once, none there.
    assert looked == ["battery"]
    assert worker.asked == []


async def test_on_battery_it_holds_and_on_mains_it_lifts(
    monkeypatch: pytest.MonkeyPatch, quick: None
) -> None:
    battery = Battery(plugged=False)
    monkeypatch.setattr(psutil, "sensors_battery", battery)
    worker = Worker()
    watch = RuleWatch(worker, OwnerRules())
    await watch.start()
    try:
        assert worker.holds()[BATTERY_HOLD].reason == BATTERY_REASON
        assert worker.view().holds[0].until == math.inf
        assert watch.polling
        looks = battery.looks
        await eventually(lambda: battery.looks >= looks + 3, "a few more looks")
        assert worker.asked == [("hold", BATTERY_HOLD)], "held once, not again at each look"
        battery.plugged = True
        await eventually(lambda: BATTERY_HOLD not in worker.holds(), "the hold to be lifted")
        assert worker.asked[-1] == ("lift", BATTERY_HOLD)
        # A battery that cannot tell its plug state never holds.
        battery.plugged = None
        looks = battery.looks
        await eventually(lambda: battery.looks >= looks + 2, "more looks")
        assert BATTERY_HOLD not in worker.holds()
    finally:
        await watch.stop()


async def test_in_use_it_holds_until_idle_long_enough(
    monkeypatch: pytest.MonkeyPatch, quick: None
) -> None:
    monkeypatch.setattr(rule_watch, "IDLE_CHECK_SECONDS", 0.0)
    worker = Worker()
    probes = Probes(battery=no_battery, idle_seconds=answers(125.0, 300.0, 601.0), zone=fixed_zone)
    watch = RuleWatch(worker, OwnerRules(idle_minutes=10), probes=probes)
    await watch.start()
    try:
        held = worker.holds()[IDLE_HOLD]
        assert held.reason == "in use: input 2 min ago, runs after 10 min idle"
        await eventually(lambda: IDLE_HOLD not in worker.holds(), "idle long enough")
        # The reason said the new figure once it changed, and the hold kept its start.
        assert worker.asked == [("hold", IDLE_HOLD), ("hold", IDLE_HOLD), ("lift", IDLE_HOLD)]
    finally:
        await watch.stop()


async def test_the_idle_source_is_asked_at_most_once_a_minute(quick: None) -> None:
    asked: list[float] = []

    async def idle() -> float:
        asked.append(time.monotonic())
        return 0.0

    load_looks: list[bool] = []

    async def load(running: bool) -> float:
        load_looks.append(running)
        return 1.0

    worker = Worker()
    probes = Probes(battery=no_battery, idle_seconds=idle, other_load=load, zone=fixed_zone)
    watch = RuleWatch(worker, OwnerRules(idle_minutes=5, max_other_load=50), probes=probes)
    await watch.start()
    try:
        await eventually(lambda: len(load_looks) >= 5, "several checks")
        assert len(asked) == 1
        assert worker.holds()[IDLE_HOLD].reason == "in use: input just now, runs after 5 min idle"
    finally:
        await watch.stop()


async def test_other_load_holds_above_the_threshold_and_lifts_well_below(quick: None) -> None:
    worker = Worker()
    loads = answers(None, 50.0, 22.0, 22.0, 15.0)
    probes = Probes(battery=no_battery, other_load=loads, zone=fixed_zone)
    watch = RuleWatch(worker, OwnerRules(max_other_load=25), probes=probes)
    await watch.start()
    try:
        assert worker.holds() == {}, "no figure yet at start"
        await eventually(lambda: LOAD_HOLD in worker.holds(), "the load hold")
        assert worker.holds()[LOAD_HOLD].reason == (
            "busy with its owner's work: other processes use 50% of the CPUs (runs below 20%)"
        )
        await eventually(lambda: LOAD_HOLD not in worker.holds(), "the load to drop")
        # Held at 50%, still at 22% (above 20%), lifted at 15%.
        assert worker.asked == [("hold", LOAD_HOLD), ("hold", LOAD_HOLD), ("lift", LOAD_HOLD)]
    finally:
        await watch.stop()


def offset_clock(start: float) -> Callable[[], float]:
    """A wall clock that shows `start` now and runs at the real pace from there."""
    began = time.time()
    return lambda: start + (time.time() - began)


async def test_outside_its_hours_it_holds_and_the_timer_lifts_at_the_opening() -> None:
    opening = datetime(2024, 5, 4, 18, 0, tzinfo=PARIS).timestamp()
    worker = Worker()
    watch = RuleWatch(
        worker,
        OwnerRules(hours=parse_hours("18:00-08:00")),
        probes=Probes(battery=no_battery, zone=fixed_zone),
        clock=offset_clock(opening - 0.3),
    )
    await watch.start()
    try:
        held = worker.holds()[SCHEDULE_HOLD]
        assert held.reason == "outside its hours (18:00-08:00) until sat 18:00"
        assert held.until == opening
        assert watch.timed
        assert not watch.polling, "a schedule alone is not polled"
        await eventually(lambda: SCHEDULE_HOLD not in worker.holds(), "the window to open")
        assert watch.timed, "on to the window's end"
    finally:
        await watch.stop()
    assert not watch.timed


async def test_a_long_wait_wakes_every_minute_at_most() -> None:
    worker = Worker()
    watch = RuleWatch(
        worker,
        OwnerRules(days=parse_days("mon")),
        probes=Probes(battery=no_battery, zone=fixed_zone),
        clock=lambda: SATURDAY_NOON,
    )
    await watch.start()
    try:
        assert worker.holds()[SCHEDULE_HOLD].reason == "outside its hours (mon) until mon 00:00"
        assert watch._timer is not None
        loop = asyncio.get_running_loop()
        assert watch._timer.when() - loop.time() <= rule_watch.WALL_CLOCK_CHECK_SECONDS
    finally:
        await watch.stop()


async def test_reconfigure_applies_new_rules_at_once_and_leaves_the_owners_pause() -> None:
    worker = Worker()
    worker.machine.hold(Hold(OWNER_HOLD, "paused by owner", since=SATURDAY_NOON))
    probes = Probes(battery=no_battery, zone=fixed_zone)
    weekdays = OwnerRules(days=parse_days("mon-fri"))
    watch = RuleWatch(worker, weekdays, probes=probes, clock=lambda: SATURDAY_NOON)
    await watch.start()
    try:
        assert set(worker.holds()) == {OWNER_HOLD, SCHEDULE_HOLD}
        await watch.reconfigure(OwnerRules(days=parse_days("sat-sun")))
        assert set(worker.holds()) == {OWNER_HOLD}
        assert watch.rules.days == frozenset({5, 6})
        await watch.reconfigure(OwnerRules(on_battery=True))
        assert not watch.timed
        assert not watch.polling
        await watch.reconfigure(weekdays)
        assert worker.holds()[SCHEDULE_HOLD].reason.startswith("outside its hours (mon-fri)")
        await watch.reconfigure(OwnerRules(on_battery=True))
        assert set(worker.holds()) == {OWNER_HOLD}
    finally:
        await watch.stop()


async def test_stop_ends_its_checks(quick: None) -> None:
    looks: list[bool] = []

    async def load(running: bool) -> float:
        looks.append(running)
        return 90.0

    watch = RuleWatch(
        Worker(), OwnerRules(max_other_load=25), probes=Probes(battery=no_battery, other_load=load)
    )
    await watch.start()
    await eventually(lambda: len(looks) >= 2, "checks")
    await watch.stop()
    assert not watch.polling
    count = len(looks)
    await asyncio.sleep(0.1)  # ten check intervals: none may come
    assert len(looks) == count


def pollers() -> list[asyncio.Task[object]]:
    """The watches' pollers running in this loop."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == "_poll_forever"
    ]


class SlowIdle:
    """An idle source that answers `seconds` only once let (loginctl taking its time)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def __call__(self) -> float | None:
        self.asked.set()
        await self.answer.wait()
        return self.seconds

    def probes(self) -> Probes:
        return Probes(battery=no_battery, idle_seconds=self, other_load=answers(None), zone=utc)


def utc() -> timezone:
    return UTC


async def test_a_stop_during_a_reconfigure_leaves_no_poller_behind() -> None:
    idle = SlowIdle(math.inf)
    watch = RuleWatch(Worker(), OwnerRules(), probes=idle.probes())
    await watch.start()
    reloading = asyncio.create_task(watch.reconfigure(OwnerRules(idle_minutes=5)))
    await asyncio.wait_for(idle.asked.wait(), WAIT_SECONDS)
    await watch.stop()
    idle.answer.set()
    await asyncio.wait_for(reloading, WAIT_SECONDS)  # ends quietly: nothing left to apply
    left = pollers()
    for poller in left:
        poller.cancel()
    assert left == []
    assert not watch.polling
    assert not watch.timed


async def test_a_reconfigure_while_the_watch_starts_leaves_one_poller() -> None:
    idle = SlowIdle(math.inf)
    watch = RuleWatch(Worker(), OwnerRules(idle_minutes=5), probes=idle.probes())
    starting = asyncio.create_task(watch.start())
    await asyncio.wait_for(idle.asked.wait(), WAIT_SECONDS)
    reloading = asyncio.create_task(watch.reconfigure(OwnerRules(idle_minutes=10)))
    await eventually(lambda: watch.rules.idle_minutes == 10, "the reload to begin")
    idle.answer.set()
    await asyncio.wait_for(asyncio.gather(starting, reloading), WAIT_SECONDS)
    running = pollers()
    await watch.stop()
    left = pollers()
    for poller in left:
        poller.cancel()
    assert (len(running), left) == (1, [])


async def test_a_reconfigure_whose_caller_is_cancelled_still_applies_the_rules() -> None:
    idle = SlowIdle(0.0)  # someone at the keyboard
    hours = parse_hours("18:00-08:00")
    worker = Worker()
    watch = RuleWatch(worker, OwnerRules(hours=hours), probes=idle.probes())
    await watch.start()
    assert watch.timed
    reloading = asyncio.create_task(watch.reconfigure(OwnerRules(hours=hours, idle_minutes=5)))
    await asyncio.wait_for(idle.asked.wait(), WAIT_SECONDS)
    reloading.cancel()  # `vcnode config reload` cut short: its RPC handler cancelled
    with pytest.raises(asyncio.CancelledError):
        await reloading
    idle.answer.set()
    try:
        await eventually(lambda: watch.timed and watch.polling, "the timer and the poller")
        assert IDLE_HOLD in worker.holds(), "the new rule applied"
    finally:
        await watch.stop()


async def test_a_probe_that_fails_while_reconfiguring_leaves_the_rules_watched() -> None:
    broken = False

    def battery() -> bool | None:
        if broken:
            raise RuntimeError("no /sys here")
        return None

    probes = Probes(battery=battery, idle_seconds=answers(math.inf), zone=fixed_zone)
    rules = OwnerRules(hours=parse_hours("18:00-08:00"), idle_minutes=5)
    watch = RuleWatch(Worker(), rules, probes=probes, clock=lambda: SATURDAY_NOON)
    await watch.start()
    broken = True
    try:
        with pytest.raises(RuntimeError):
            await watch.reconfigure(replace(rules, idle_minutes=10))
        assert (watch.timed, watch.polling) == (True, True)
    finally:
        await watch.stop()


# --- idle: logind -------------------------------------------------------------------------

NOW = 1_700_000_000.0


def usec(epoch: float) -> str:
    return str(int(epoch * 1e6))


def test_loginctl_answers_are_read_per_session() -> None:
    text = (
        f"Id=3\nType=tty\nClass=user\nIdleHint=no\nIdleSinceHint={usec(NOW - 90)}\n\n"
        f"Id=c2\nType=x11\nClass=user\nIdleHint=yes\nIdleSinceHint={usec(NOW - 900)}\n"
    )
    sessions = parse_sessions(text)
    assert [s["Id"] for s in sessions] == ["3", "c2"]
    assert session_idle_seconds(sessions[0], NOW) == pytest.approx(90)
    assert session_idle_seconds(sessions[1], NOW) == pytest.approx(900)
    # The least idle one: someone typed in the terminal 90 s ago.
    assert machine_idle_seconds(sessions, NOW) == pytest.approx(90)


def session(kind: str, klass: str, hint: str, since: str) -> dict[str, str]:
    return {"Type": kind, "Class": klass, "IdleHint": hint, "IdleSinceHint": since}


@pytest.mark.parametrize(
    ("session_properties", "idle"),
    [
        (session("wayland", "user", "no", usec(NOW - 3600)), 0.0),
        (session("tty", "user", "yes", usec(NOW - 2000)), 2000.0),
        (session("tty", "user", "no", "0"), None),
        (session("unspecified", "user", "no", usec(NOW)), None),
        (session("unspecified", "manager", "no", usec(NOW)), None),
        (session("tty", "background", "no", usec(NOW)), None),
        (session("x11", "greeter", "yes", usec(NOW - 60)), 60.0),
    ],
)
def test_a_session_tells_its_idle_time_only_when_it_can(
    session_properties: dict[str, str], idle: float | None
) -> None:
    told = session_idle_seconds(session_properties, NOW)
    assert told == (pytest.approx(idle) if idle is not None else None)


def test_with_no_session_that_tells_nobody_uses_the_machine() -> None:
    assert machine_idle_seconds([], NOW) == math.inf
    silent = [{"Id": "4", "Type": "unspecified", "Class": "user", "IdleHint": "no"}]
    assert machine_idle_seconds(silent, NOW) == math.inf


def fake_loginctl(tmp_path: Path, output: str) -> str:
    """A loginctl that prints `output` and records its arguments."""
    script = tmp_path / "loginctl"
    (tmp_path / "output").write_text(output)
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat {tmp_path}/output\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_logind_idle_asks_loginctl_about_the_listed_sessions(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    for name in ("2", "2.ref", "c7"):
        (sessions / name).touch()
    output = (
        f"Id=2\nType=tty\nClass=user\nIdleHint=no\nIdleSinceHint={usec(NOW - 300)}\n\n"
        f"Id=c7\nType=x11\nClass=user\nIdleHint=yes\nIdleSinceHint={usec(NOW - 1200)}\n"
    )
    idle = LogindIdle(lambda: NOW, sessions, fake_loginctl(tmp_path, output), [tmp_path])
    assert await idle() == pytest.approx(300)
    args = (tmp_path / "args").read_text().split()
    assert args[:4] == ["--no-pager", "show-session", "2", "c7"]
    assert "IdleSinceHint" in args
    for name in ("2", "2.ref", "c7"):
        (sessions / name).unlink()
    assert await idle() == math.inf, "nobody logged in"


async def test_without_logind_it_says_so_once_and_takes_the_machine_as_idle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    idle = LogindIdle(lambda: NOW, tmp_path / "absent", "loginctl", [tmp_path])
    # Sessions left from a boot with systemd, in a container without it: no source either.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "3").touch()
    leftover = LogindIdle(lambda: NOW, stale, "loginctl", [tmp_path / "no-systemd-here"])
    with caplog.at_level(logging.WARNING, logger=rule_watch.__name__):
        assert await idle() is None
        assert await idle() is None
        assert await leftover() is None
    said = [r.getMessage() for r in caplog.records if "idle_minutes" in r.getMessage()]
    assert len(said) == 2, "once by each"
    assert "systemd-logind is not running here" in said[0]
    assert "taken as idle" in said[0]


async def test_a_loginctl_that_fails_is_no_source(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "5").touch()
    idle = LogindIdle(lambda: NOW, sessions, str(tmp_path / "no-such-loginctl"), [tmp_path])
    assert await idle() is None


# --- load: CPU shares ---------------------------------------------------------------------


def sample(busy: float, total: float, own: Iterable[tuple[str, float]] = ()) -> CpuSample:
    return CpuSample(busy, total, dict(own))


def test_the_volunteers_own_use_is_not_counted_as_other_load() -> None:
    before = sample(100, 1000, [(TREE, 10), ("c1", 50)])
    after = sample(160, 1100, [(TREE, 12), ("c1", 80)])
    # 60 busy seconds of 100, 2 + 30 of them the volunteer's.
    assert other_share(before, after) == pytest.approx(28.0)
    # Never below 0, never more than the busy time taken away.
    assert other_share(before, sample(110, 1100, [(TREE, 12), ("c1", 99)])) == 0.0


def test_no_share_without_time_or_with_a_task_whose_use_is_unknown() -> None:
    before = sample(100, 1000)
    assert other_share(before, sample(100, 1000)) is None
    unknown = CpuSample(150, 1100, {TREE: 0.0}, unknown=("abc",))
    assert other_share(before, unknown) is None


def test_no_share_over_an_interval_in_which_the_task_containers_changed() -> None:
    # 4 CPUs over 30 s: 120 CPU-seconds. A 4-CPU task ran 25 s of them (100) and ended; the
    # owner did nothing. Its container gone, those 100 s would read as 83% other load.
    before = sample(1000, 10_000, [(TREE, 5), ("task", 400)])
    assert other_share(before, sample(1100, 10_120, [(TREE, 5)])) is None
    # One that appeared may have run, unlisted, before this interval (all its time since its
    # start would be taken off, hiding the owner's load).
    appeared = sample(1100, 10_120, [(TREE, 5), ("task", 500), ("new", 3000)])
    assert other_share(before, appeared) is None
    # One listed but gone before it was read: its last moments are lost too.
    short = CpuSample(1100, 10_120, {TREE: 5.0, "task": 500.0}, ended=("short",))
    assert other_share(before, short) is None
    # The same containers at both looks: a figure (the owner's 12 s of CPU: 10%).
    assert other_share(before, sample(1112, 10_120, [(TREE, 5), ("task", 500)])) == (
        pytest.approx(10.0)
    )


async def test_the_load_probe_is_told_of_tasks_whose_containers_are_frozen_or_stopping() -> None:
    told: list[bool] = []

    async def load(tasks_started: bool) -> float | None:
        told.append(tasks_started)
        return None

    class WorkerWith(Worker):
        def __init__(self, phase: str) -> None:
            super().__init__()
            self.phase = phase

        def view(self) -> LifecycleView:
            attempt = AttemptView("t", 1, "w", self.phase)
            return replace(super().view(), attempts=(attempt,))

    probes = Probes(battery=no_battery, other_load=load, zone=fixed_zone)
    phases = ("running", "frozen", "stopping", "fetching", "ready", "delivering")
    for phase in phases:
        watch = RuleWatch(WorkerWith(phase), OwnerRules(max_other_load=25), probes=probes)
        await watch.start()
        await watch.stop()
    # A frozen task's container is listed all along: thawed, it is not taken for a new one.
    assert told == [True, True, True, False, False, False]


def total_cpu_seconds() -> float:
    return sum(psutil.cpu_times())


async def a_tick_passes() -> None:
    """Until /proc/stat counts on from now: a look after it has time to judge by."""
    start = total_cpu_seconds()
    deadline = time.monotonic() + WAIT_SECONDS
    while total_cpu_seconds() <= start:
        if time.monotonic() > deadline:
            raise AssertionError("/proc/stat did not count on")
        await asyncio.sleep(0.01)


async def a_share(meter: CpuMeter, tasks_started: bool = False) -> float:
    """The meter's next figure once a tick of /proc/stat passed since its last look (two
    looks within one tick have no time between them, and give none)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (share := await meter(tasks_started)) is None:
        if time.monotonic() > deadline:
            raise AssertionError("the meter gave no figure")
        await asyncio.sleep(0.01)
    return share


async def test_the_cpu_meter_measures_this_machine() -> None:
    meter = CpuMeter(min_window=0.0)
    assert await meter(False) is None, "a baseline first"
    share = await a_share(meter)
    assert 0.0 <= share <= 100.0


async def test_the_cpu_meter_gives_no_figure_over_a_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meter = CpuMeter(min_window=60.0)
    assert await meter(False) is None
    looked = []
    monkeypatch.setattr(meter, "_sample", lambda ids: looked.append(ids))
    assert await meter(False) is None
    assert looked == [], "a look right after the last one judges nothing, and keeps its base"


async def test_a_task_container_without_a_cgroup_leaves_the_load_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def containers() -> list[str]:
        return ["f" * 64]

    meter = CpuMeter(task_containers=containers, min_window=0.0)
    with caplog.at_level(logging.WARNING, logger=rule_watch.__name__):
        assert await meter(True) is None
        assert await meter(True) is None
        assert await meter(True) is None
    assert sum("no cgroup found" in r.getMessage() for r in caplog.records) == 1
    # Not running: the containers are not asked about, and the figure comes back.
    assert 0.0 <= await a_share(meter) <= 100.0


def docker(*arguments: str) -> str:
    done = subprocess.run(["docker", *arguments], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def labelled(owner: str) -> list[str]:
    return ["--network", "none", "--label", f"{OWNER_LABEL}={owner}"]


def remove_labelled(*owners: str) -> None:
    for owner in owners:
        listed = docker("ps", "-aq", "--no-trunc", "--filter", f"label={OWNER_LABEL}={owner}")
        for container in listed.split():
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


@pytest.mark.docker
async def test_the_task_containers_are_the_volunteers_running_and_paused_ones(
    worker_image: str,
) -> None:
    owner, stranger = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    try:
        run = ["run", "-d", *labelled(owner), worker_image, "sleep", "300"]
        running = await asyncio.to_thread(docker, *run)
        frozen = await asyncio.to_thread(docker, *run)
        await asyncio.to_thread(docker, "pause", frozen)
        await asyncio.to_thread(docker, "create", *labelled(owner), worker_image, "true")
        await asyncio.to_thread(
            docker, "run", "-d", *labelled(stranger), worker_image, "sleep", "300"
        )
        listed = docker_task_containers(owner)
        assert sorted(await listed()) == sorted([running, frozen])
        # Looked at while frozen and again once thawed, the same container: a figure, not
        # the wait a new one calls for.
        meter = CpuMeter(listed, min_window=0.0)
        assert await meter(True) is None, "a baseline first"
        await asyncio.to_thread(docker, "unpause", frozen)
        await a_tick_passes()
        assert await meter(True) is not None
    finally:
        await asyncio.to_thread(remove_labelled, owner, stranger)


@pytest.mark.docker
async def test_no_load_figure_over_a_look_in_which_a_task_container_ended(
    worker_image: str,
) -> None:
    owner = f"test-{uuid.uuid4().hex[:12]}"
    busy = ["run", "-d", *labelled(owner), worker_image, "sh", "-c", "while :; do :; done"]
    try:
        task_container = await asyncio.to_thread(docker, *busy)
        meter = CpuMeter(docker_task_containers(owner), min_window=0.0)
        assert await meter(True) is None, "a baseline first"
        assert 0.0 <= await a_share(meter, tasks_started=True) <= 100.0
        # The task ends between two looks: its CPU time since the last went with it.
        await asyncio.to_thread(docker, "rm", "-f", task_container)
        await a_tick_passes()
        assert await meter(True) is None
        # From there on, without it: figures again.
        assert 0.0 <= await a_share(meter, tasks_started=True) <= 100.0
    finally:
        await asyncio.to_thread(remove_labelled, owner)


# --- the time zone ------------------------------------------------------------------------


def test_the_local_zone_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    zone = local_zone()
    assert isinstance(zone, ZoneInfo)
    assert str(zone) == "America/New_York"
    monkeypatch.setenv("TZ", "Not/AZone")
    fixed = local_zone()
    assert datetime.now(fixed).utcoffset() == datetime.now().astimezone().utcoffset()
    monkeypatch.delenv("TZ")
    assert datetime(2024, 1, 1, tzinfo=local_zone()).utcoffset() is not None


def test_the_local_zone_has_the_systems_dst_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/etc/localtime"):
        pytest.skip("no /etc/localtime here")
    monkeypatch.delenv("TZ", raising=False)
    zone = local_zone()
    winter, summer = datetime(2024, 1, 15, tzinfo=zone), datetime(2024, 7, 15, tzinfo=zone)
    expected_winter = time.mktime((2024, 1, 15, 0, 0, 0, 0, 0, -1))
    expected_summer = time.mktime((2024, 7, 15, 0, 0, 0, 0, 0, -1))
    assert (winter.timestamp(), summer.timestamp()) == (expected_winter, expected_summer)
    assert (
        timedelta(0)
        <= (summer.utcoffset() or timedelta(0)) - (winter.utcoffset() or timedelta(0))
        <= timedelta(hours=2)
    )


# --- with the real worker -----------------------------------------------------------------


async def test_the_worker_declines_offers_outside_its_hours_and_takes_them_once_lifted(
    tmp_path: Path,
) -> None:
    store = VolunteerStore(tmp_path)
    await store.open()
    runtime = GatedRuntime()
    worker = TaskWorker(
        WorkerConfig(tmp_path / "tasks", OwnerLimits(max_concurrent_tasks=1)),
        store,
        NoTransfers(),
        runtime,
        resources=lambda: Resources(4, 8192, 10_000, docker_available=True),
        image_id=no_image,
        # The watch's saturday: by today's clock the hold would have ended in 2024.
        clock=lambda: SATURDAY_NOON,
    )
    said = Said()
    worker.attach(said)
    weekdays = OwnerRules(days=parse_days("mon-fri"))
    watch = RuleWatch(
        worker,
        weekdays,
        probes=Probes(battery=no_battery, zone=fixed_zone),
        clock=lambda: SATURDAY_NOON,
    )
    try:
        await watch.start()
        reason = "outside its hours (mon-fri) until mon 00:00"
        monday = datetime(2024, 5, 6, 0, 0, tzinfo=PARIS).timestamp()
        assert worker.availability() == (reason, monday)
        assert said.words == [("heartbeat", "")], "the coordinator is told at once"
        await worker.on_offer(task("a"))
        assert said.words[-1] == ("decline", "a")
        await watch.reconfigure(OwnerRules(on_battery=True))
        assert worker.availability() == ("", 0.0)
        await worker.on_offer(task("b"))
        assert ("accept", "b") in said.words
    finally:
        await watch.stop()
        for gate in runtime.release.values():
            gate.set()
        await worker.stop()
        await store.close()
