"""What checking results costs, and how soon it stops a cheat: real daemons, real Docker.

- validation_overhead_ratio: wall time of a 100-task workflow under `validation =
  "adaptive"` on a pool whose volunteers are all trusted (they joined with a vouched token;
  the default `spot_check_rate` 0.05 still sends a second copy of ~1 task in 20), divided
  by the same workflow under `validation = "none"`, on the same pool, from `node submit
  --wait` starting to it exiting. PAIRS pairs back to back, which goes first alternating;
  the figure is the median of the pairs' ratios. The extra copies each adaptive run cost
  (`status WF --json` -> validation_cost.extra_copies) and the daemons' CPU go to stderr.
- cheater_caught_tasks: how many copies a volunteer that corrupts every output
  (tests/fixtures/tampering, VCNODE_TAMPER=every) completes in a whole workflow of
  CHEAT_TASKS tasks under `validation = "adaptive"`, `spot_check_rate = 0.1`, in a pool of
  HONEST vouched volunteers it joins unvouched (on probation: every result of its is
  checked, and it takes its next task only once the last was judged). Counted from the
  manager's manager.db after the run (each task's validation JSON: copies whose
  volunteer_id is the cheat's and whose state is "completed"), every completed copy in the
  workflow, those finished just before the blocklisting too. A count has no same-run
  baseline: the target (5) is the baseline. A cheat never blocklisted counts as infinite.
- cheater_vouched_tasks, cheater_vouched_forged_accepted: the same with the cheat joined
  *vouched* (trusted from the start, so only spot checks, its own or of results it was sent
  to check, catch it), in a workflow of VOUCHED_CHEAT_TASKS tasks: the copies it completed,
  and how many of its forged results stood unchecked as the tasks' results. No target: these
  say what spot checks alone let through (expected ~1/rate + 1 copies, all but the last two
  or so accepted), and their lines say so. `python -m benchmarks cheater_caught_tasks`
  prints the one line it names; the vouched cheat's numbers are on stderr as well.

Daemons are `python -m cli daemon` processes on loopback, joined with tokens made through
the coordinator (every channel mutual TLS), as in benchmarks/task_overhead.py. Daemons are
stopped and temp dirs removed even on failure (their logs kept on failure).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.daemons import (
    cli,
    cli_json,
    completed,
    join_token,
    start_daemon,
    stop,
    wait_for_address,
)
from benchmarks.report import Figure

REPO = Path(__file__).resolve().parents[1]
IMAGE = "vcnode/worker:1"
TAMPERING = REPO / "tests" / "fixtures" / "tampering"

# validation_overhead_ratio
TASKS = 100
VOLUNTEERS = 3
PAIRS = 5
OVERHEAD_TARGET = 1.10
# cheater_caught_tasks
HONEST = 3
CHEAT_TASKS = 40
CHEAT_SPOT_CHECK_RATE = 0.1
CHEAT_TARGET = 5
# Enough that a vouched cheat with a quarter of the work is spot-checked twice (its first
# disagreement ends its vouching; the next, checked under probation, blocklists it): it
# runs ~50 copies, and 0.9 ** 50 is 0.5 %.
VOUCHED_CHEAT_TASKS = 200

JOIN_TIMEOUT = 30.0
RUN_TIMEOUT = 300.0


# --- a pool of real daemons ---------------------------------------------------------------


@dataclass
class Pool:
    """A coordinator+manager and volunteers under `root`, in a cluster of their own."""

    root: Path
    tag: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    volunteers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    manager: subprocess.Popen[bytes] | None = None

    @property
    def manager_dir(self) -> Path:
        return self.root / "manager"

    def _common(self) -> list[str]:
        return ["--listen", "127.0.0.1:0", "--cluster", f"bench-{self.tag}"]

    def start_manager(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.manager = start_daemon(
            self.manager_dir, "--role", "coordinator,manager", *self._common()
        )
        self.processes.append(self.manager)
        wait_for_address(self.manager, self.manager_dir)

    def add_volunteer(self, name: str, token: str, env: dict[str, str] | None = None) -> str:
        """Starts a volunteer of one slot joining with `token`; returns its node id."""
        data_dir = self.root / name
        process = start_daemon(
            data_dir, "--role", "volunteer", "--max-concurrent-tasks", "1",
            "--token", token, *self._common(), env=env,
        )  # fmt: skip
        self.processes.append(process)
        wait_for_address(process, data_dir)
        node_id = (data_dir / "node_id").read_text().strip()
        self.volunteers[node_id] = process
        return node_id

    def wait_for_volunteers(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while time.monotonic() < deadline:
            if set(self.volunteers) <= {v["id"] for v in self.listing() if v.get("connected")}:
                return
            time.sleep(0.2)
        raise RuntimeError(f"volunteers did not all join within {JOIN_TIMEOUT:g} s")

    def listing(self) -> list[dict[str, Any]]:
        result = cli("volunteers", "--data-dir", str(self.manager_dir), "--json")
        return list(json.loads(result.stdout)) if result.returncode == 0 else []

    def trust_of(self, node_id: str) -> dict[str, Any]:
        for volunteer in self.listing():
            if volunteer["id"] == node_id:
                return dict(volunteer["trust"])
        raise RuntimeError(f"volunteer {node_id} not in the coordinator's listing")

    def submit(self, workflow: Path, expected: int) -> tuple[str, float]:
        """Runs `node submit --wait`; returns the workflow id and the wall time."""
        began = time.perf_counter()
        result = cli(
            "submit", str(workflow), "--data-dir", str(self.manager_dir), "--wait", "--json",
            timeout=RUN_TIMEOUT,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
        reply = completed(result, expected)
        return str(reply["workflow_id"]), elapsed

    def status(self, workflow_id: str) -> dict[str, Any]:
        status: dict[str, Any] = cli_json(
            "status", workflow_id, "--data-dir", str(self.manager_dir)
        )
        return status

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU used so far by the coordinator+manager, and by the volunteers together."""
        assert self.manager is not None
        return _cpu(self.manager), sum(_cpu(p) for p in self.volunteers.values())

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                stop(process)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def keep_logs(self, what: str) -> None:
        """On failure the daemons' logs outlive the temp dir, for whoever looks next."""
        kept = Path(tempfile.mkdtemp(prefix=f"vcnode-bench-{what}-logs-"))
        for log in self.root.glob("*.log"):
            shutil.copy(log, kept / log.name)
        print(f"{what}: daemon logs kept in {kept}", file=sys.stderr)


def _cpu(process: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(process.pid).cpu_times()
    return float(times.user + times.system)


def _write_workflow(path: Path, name: str, count: int, workflow_keys: str) -> Path:
    """`count` explicit tasks, each writing a small output of its own with `sh -c`."""
    lines = [f'[workflow]\nname = "{name}"\n{workflow_keys}']
    for i in range(count):
        command = ["sh", "-c", f"echo {name} {i} > /output/out.txt"]
        lines.append(
            f'[[tasks]]\nname = "t{i:03d}"\nimage = "{IMAGE}"\n'
            f'command = {json.dumps(command)}\noutputs = ["out.txt"]\n'
        )
    path.write_text("\n".join(lines))
    return path


def _ensure_image() -> None:
    found = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, check=False
    ).returncode
    if found != 0:
        subprocess.run(["bash", str(REPO / "images/worker/build.sh"), IMAGE], check=True)


def _copies(manager_dir: Path, workflow_id: str) -> list[tuple[str, dict[str, Any], int]]:
    """(task name, copy, the task's accepted copy number) of every copy of every replicated
    task of the workflow, from the manager's database (read-only; the manager stopped)."""
    uri = f"file:{manager_dir / 'manager.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(
            "SELECT name, validation FROM tasks WHERE workflow_id = ? AND validation IS NOT NULL",
            (workflow_id,),
        ).fetchall()
    found = []
    for name, text in rows:
        validation = json.loads(text)
        found += [(name, copy, int(validation["accepted"])) for copy in validation["copies"]]
    return found


# --- validation_overhead_ratio --------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    seconds: float
    extra_copies: int
    manager_cpu: float
    volunteers_cpu: float


def _timed(pool: Pool, workflow: Path) -> _Run:
    cpu_before = pool.cpu_seconds()
    workflow_id, seconds = pool.submit(workflow, TASKS)
    cpu_after = pool.cpu_seconds()
    extra = int(pool.status(workflow_id)["validation_cost"]["extra_copies"])
    return _Run(seconds, extra, cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])


def run_overhead() -> list[Figure]:
    _ensure_image()
    token = uuid.uuid4().hex[:10]
    pairs: list[tuple[_Run, _Run]] = []
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-validation-") as tmp:
        root = Path(tmp)
        pool = Pool(root / "pool", token)
        try:
            pool.start_manager()
            vouched = join_token(pool.manager_dir, vouched=True)
            for i in range(VOLUNTEERS):
                pool.add_volunteer(f"volunteer-{i}", vouched)
            pool.wait_for_volunteers()
            # Every volunteer meets the image once before the clock runs.
            warm = _write_workflow(root / "warm.toml", f"warm-{token}", 2 * VOLUNTEERS, "")
            pool.submit(warm, 2 * VOLUNTEERS)
            for index in range(PAIRS):
                tag = f"{token}-{index}"
                none = _write_workflow(
                    root / f"none-{index}.toml", f"none-{tag}", TASKS, 'validation = "none"\n'
                )
                adaptive = _write_workflow(
                    root / f"adaptive-{index}.toml",
                    f"adaptive-{tag}",
                    TASKS,
                    'validation = "adaptive"\n',
                )
                # Which goes first alternates: what the first leaves behind (Docker's
                # cleanup, dirty pages) does not always fall on the same side.
                if index % 2:
                    checked = _timed(pool, adaptive)
                    unchecked = _timed(pool, none)
                else:
                    unchecked = _timed(pool, none)
                    checked = _timed(pool, adaptive)
                pairs.append((checked, unchecked))
                print(
                    f"validation_overhead: pair {index + 1}: {TASKS} tasks on {VOLUNTEERS} "
                    f"vouched volunteers: adaptive {checked.seconds:.2f} s "
                    f"({checked.extra_copies} extra copies), none {unchecked.seconds:.2f} s, "
                    f"ratio {checked.seconds / unchecked.seconds:.3f}; daemon CPU adaptive "
                    f"{checked.manager_cpu:.2f} s coordinator+manager, "
                    f"{checked.volunteers_cpu:.2f} s volunteers; none "
                    f"{unchecked.manager_cpu:.2f} s, {unchecked.volunteers_cpu:.2f} s",
                    file=sys.stderr,
                )
        except BaseException:
            pool.stop()
            pool.keep_logs("validation-overhead")
            raise
        finally:
            pool.stop()
            _remove_containers(pool.volunteers)
    ratio = statistics.median(c.seconds / u.seconds for c, u in pairs)
    extra = [c.extra_copies for c, _ in pairs]
    print(
        f"validation_overhead: extra copies per adaptive run: {', '.join(map(str, extra))} "
        f"(expected ~{TASKS * 0.05:g} at spot_check_rate 0.05)",
        file=sys.stderr,
    )
    return [Figure("validation_overhead_ratio", ratio, "x", "<=", OVERHEAD_TARGET)]


# --- cheater_caught_tasks ---------------------------------------------------------------------


@dataclass(frozen=True)
class NoTarget(Figure):
    """A figure given for context: it has no target, and its line says so (and why)."""

    note: str = ""

    @property
    def passed(self) -> bool:
        return True

    def line(self) -> str:
        return f"bench {self.name} {self.value:.3g} {self.unit} no target ({self.note})"


@dataclass(frozen=True)
class _Caught:
    completed: int  # copies of the cheat's that completed, in the whole workflow
    accepted_unchecked: int  # of those, forged results that stood as their task's
    disagreed: int  # of those, judged against honest copies
    blocklisted: bool
    seconds: float


def _cheat(root: Path, token: str, vouched_cheat: bool, tasks: int) -> _Caught:
    pool = Pool(root, token)
    try:
        pool.start_manager()
        vouched = join_token(pool.manager_dir, vouched=True)
        for i in range(HONEST):
            pool.add_volunteer(f"honest-{i}", vouched)
        cheat_token = vouched if vouched_cheat else join_token(pool.manager_dir)
        # The fixture goes before the venv's own paths; VCNODE_TAMPER=every: every output.
        path = os.pathsep.join(filter(None, [str(TAMPERING), os.environ.get("PYTHONPATH")]))
        cheat = pool.add_volunteer(
            "cheat", cheat_token, env={"PYTHONPATH": path, "VCNODE_TAMPER": "every"}
        )
        pool.wait_for_volunteers()
        workflow = _write_workflow(
            root.parent / f"{root.name}.toml",
            f"cheat-{token}",
            tasks,
            f'validation = "adaptive"\nspot_check_rate = {CHEAT_SPOT_CHECK_RATE}\n',
        )
        workflow_id, seconds = pool.submit(workflow, tasks)
        deadline = time.monotonic() + 20
        while not (trust := pool.trust_of(cheat))["blocklisted"] and time.monotonic() < deadline:
            time.sleep(0.2)
    except BaseException:
        pool.stop()
        pool.keep_logs("cheater-caught")
        raise
    finally:
        pool.stop()
        _remove_containers(pool.volunteers)
    copies = _copies(pool.manager_dir, workflow_id)
    mine = [(c, accepted) for _, c, accepted in copies if c["volunteer_id"] == cheat]
    completed = [(c, accepted) for c, accepted in mine if c["state"] == "completed"]
    return _Caught(
        completed=len(completed),
        accepted_unchecked=sum(
            c["verdict"] == "unchecked" and c["number"] == accepted for c, accepted in completed
        ),
        disagreed=sum(c["verdict"] == "disagreed" for c, _ in completed),
        blocklisted=bool(trust["blocklisted"]),
        seconds=seconds,
    )


def run_cheater() -> list[Figure]:
    _ensure_image()
    token = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-cheater-") as tmp:
        root = Path(tmp)
        unvouched = _cheat(root / "unvouched", f"{token}-u", False, CHEAT_TASKS)
        vouched = _cheat(root / "vouched", f"{token}-v", True, VOUCHED_CHEAT_TASKS)
    for what, caught, tasks in (
        ("unvouched", unvouched, CHEAT_TASKS),
        ("vouched", vouched, VOUCHED_CHEAT_TASKS),
    ):
        print(
            f"cheater_caught: {what} cheat among {HONEST} vouched honest volunteers, "
            f"{tasks} tasks, spot_check_rate {CHEAT_SPOT_CHECK_RATE}: completed "
            f"{caught.completed} copies ({caught.disagreed} judged disagreeing, "
            f"{caught.accepted_unchecked} forged results accepted unchecked), "
            f"{'blocklisted' if caught.blocklisted else 'NOT blocklisted'}; workflow "
            f"{caught.seconds:.1f} s",
            file=sys.stderr,
        )

    def count(caught: _Caught, what: str) -> float:
        return float(getattr(caught, what)) if caught.blocklisted else float("inf")

    return [
        # No same-run baseline exists for a count: the target is the baseline.
        Figure("cheater_caught_tasks", count(unvouched, "completed"), "tasks", "<=", CHEAT_TARGET),
        NoTarget(
            "cheater_vouched_tasks",
            count(vouched, "completed"),
            "tasks",
            "",
            0,
            note=f"a vouched cheat, caught by spot checks alone: expected ~1/rate + 1 = "
            f"{1 / CHEAT_SPOT_CHECK_RATE + 1:g}",
        ),
        NoTarget(
            "cheater_vouched_forged_accepted",
            count(vouched, "accepted_unchecked"),
            "results",
            "",
            0,
            note="that cheat's forged results that stood unchecked as their tasks' results",
        ),
    ]


# --- cleanup --------------------------------------------------------------------------------


def _remove_containers(volunteer_ids: Iterable[str]) -> None:
    """Task containers these volunteers left behind (each removes its own; one stopped
    mid-task may not have): every container is labelled with its volunteer's id."""
    from daemon.runtime.docker import OWNER_LABEL

    for volunteer_id in volunteer_ids:
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={volunteer_id}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if listed:
            subprocess.run(["docker", "rm", "-f", *listed], capture_output=True, check=False)


def run() -> list[Figure]:
    return run_overhead() + run_cheater()


if __name__ == "__main__":
    for figure in run():
        print(figure.line(), flush=True)
