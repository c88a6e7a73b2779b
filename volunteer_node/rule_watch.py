"""Watches the owner's rules (volunteer_node/rules.py) and holds or lifts the worker's work.

The I/O shell of rules.py: it reads the clock and the machine, asks `rules.evaluate`, and
carries the verdict out with `TaskWorker.hold` and `TaskWorker.lift` (lifecycle holds of
their own names, so `vcnode status`, the coordinator and `status --why` show each reason).

What it costs:
- No rule set (no schedule, idle and load off, and on_battery allowed or no battery): no
  task, no timer. The default (tasks on mains power only) looks for a battery once, at start
  and on each reconfigure; a battery that appears later (a UPS plugged in) is seen then.
- The schedule is not polled: a timer wakes at its next boundary. The loop's clock stands
  still while the machine sleeps and the wall clock does not (nor does the loop's clock
  follow the wall clock when it is set), so a long wait is cut into pieces of at most
  WALL_CLOCK_CHECK_SECONDS, each ending with a look at the wall clock. The time zone (and
  its DST rules) is read at start and on each reconfigure.
- Idle, load and battery are looked at every CHECK_SECONDS (30 s): short enough that the
  owner gets the CPUs back, or the battery spared, within half a minute, long enough that a
  burst of a few seconds (a compile, opening a browser) is averaged out rather than freezing
  tasks. A look costs under 2 ms of CPU (the load's: /proc/stat and the process table; the
  battery's: a few files of /sys). The idle source, a subprocess, is asked at most once a
  minute (IDLE_CHECK_SECONDS). Nothing waits on the loop: subprocesses are asyncio's, file
  reads run in a thread.

Idle: systemd-logind's per-session idle hints, the source logind's own IdleAction= uses. It
tells for every user and every kind of session without privileges: a terminal session
(console, ssh with a pty) is idle since its terminal's last input (the tty's atime), a
graphical one from when its desktop said it went idle (GNOME after its screen-blank delay:
the idle time counts from then, so it errs on the owner's side). The sessions are listed from
/run/systemd/sessions, which sd_get_sessions() reads (no subprocess: no session, nobody uses
the machine), while systemd or elogind runs (LOGIND_MARKERS; a container may carry that
directory over from an image), and their hints are read with one `loginctl show-session
ID... -p ...` (one subprocess, ~4 ms of CPU with its child, once a minute). Not D-Bus: no
D-Bus library is a dependency. Not logind's machine-wide IdleHint: while any session is
active, its IdleSinceHint is the *oldest* input among active sessions, which would call a
machine idle while someone types in a second terminal. Sessions without a signal (ssh
without a pty, background and manager sessions) are left out. Where no source answers (no
logind: containers, some servers), it says so once in the log and takes the machine as idle.

Other load: the machine's busy CPU time (psutil.cpu_times deltas: user, nice, system, irq,
softirq; not steal, which is another VM's) minus the volunteer's own over the same interval,
as a share of all CPU time in it. The volunteer's own is its process tree (the daemon and its
descendants: the process runtime's sandboxes, with what they reaped) and, while tasks run in
Docker, its task containers' cgroup CPU time (daemon/runtime/usage.py; the containers found
by their owner label, running or paused: a task frozen by a hold and thawed is the same
container, not a new one). When a container's cgroup cannot be read its use cannot be told
from the owner's, so the rule waits rather than take the volunteer's own tasks for the
owner's work (which would freeze and thaw them every minute). Nor is an interval judged in
which the set of task containers changed: one that ended took its CPU time since the last
look with it (a 4-CPU task ending mid-interval would read as the owner's load), and one that
appeared may have run before it was listed. The rule holds above max_other_load and lifts
below RESUME_LOAD_SHARE of it (rules.py): no flapping at the line.

Battery: psutil.sensors_battery(); no battery, or one whose plug state cannot be read, never
holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psutil

from daemon.runtime.usage import UsageFiles, find_usage_files, read_usage
from volunteer_node.lifecycle import Hold, LifecycleView
from volunteer_node.rules import RULE_HOLDS, Facts, OwnerRules, evaluate, next_change

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0
IDLE_CHECK_SECONDS = 60.0
WALL_CLOCK_CHECK_SECONDS = 60.0
# A timer set for a boundary wakes this much after it: not a hair before, by a clock that
# drifted from the wall clock, only to find the window still as it was.
BOUNDARY_MARGIN_SECONDS = 0.05
# The shortest span a load figure is taken over: a look soon after the last one (the rules
# reloaded) would judge by a moment's burst.
MIN_LOAD_WINDOW_SECONDS = 10.0
# A probe (loginctl, Docker) that takes longer than this says nothing this time.
PROBE_TIMEOUT_SECONDS = 5.0
SESSIONS_DIR = Path("/run/systemd/sessions")
# Present while systemd is the init (sd_booted()'s test) or elogind runs: otherwise what is
# in SESSIONS_DIR is a leftover that says nothing.
LOGIND_MARKERS = (Path("/run/systemd/system"), Path("/run/elogind.pid"))
LOGIND_PROPERTIES = ("Id", "Class", "Type", "IdleHint", "IdleSinceHint")
GRAPHICAL_TYPES = ("x11", "wayland", "mir")
# Sessions nobody sits at: a user's service manager, cron and the like.
UNATTENDED_CLASSES = ("background", "manager", "none")
# An attempt's phases (lifecycle.AttemptView.phase) in which it may have a container.
CONTAINER_PHASES = ("running", "frozen", "stopping")


class HoldTarget(Protocol):
    """The worker, as far as the rules are concerned."""

    async def hold(self, hold: Hold) -> None: ...

    async def lift(self, name: str) -> None: ...

    def view(self) -> LifecycleView: ...


# --- the machine --------------------------------------------------------------------------


def on_battery() -> bool | None:
    """True while the machine runs on its battery; None: no battery, or it cannot tell
    (blocking: a few reads of /sys; call in a thread)."""
    sensors_battery = getattr(psutil, "sensors_battery", None)
    if sensors_battery is None:
        return None
    try:
        battery = sensors_battery()
    except (OSError, RuntimeError):
        return None
    if battery is None or battery.power_plugged is None:
        return None
    return not battery.power_plugged


def parse_sessions(text: str) -> list[dict[str, str]]:
    """`loginctl show-session ID... -p ...` output: one mapping per session."""
    sessions: list[dict[str, str]] = []
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if not equals:
            continue
        if key == "Id" or not sessions or key in sessions[-1]:
            sessions.append({})
        sessions[-1][key] = value
    return sessions


def session_idle_seconds(session: Mapping[str, str], now: float) -> float | None:
    """How long the session has had no input, by logind; None when it cannot say (no
    terminal and no desktop to tell) or nobody sits at it."""
    kind, klass = session.get("Type", ""), session.get("Class", "")
    if klass.startswith(UNATTENDED_CLASSES):
        return None
    try:
        since = int(session.get("IdleSinceHint", "")) / 1e6
    except ValueError:
        return None
    if kind == "tty":
        # Its terminal's last input, whatever the hint (which logind sets only past its
        # IdleActionSec=).
        return max(0.0, now - since) if since else None
    if kind in GRAPHICAL_TYPES:
        # Its desktop says when it went idle; while it is not, someone is at it.
        return max(0.0, now - since) if session.get("IdleHint") == "yes" else 0.0
    return None


def machine_idle_seconds(sessions: Sequence[Mapping[str, str]], now: float) -> float:
    """The least idle session's idle time; math.inf when no session tells (nobody sits at
    the machine)."""
    told = [
        s for s in (session_idle_seconds(session, now) for session in sessions) if s is not None
    ]
    return min(told, default=math.inf)


class LogindIdle:
    """How long nobody has used the machine, from systemd-logind (see the module's text)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sessions_dir: Path = SESSIONS_DIR,
        loginctl: str = "loginctl",
        markers: Sequence[Path] = LOGIND_MARKERS,
    ) -> None:
        self._clock = clock
        self._sessions_dir = sessions_dir
        self._markers = markers
        self._loginctl = loginctl
        self._said_why = False

    async def __call__(self) -> float | None:
        """Seconds since the last input; math.inf: nobody logged in; None: no source."""
        # A directory listing and a stat on a tmpfs: microseconds, not worth a thread.
        try:
            names = os.listdir(self._sessions_dir)
        except OSError:
            names = None
        if names is None or not any(marker.exists() for marker in self._markers):
            self._no_source("systemd-logind is not running here")
            return None
        ids = sorted(name for name in names if name.isalnum())
        if not ids:
            return math.inf
        properties = [word for name in LOGIND_PROPERTIES for word in ("-p", name)]
        text, problem = await _output(
            [self._loginctl, "--no-pager", "show-session", *ids, *properties]
        )
        sessions = parse_sessions(text)
        if not sessions:
            self._no_source(f"`loginctl show-session` said nothing ({problem})")
            return None
        return machine_idle_seconds(sessions, self._clock())

    def _no_source(self, why: str) -> None:
        if not self._said_why:
            self._said_why = True
            log.warning(
                "idle_minutes: nothing tells when this machine was last used (%s); it is "
                "taken as idle",
                why,
            )
        return None


async def _output(command: Sequence[str]) -> tuple[str, str]:
    """What the command printed, and why it failed ("" when it did not)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SYSTEMD_PAGER": "", "LC_ALL": "C"},
        )
    except OSError as error:
        return "", f"{command[0]}: {error.strerror or error}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return "", f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    finally:
        if process.returncode is None:  # cancelled: no child left behind
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())
    problem = "" if process.returncode == 0 else stderr.decode(errors="replace").strip()[:200]
    return stdout.decode(errors="replace"), problem


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds: the machine's busy and total time, and the volunteer's own
    by source ("tree": its process tree; else a task container's id)."""

    busy: float
    total: float
    own: Mapping[str, float]
    # Task containers whose use could not be read.
    unknown: tuple[str, ...] = ()
    # Task containers listed but gone before their use was read: their last moments are lost.
    ended: tuple[str, ...] = ()


TREE = "tree"
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")
_IDLE_FIELDS = ("idle", "iowait", "steal")


def other_share(before: CpuSample, after: CpuSample) -> float | None:
    """Percent of all CPU time between the samples that went to other processes; None when
    it cannot be told: no time passed, a task's use is unknown, or the task containers
    changed between the samples."""
    total = after.total - before.total
    if total <= 0 or after.unknown or after.ended:
        return None
    # A container gone since `before` took its time since then with it, and one new in
    # `after` may have run unseen before it was listed: either way a wrong figure, and a
    # wrong one freezes or thaws tasks, while none leaves them as they are.
    if before.own.keys() != after.own.keys():
        return None
    busy = max(0.0, after.busy - before.busy)
    # Each at least 0: a counter never goes back.
    own = sum(max(0.0, seconds - before.own[key]) for key, seconds in after.own.items())
    # /proc/stat counts in ticks, the two sums a tick apart at most: never over 100%.
    return min(100.0, 100.0 * max(0.0, busy - min(own, busy)) / total)


def _tree_seconds(me: psutil.Process) -> float:
    def seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    total = seconds(me)
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += seconds(child)
    return total


class CpuMeter:
    """Other processes' share of the machine's CPUs since the last look (see the module's
    text); `task_containers` lists the ids of the volunteer's task containers, running or
    paused (Docker), None when tasks run without Docker."""

    def __init__(
        self,
        task_containers: Callable[[], Awaitable[Sequence[str]]] | None = None,
        min_window: float = MIN_LOAD_WINDOW_SECONDS,
    ) -> None:
        self._task_containers = task_containers
        self._min_window = min_window
        self._me = psutil.Process()
        self._files: dict[str, UsageFiles] = {}
        self._last: CpuSample | None = None
        self._last_at = 0.0  # monotonic
        self._said_unknown = False

    async def __call__(self, tasks_started: bool) -> float | None:
        """None for the first look (the baseline), and for one within `min_window` of the
        last (the baseline stays). `tasks_started`: whether any task may have a container
        (running, frozen or being stopped); without, Docker is not asked."""
        if self._last is not None and time.monotonic() - self._last_at < self._min_window:
            return None
        ids: Sequence[str] = ()
        if tasks_started and self._task_containers is not None:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                    ids = await self._task_containers()
            except Exception as error:  # Docker busy or away: no figure this time
                log.debug("could not list the task containers: %r", error)
                self._last = None
                return None
        sample = await asyncio.to_thread(self._sample, tuple(ids))
        before, self._last, self._last_at = self._last, sample, time.monotonic()
        if sample.unknown and not self._said_unknown:
            self._said_unknown = True
            log.warning(
                "max_other_load: no cgroup found for task container %s, so its CPU use "
                "cannot be told from other processes'; the rule waits while it runs",
                sample.unknown[0][:12],
            )
        return None if before is None else other_share(before, sample)

    def _usage_files(self, container_id: str) -> UsageFiles:
        """Where a container's CPU time is; looked for again until found (its cgroup may
        not be there yet as it starts)."""
        known = self._files.get(container_id)
        return known if known is not None and known.cpu else find_usage_files(container_id)

    def _sample(self, container_ids: tuple[str, ...]) -> CpuSample:
        """Blocking: /proc/stat, the process tree's /proc entries, cgroup files."""
        times = psutil.cpu_times()
        busy = sum(getattr(times, name, 0.0) for name in _BUSY_FIELDS)
        total = busy + sum(getattr(times, name, 0.0) for name in _IDLE_FIELDS)
        own = {TREE: _tree_seconds(self._me)}
        unknown: list[str] = []
        ended: list[str] = []
        self._files = {cid: self._usage_files(cid) for cid in container_ids}
        for cid, files in self._files.items():
            reading = read_usage(files) if files.cpu else None
            if reading is not None and reading.cpu_seconds is not None:
                own[cid] = reading.cpu_seconds
            elif reading is None and files.cpu:
                ended.append(cid)  # between the listing and now
            else:
                unknown.append(cid)
        return CpuSample(busy, total, own, tuple(unknown), tuple(ended))


def docker_task_containers(owner: str) -> Callable[[], Awaitable[list[str]]]:
    """Lists the containers labelled as this volunteer's tasks, running or paused (frozen
    by a hold: listed all along, a thawed one is not taken for a new one). Called only
    while tasks run in Docker, when the runtime has imported aiodocker already."""

    async def listed() -> list[str]:
        import aiodocker

        from daemon.runtime.docker import OWNER_LABEL

        filters = {"label": [f"{OWNER_LABEL}={owner}"], "status": ["running", "paused"]}
        async with aiodocker.Docker() as docker:
            containers = await docker.containers.list(filters=filters)
        return [str(container.id) for container in containers]

    return listed


def local_zone() -> tzinfo:
    """The machine's time zone with its DST rules (what the wall clock shows), read when
    the rules are (re)configured: TZ if set and known, else /etc/localtime; else the
    offset now (its DST changes then come as a surprise, seen within a minute)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    else:
        with contextlib.suppress(OSError, ValueError), open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    return datetime.now().astimezone().tzinfo or UTC


@dataclass
class Probes:
    """Where the facts come from; tests put fakes in."""

    # Blocking (called in a thread).
    battery: Callable[[], bool | None] = on_battery
    idle_seconds: Callable[[], Awaitable[float | None]] = field(default_factory=LogindIdle)
    # Told whether any task may have a container now (running, frozen or being stopped).
    other_load: Callable[[bool], Awaitable[float | None]] = field(default_factory=CpuMeter)
    zone: Callable[[], tzinfo] = local_zone


# --- the watch ----------------------------------------------------------------------------


def _say_if_failed(configuration: asyncio.Task[None]) -> None:
    if not configuration.cancelled() and (error := configuration.exception()) is not None:
        log.error("could not apply the owner's rules", exc_info=error)


class RuleWatch:
    """Holds the worker's work while an owner's rule says so, and lifts it when it no
    longer does. `start()` applies the rules at once; `reconfigure(rules)` applies new ones
    at once (a config reload), lifting the holds of rules now off."""

    def __init__(
        self,
        worker: HoldTarget,
        rules: OwnerRules,
        *,
        probes: Probes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._worker = worker
        self._rules = rules
        self._probes = probes or Probes()
        self._clock = clock
        self._zone: tzinfo = UTC
        self._facts = Facts()
        self._battery_present = False
        self._idle_due = 0.0  # loop time
        self._timer: asyncio.TimerHandle | None = None
        self._poller: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        # Configurations under way, each a task of its own: one whose caller is cancelled (a
        # reload's RPC cut short) goes on to its end rather than leave the rules unwatched.
        self._configurations: set[asyncio.Task[None]] = set()
        # One configuration at a time: two at once (a reload while the watch starts) would
        # each make a poller.
        self._configuring = asyncio.Lock()
        # One verdict at a time: the schedule's timer and the poller must not cross.
        self._judging = asyncio.Lock()
        self._running = False

    @property
    def rules(self) -> OwnerRules:
        return self._rules

    @property
    def polling(self) -> bool:
        """Whether the machine is looked at every CHECK_SECONDS."""
        return self._poller is not None and not self._poller.done()

    @property
    def timed(self) -> bool:
        """Whether a timer waits for the schedule's next boundary."""
        return self._timer is not None

    async def start(self) -> None:
        """Applies the rules; done even if the caller is cancelled meanwhile."""
        self._running = True
        await self._configure_to_the_end()

    async def reconfigure(self, rules: OwnerRules) -> None:
        """Applies `rules` in place of the last; done even if the caller is cancelled
        meanwhile (the caller's await then ends at once, the configuration goes on)."""
        self._rules = rules
        if self._running:
            await self._configure_to_the_end()

    async def stop(self) -> None:
        self._running = False
        self._disarm()
        pending = [
            task
            for task in (self._poller, *self._checks, *self._configurations)
            if task is not None
        ]
        self._poller = None
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # --- inside -----------------------------------------------------------------------------

    async def _configure_to_the_end(self) -> None:
        configuration = asyncio.get_running_loop().create_task(self._configure())
        self._configurations.add(configuration)
        configuration.add_done_callback(self._configurations.discard)
        try:
            await asyncio.shield(configuration)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if configuration.cancelled() and not (caller is not None and caller.cancelling()):
                return  # stop() ended it: a stopped watch has nothing to apply
            # The caller is gone: nobody else would hear of a failure.
            configuration.add_done_callback(_say_if_failed)
            raise

    async def _configure(self) -> None:
        async with self._configuring:
            self._disarm()
            await self._end_poller()
            rules = self._rules
            try:
                if rules.has_schedule:
                    self._zone = await asyncio.to_thread(self._probes.zone)
                battery: bool | None = None
                if not rules.on_battery:
                    battery = await asyncio.to_thread(self._probes.battery)
                self._battery_present = battery is not None
                # Facts of rules now off are forgotten: turned on again, they are measured
                # afresh.
                self._facts = Facts(
                    on_battery=battery,
                    idle_seconds=self._facts.idle_seconds if rules.idle_minutes else None,
                    other_load=self._facts.other_load if rules.max_other_load else None,
                )
                self._idle_due = 0.0
                await self._measure(battery=False)
                await self._judge()
            finally:
                # Whatever broke off the configuration (a probe that raised), the rules stay
                # watched; unless the watch stopped, or the loop is tearing its tasks down.
                this = asyncio.current_task()
                if not (this is not None and this.cancelling()):
                    self._arm()
                    self._start_poller(rules)

    async def _end_poller(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.wait([poller])

    def _start_poller(self, rules: OwnerRules) -> None:
        """The poller `rules` need, if any, in place of any other, while the watch runs."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._running and (rules.idle_minutes or rules.max_other_load or self._battery_present):
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            await self._measure(battery=self._battery_present)
            await self._judge()

    async def _measure(self, *, battery: bool) -> None:
        """Updates the facts the rules on need (the battery's when `battery`)."""
        rules, facts = self._rules, self._facts
        loop = asyncio.get_running_loop()
        try:
            if battery:
                facts = replace(facts, on_battery=await asyncio.to_thread(self._probes.battery))
            if rules.idle_minutes and loop.time() >= self._idle_due:
                # Due again a little early: a check that runs late must not skip a minute.
                self._idle_due = loop.time() + IDLE_CHECK_SECONDS - 1.0
                facts = replace(facts, idle_seconds=await self._probes.idle_seconds())
            if rules.max_other_load:
                attempts = self._worker.view().attempts
                started = any(a.phase in CONTAINER_PHASES for a in attempts)
                facts = replace(facts, other_load=await self._probes.other_load(started))
        except Exception:  # a probe that breaks must not end the watch
            log.exception("could not look at the machine for the owner's rules")
        self._facts = facts

    async def _judge(self) -> None:
        async with self._judging:
            if not self._running:
                return
            current = {h.name: h for h in self._worker.view().holds if h.name in RULE_HOLDS}
            now = datetime.fromtimestamp(self._clock(), self._zone)
            verdict = evaluate(self._rules, now, self._facts, current.keys())
            for hold in verdict.holds:
                was = current.get(hold.name)
                if was is not None and (was.reason, was.until) == (hold.reason, hold.until):
                    continue
                if was is None:
                    log.info("takes no tasks: %s", hold.reason)
                await self._worker.hold(hold)
            for name in verdict.lifts:
                log.info("the owner's %s rule no longer stops work", name)
                await self._worker.lift(name)

    def _arm(self) -> None:
        """A timer to the schedule's next boundary, or a minute, whichever comes first."""
        self._disarm()
        if not self._running or not self._rules.has_schedule:
            return
        wall = self._clock()
        change = next_change(self._rules, datetime.fromtimestamp(wall, self._zone))
        wait = WALL_CLOCK_CHECK_SECONDS if change is None else change.timestamp() - wall
        delay = min(max(0.0, wait) + BOUNDARY_MARGIN_SECONDS, WALL_CLOCK_CHECK_SECONDS)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        check = asyncio.get_running_loop().create_task(self._timed_check())
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _timed_check(self) -> None:
        await self._judge()
        self._arm()
