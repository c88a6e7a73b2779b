"""How soon `vcnode pause` freezes a volunteer's running tasks, and `vcnode resume` thaws them.

- owner_pause_latency: from the moment `vcnode pause --data-dir V` is started as a child
  process (the CLI as the owner types it, run as `python -m cli` with this interpreter:
  Python's start-up, the CLI's imports, the control socket's gRPC call and the volunteer
  freezing its containers through the Engine API all count) until the last of the
  volunteer's three task containers is paused; the median over ROUNDS rounds, in seconds.
- owner_resume_latency: the same for `vcnode resume`, until the last of the three is
  unpaused again.
- owner_pause_ratio: the volunteer's own part of a pause (the median of the same pause made
  through the control socket from this process: see below) over the median, in the same run
  and the same number of rounds, of `docker pause C1 C2 C3` on the same three containers
  (the Docker CLI, from its start to the last of them paused; `docker unpause C1 C2 C3`
  after it). RATIO_TARGET says why.

When a container is paused is read from Docker's event stream, not by polling: one
`docker events` (filtered on the volunteer's label, `pause` and `unpause`) runs for the whole
benchmark, and each event carries `timeNano`, the engine's wall clock when it logged the
event. The engine logs `pause` after setting the container's State.Paused under the
container's lock (and `unpause` after clearing it), so the event's time is the moment
`docker inspect` starts to say Paused true (false), with no poll interval on top. Start
times are this process's `time.time_ns()` just before the child is spawned (or the call is
made): the same host's clock as the engine's (a DOCKER_HOST on another machine would make
the figures meaningless). After every step `docker inspect` checks that all three containers
are running and paused (or not) as the step says, so a missed or stale event cannot pass.
Checked once against polling (aiodocker's inspect in a tight loop while `docker pause` ran,
five times): the event's time came 2-4 ms before the poll first saw Paused true, i.e. within
the poll's own round trip.

Also printed to stderr, each round and as medians: when the CLI exited, and the same pause
and resume through the control socket from this process (`open_control_channel`, connected
before the clock starts, then OwnerControl.Pause/Resume: no interpreter start-up, no
imports, no connection), which is the volunteer's own part (the RPC reaching it to the last
container frozen, plus a unix-socket round trip); the CLI's figure minus it is what starting
the CLI costs.

The pool: one coordinator+manager and one volunteer with `--max-concurrent-tasks 3` that
joins with a token made through the coordinator (mutual TLS), running Docker with the worker
image (`make image`, built here if missing); a workflow of three tasks that sleep for an
hour (`validation = "none"`: one attempt each), and the rounds start once all three
containers run. Each round measures the CLI, the direct call and the Docker CLI, each a
pause then a resume, in an order rotated round by round (so none always follows the same
one). The daemons are stopped, the three containers removed and the temp dir deleted even
on failure (the daemons' logs are kept on failure, and the path printed).
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.daemons import cli, cli_json, join_token, start_daemon, stop, wait_for_address
from benchmarks.report import Figure
from daemon.rpc.v1 import control_pb2, control_pb2_grpc
from daemon.runtime.docker import OWNER_LABEL
from daemon.transport.local_socket import open_control_channel

ROUNDS = 5
TASKS = 3
IMAGE = "vcnode/worker:1"
# Outlasts the benchmark by far; the containers are removed at the end.
TASK_COMMAND = ("sleep", "3600")
LATENCY_TARGET = 1.0
# The volunteer's own part (the control socket's call: the RPC reaching it, the containers
# frozen through the Engine API) against Docker's own CLI doing the same: a volunteer that
# took three times what `docker pause` takes would be doing something wrong. The CLI's
# start-up is not in it: `vcnode pause` as typed is judged by owner_pause_latency (its 1 s),
# and its start-up (~150 ms of Python and imports here) is printed apart.
RATIO_TARGET = 3.0
RUN_TIMEOUT = 120.0
# How long a pause or resume may take to show in the events before the round fails.
STEP_TIMEOUT = 15.0
JOIN_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[1]


# --- Docker -------------------------------------------------------------------------------


def _ensure_image() -> None:
    found = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, check=False
    ).returncode
    if found != 0:
        subprocess.run(["bash", str(REPO / "images/worker/build.sh"), IMAGE], check=True)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _running_containers(label: str) -> list[str]:
    listed = _docker("ps", "-q", "--no-trunc", "--filter", f"label={label}",
                     "--filter", "status=running")  # fmt: skip
    return listed.stdout.split()


def _check_states(containers: list[str], paused: bool) -> None:
    """Raises unless every container is running and paused (or not) as `paused` says."""
    shown = _docker("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", *containers)
    expected = [f"true {str(paused).lower()}"] * len(containers)
    if shown.returncode != 0 or shown.stdout.split("\n")[: len(containers)] != expected:
        raise RuntimeError(
            f"expected {len(containers)} containers running with Paused {paused}, "
            f"docker inspect says {shown.stdout.strip()!r} {shown.stderr.strip()!r}"
        )


def _remove_containers(label: str) -> None:
    listed = _docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    if listed:
        _docker("rm", "-f", *listed)


@dataclass(frozen=True)
class _Event:
    action: str
    container: str
    at_ns: int


@dataclass
class _StateEvents:
    """`docker events` for the containers carrying `label`, pause and unpause only, read
    by a thread for the whole benchmark."""

    label: str
    _queue: queue.Queue[_Event] = field(default_factory=queue.Queue)
    _process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        # --since replays from the engine's log, so no event falls before the stream is up.
        since = f"{time.time() - 1:.6f}"
        self._process = subprocess.Popen(
            ["docker", "events", "--since", since, "--filter", "type=container",
             "--filter", f"label={self.label}", "--filter", "event=pause",
             "--filter", "event=unpause", "--format", "{{json .}}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            self._queue.put(_Event(event["Action"], event["id"], int(event["timeNano"])))

    def last(self, action: str, containers: list[str], after_ns: int) -> int:
        """The engine's time (ns) of the last of `containers` to have `action` at or after
        `after_ns`; waits for it, up to STEP_TIMEOUT."""
        seen: dict[str, int] = {}
        deadline = time.monotonic() + STEP_TIMEOUT
        while not set(containers) <= seen.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"only {len(seen)} of {len(containers)} containers had {action!r} "
                    f"within {STEP_TIMEOUT:g} s"
                )
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            # Earlier events (a step before this one) are left behind by `after_ns`.
            wanted = event.action == action and event.container in containers
            if wanted and event.at_ns >= after_ns:
                seen.setdefault(event.container, event.at_ns)
        return max(seen.values())

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)


# --- the three ways to pause --------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One pause or resume: seconds from its start to the last container paused (or
    unpaused), and to the command or call returning."""

    done: float
    returned: float


@dataclass
class Way:
    name: str
    pause: Callable[[], tuple[int, int]]
    resume: Callable[[], tuple[int, int]]
    pauses: list[Step] = field(default_factory=list)
    resumes: list[Step] = field(default_factory=list)


def _timed_cli(volunteer_dir: Path, command: str, says: str) -> tuple[int, int]:
    """`vcnode COMMAND --data-dir V`: (start, exit) in ns; raises unless it says `says`."""
    started = time.time_ns()
    result = cli(command, "--data-dir", str(volunteer_dir))
    returned = time.time_ns()
    if result.returncode != 0 or says not in result.stdout:
        raise RuntimeError(
            f"vcnode {command} exited {result.returncode}, expected {says!r} in its output: "
            f"{result.stdout.strip()!r} {result.stderr.strip()[-2000:]!r}"
        )
    return started, returned


def _cli_pause(volunteer_dir: Path) -> tuple[int, int]:
    return _timed_cli(volunteer_dir, "pause", "paused by owner")


def _cli_resume(volunteer_dir: Path) -> tuple[int, int]:
    return _timed_cli(volunteer_dir, "resume", "working: takes tasks")


async def _call(volunteer_dir: Path, pausing: bool) -> tuple[int, int]:
    channel = open_control_channel(volunteer_dir)
    async with channel:
        await asyncio.wait_for(channel.channel_ready(), STEP_TIMEOUT)
        stub = control_pb2_grpc.OwnerControlStub(channel)
        started = time.time_ns()
        if pausing:
            await stub.Pause(control_pb2.PauseRequest(), timeout=STEP_TIMEOUT)
        else:
            await stub.Resume(control_pb2.ResumeRequest(), timeout=STEP_TIMEOUT)
        return started, time.time_ns()


def _timed_docker(verb: str, containers: list[str]) -> tuple[int, int]:
    started = time.time_ns()
    result = _docker(verb, *containers)
    returned = time.time_ns()
    if result.returncode != 0:
        raise RuntimeError(f"docker {verb} failed: {result.stderr.strip()}")
    return started, returned


# --- the pool -----------------------------------------------------------------------------


def _write_workflow(path: Path, name: str) -> Path:
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{i}"\nimage = "{IMAGE}"\n'
        f"command = {json.dumps(list(TASK_COMMAND))}\n"
        for i in range(TASKS)
    )
    path.write_text(f'[workflow]\nname = "{name}"\nvalidation = "none"\n{tasks}')
    return path


def _wait_for_volunteer(manager_dir: Path, volunteer_id: str) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        listed = cli("volunteers", "--data-dir", str(manager_dir), "--json")
        if listed.returncode == 0 and any(
            v.get("id") == volunteer_id and v.get("connected") for v in json.loads(listed.stdout)
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"volunteer {volunteer_id} did not join within {JOIN_TIMEOUT:g} s")


def _wait_for_containers(label: str) -> list[str]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        running = _running_containers(label)
        if len(running) == TASKS:
            return sorted(running)
        time.sleep(0.2)
    raise RuntimeError(f"{TASKS} task containers did not all run within {RUN_TIMEOUT:g} s")


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        try:
            stop(process)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _keep_logs(root: Path) -> None:
    kept = Path(tempfile.mkdtemp(prefix="vcnode-bench-owner-pause-logs-"))
    for log in root.glob("*.log"):
        shutil.copy(log, kept / log.name)
    print(f"owner_pause: daemon logs kept in {kept}", file=sys.stderr)


# --- the benchmark --------------------------------------------------------------------------


def _measure(ways: list[Way], events: _StateEvents, containers: list[str]) -> None:
    for index in range(ROUNDS):
        shift = index % len(ways)
        for way in ways[shift:] + ways[:shift]:
            for pausing in (True, False):
                started, returned = (way.pause if pausing else way.resume)()
                done = events.last("pause" if pausing else "unpause", containers, started)
                _check_states(containers, paused=pausing)
                step = Step((done - started) / 1e9, (returned - started) / 1e9)
                (way.pauses if pausing else way.resumes).append(step)
        print(f"owner_pause: round {index + 1}: " + _line(ways, -1), file=sys.stderr)


def _line(ways: list[Way], at: int | None) -> str:
    """Each way's pause and resume, of round `at` or (None) the medians: to the last
    container paused/unpaused, and to the command or call returning."""

    def show(steps: list[Step]) -> str:
        if at is not None:
            return f"{steps[at].done * 1000:.0f} ms (returned {steps[at].returned * 1000:.0f})"
        done = statistics.median(s.done for s in steps)
        returned = statistics.median(s.returned for s in steps)
        return f"{done * 1000:.0f} ms (returned {returned * 1000:.0f})"

    return "; ".join(
        f"{way.name}: pause {show(way.pauses)}, resume {show(way.resumes)}" for way in ways
    )


def run() -> list[Figure]:
    _ensure_image()
    tag = uuid.uuid4().hex[:10]
    processes: list[subprocess.Popen[bytes]] = []
    label = ""
    events: _StateEvents | None = None
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-owner-pause-") as tmp:
        root = Path(tmp)
        manager_dir, volunteer_dir = root / "manager", root / "volunteer"
        common = ["--listen", "127.0.0.1:0", "--cluster", f"bench-{tag}"]
        try:
            manager = start_daemon(manager_dir, "--role", "coordinator,manager", *common)
            processes.append(manager)
            wait_for_address(manager, manager_dir)
            volunteer = start_daemon(
                volunteer_dir,
                "--role", "volunteer", "--max-concurrent-tasks", str(TASKS),
                "--token", join_token(manager_dir), *common,
            )  # fmt: skip
            processes.append(volunteer)
            wait_for_address(volunteer, volunteer_dir)
            volunteer_id = (volunteer_dir / "node_id").read_text().strip()
            label = f"{OWNER_LABEL}={volunteer_id}"
            _wait_for_volunteer(manager_dir, volunteer_id)
            events = _StateEvents(label)
            events.start()
            workflow = _write_workflow(root / "sleepers.toml", f"owner-pause-{tag}")
            cli_json("submit", str(workflow), "--data-dir", str(manager_dir))
            containers = _wait_for_containers(label)

            ways = [
                Way("vcnode CLI", lambda: _cli_pause(volunteer_dir),
                    lambda: _cli_resume(volunteer_dir)),
                Way("control socket call", lambda: asyncio.run(_call(volunteer_dir, True)),
                    lambda: asyncio.run(_call(volunteer_dir, False))),
                Way("docker CLI", lambda: _timed_docker("pause", containers),
                    lambda: _timed_docker("unpause", containers)),
            ]  # fmt: skip
            _measure(ways, events, containers)
        except BaseException:
            _stop_all(processes)
            _keep_logs(root)
            raise
        finally:
            if events is not None:
                events.close()
            _stop_all(processes)
            if label:
                _remove_containers(label)

    print(f"owner_pause: medians of {ROUNDS}: " + _line(ways, None), file=sys.stderr)
    owner, direct, docker = ways
    pause = statistics.median(step.done for step in owner.pauses)
    own_part = statistics.median(step.done for step in direct.pauses)
    baseline = statistics.median(step.done for step in docker.pauses)
    resume = statistics.median(step.done for step in owner.resumes)
    return [
        Figure("owner_pause_latency", pause, "s", "<=", LATENCY_TARGET),
        Figure("owner_pause_ratio", own_part / baseline, "x", "<=", RATIO_TARGET),
        Figure("owner_resume_latency", resume, "s", "<=", LATENCY_TARGET),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.line(), flush=True)
