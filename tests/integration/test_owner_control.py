"""The machine's owner controls a running volunteer (`vcnode pause`, `resume`, `drain`) through
the control socket in its data dir: real daemons as processes, real Docker. Pause freezes the
running container and resume lets it complete; a pause past the grace hands the task back;
drain lets the running task finish and takes no new one; nobody else may use the socket."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.transport.local_socket import socket_path
from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_split_pool,
    wait_until,
    why_waiting,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def workflow(tmp_path: Path, name: str, tasks: int, steps: int) -> Path:
    """Tasks that count `steps` tenths of a second into /output/count.txt as they go, so a
    frozen one is seen to stop counting."""
    body = "".join(
        f'\n[[tasks]]\nname = "t{i}"\noutputs = ["count.txt"]\n'
        f'command = ["sh", "-c", "i=0; while [ $i -lt {steps} ]; do i=$((i+1)); '
        f'echo $i > /output/count.txt; sleep 0.1; done"]\n'
        for i in range(tasks)
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[workflow]\nname = "{name}"\nvalidation = "none"\n{body}')
    return path


def submit(manager: Daemon, path: Path) -> str:
    submitted = run_cli("submit", str(path), "--manager", manager.address(), "--json")
    assert submitted.returncode == 0, submitted.stderr + manager.log
    return str(json.loads(submitted.stdout)["workflow_id"])


def task_states(manager: Daemon, workflow_id: str) -> dict[str, str]:
    status = cli_json("status", workflow_id, "--manager", manager.address())
    return {task["name"]: task["state"] for task in status["tasks"]}


def row_when(
    manager: Daemon, workflow_id: str, check: Callable[[dict[str, Any]], bool]
) -> Callable[[], dict[str, Any] | None]:
    """For wait_until: the workflow's first task as `status` shows it, once `check` holds."""

    def look() -> dict[str, Any] | None:
        status = cli_json("status", workflow_id, "--manager", manager.address())
        row: dict[str, Any] = status["tasks"][0]
        return row if check(row) else None

    return look


def containers(volunteer: Daemon) -> dict[str, str]:
    """The volunteer's task containers: name -> state (running, paused, ...)."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=vcnode.volunteer={volunteer.node_id}",
         "--format", "{{.Names}} {{.State}}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return dict(line.split(" ", 1) for line in listed.splitlines() if line)


def owner(volunteer: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--data-dir", str(volunteer.data_dir))


def test_pause_freezes_the_running_container_and_resume_lets_it_complete(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons)
    volunteer, manager = pool.volunteer, pool.manager
    workflow_id = submit(manager, workflow(tmp_path, "frozen", tasks=1, steps=60))
    wait_until(lambda: task_states(manager, workflow_id)["t0"] == "running", 60, "t0 to run")
    wait_until(lambda: "running" in containers(volunteer).values(), 30, "its container")

    paused = owner(volunteer, "pause")
    assert paused.returncode == 0, paused.stderr + volunteer.log
    assert "paused by owner (until `vcnode resume`)" in paused.stdout, paused.stdout
    assert "t0 (frozen)" in paused.stdout, paused.stdout
    assert list(containers(volunteer).values()) == ["paused"], "frozen by the time pause returns"
    # The owner's `vcnode status` says so, with what runs and the machine's limits.
    shown = owner(volunteer, "status")
    assert shown.returncode == 0, shown.stderr
    assert "paused by owner (until `vcnode resume`)" in shown.stdout, shown.stdout
    assert "t0 (frozen)" in shown.stdout
    assert "limits    1 task at once" in shown.stdout
    work = cli_json("status", "--data-dir", str(volunteer.data_dir))["work"]
    assert [h["reason"] for h in work["holds"]] == ["paused by owner"], work
    assert [t["phase"] for t in work["tasks"]] == ["frozen"], work

    # The coordinator heard it: it offers the paused volunteer nothing, and says why.
    listed = run_cli("volunteers", "--coordinator", pool.coordinator_address)
    assert f"{volunteer.node_id[:8]} takes no tasks: paused by owner" in listed.stdout, listed
    other = submit(manager, workflow(tmp_path, "waits", tasks=1, steps=1))
    explained = wait_until(
        lambda: why_waiting(manager, other, "t0"), 30, "the new task's reasons to be known"
    )
    assert explained == {"takes no tasks now: paused by owner": [volunteer.node_id]}
    assert task_states(manager, other)["t0"] == "queued"
    assert task_states(manager, workflow_id)["t0"] == "running", "a frozen task still runs"

    resumed = owner(volunteer, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("working: takes tasks"), resumed.stdout
    wait_until(lambda: task_states(manager, workflow_id)["t0"] == "completed", 60, "t0 to complete")
    wait_until(lambda: task_states(manager, other)["t0"] == "completed", 60, "the other task")
    # It counted to the end: frozen, not restarted nor cut short.
    fetched = run_cli("results", workflow_id, "--manager", manager.address(), "-o",
                      str(tmp_path / "out"))  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    [count] = (tmp_path / "out").rglob("count.txt")
    assert count.read_text().strip() == "60"


def test_a_pause_longer_than_the_grace_hands_the_task_back_to_run_again(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons, volunteer_args=("--pause-grace", "2"))
    volunteer, manager = pool.volunteer, pool.manager
    workflow_id = submit(manager, workflow(tmp_path, "handed", tasks=1, steps=30))
    wait_until(lambda: "running" in containers(volunteer).values(), 60, "its container")

    paused = owner(volunteer, "pause")
    assert paused.returncode == 0, paused.stderr
    assert "its tasks go back to the pool at" in paused.stdout, paused.stdout
    # Past the grace: its container goes, and the task goes back to the pool.
    wait_until(lambda: not containers(volunteer), 30, "the frozen container to be removed")
    row = wait_until(
        row_when(manager, workflow_id, lambda row: row["state"] == "queued"),
        30,
        "the task to be queued again",
    )
    assert "paused by owner for over 2 s" in row["error"], row
    assert owner(volunteer, "resume").returncode == 0
    wait_until(
        lambda: task_states(manager, workflow_id)["t0"] == "completed", 90, "it to run again"
    )


def test_drain_lets_the_running_task_finish_and_takes_no_new_one(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons)
    volunteer, manager = pool.volunteer, pool.manager
    # One slot: t0 or t1 runs, the other is held fetched ahead, t2 waits.
    workflow_id = submit(manager, workflow(tmp_path, "drained", tasks=3, steps=40))
    wait_until(
        lambda: (
            sorted(task_states(manager, workflow_id).values()).count("running") == 1
            and "fetching" in task_states(manager, workflow_id).values()
        ),
        60,
        "one task running and one fetched ahead",
    )
    running = next(n for n, s in task_states(manager, workflow_id).items() if s == "running")

    drained = owner(volunteer, "drain", "--wait")
    assert drained.returncode == 0, drained.stderr + volunteer.log
    assert "drained (no task left)" in drained.stdout, drained.stdout
    states = task_states(manager, workflow_id)
    assert states[running] == "completed", states
    assert sorted(s for n, s in states.items() if n != running) == ["queued", "queued"], (
        "the one fetched ahead was handed back, and nothing new was taken"
    )
    status = cli_json("status", workflow_id, "--manager", manager.address())
    messages = " ".join(t["error"] for t in status["tasks"])
    assert "draining" in messages, status

    assert owner(volunteer, "resume").returncode == 0
    wait_until(
        lambda: set(task_states(manager, workflow_id).values()) == {"completed"},
        120,
        "the rest to run once resumed",
    )


def test_only_the_user_running_the_volunteer_may_open_its_control_socket(
    daemons: Daemons, tmp_path: Path
) -> None:
    pool = start_split_pool(daemons)
    volunteer = pool.volunteer
    path = socket_path(volunteer.data_dir)
    wait_until(lambda: path.exists(), 15, "the control socket")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert stat.S_IMODE(volunteer.data_dir.stat().st_mode) == 0o700
    # Another user on the machine cannot even reach it.
    connect = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except PermissionError:\n"
        "    sys.exit(13)\n"
    )
    stranger = subprocess.run(
        ["/usr/bin/python3", "-c", connect], user="nobody", capture_output=True, timeout=30
    )
    assert stranger.returncode == 13, stranger.stderr
    # The owner can; a data dir without a volunteer says so.
    assert owner(volunteer, "pause", "--for", "1h").returncode == 0
    cleared = owner(volunteer, "cache", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "cleared 0 cached blobs, 0 bytes freed (cap 20.0 GiB)"
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    missing = run_cli("resume", "--data-dir", str(empty))
    assert missing.returncode == 3, missing.stderr
    assert "no volunteer is running with data dir" in missing.stderr
    bad = run_cli("pause", "--for", "soon", "--data-dir", str(volunteer.data_dir))
    assert bad.returncode == 2
    assert "expected a duration such as 90s, 30m, 2h, 7d or 1h30m, not 'soon'" in bad.stderr
