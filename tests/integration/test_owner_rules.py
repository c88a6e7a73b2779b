"""The owner's rules through real daemons (process runtime): a volunteer whose hours exclude
now takes no task and says until when, to its owner, to the coordinator and to the user
asking why a task waits; a volunteer whose hours include now runs it."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    start_split_pool,
    wait_until,
    why_waiting,
)

pytestmark = pytest.mark.integration

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def window(now: datetime, opens_in: timedelta, lasts: timedelta) -> tuple[str, datetime]:
    """HH:MM-HH:MM opening `opens_in` from now (to the minute), and when it opens."""
    opens = (now + opens_in).replace(second=0, microsecond=0)
    return f"{opens:%H:%M}-{opens + lasts:%H:%M}", opens


def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "hours.toml"
    path.write_text(
        '[workflow]\nname = "hours"\nvalidation = "none"\n'
        '\n[[tasks]]\nname = "t0"\noutputs = ["o"]\n'
        "command = [\"python3\", \"-c\", \"open('/output/o', 'w').write('done')\"]\n"
    )
    return path


def submit(manager: Daemon, path: Path) -> str:
    submitted = run_cli("submit", str(path), "--manager", manager.address(), "--json")
    assert submitted.returncode == 0, submitted.stderr + manager.log
    return str(json.loads(submitted.stdout)["workflow_id"])


def task_row(manager: Daemon, workflow_id: str) -> dict[str, str]:
    status = cli_json("status", workflow_id, "--manager", manager.address())
    [row] = status["tasks"]
    return dict(row)


def test_outside_its_hours_a_volunteer_takes_no_task_and_says_until_when(
    daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every daemon of the pool without Docker: tasks run in the process runtime, and the
    # manager pins no image (a normal setup for a manager).
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER["DOCKER_HOST"])
    now = datetime.now()
    closed, opens = window(now, timedelta(hours=2), timedelta(hours=2))
    pool = start_split_pool(
        daemons, volunteer_args=("--allow-process-runtime", "--schedule-hours", closed)
    )
    volunteer, manager = pool.volunteer, pool.manager
    vid = volunteer.node_id
    reason = f"outside its hours ({closed}) until {WEEKDAYS[opens.weekday()]} {opens:%H:%M}"

    # Its owner's view.
    shown = run_cli("status", "--data-dir", str(volunteer.data_dir))
    assert shown.returncode == 0, shown.stderr + volunteer.log
    assert reason in shown.stdout, shown.stdout
    work = cli_json("status", "--data-dir", str(volunteer.data_dir))["work"]
    assert [(h["name"], h["reason"]) for h in work["holds"]] == [("schedule", reason)], work
    assert work["holds"][0]["until"] == opens.timestamp()

    # The coordinator's.
    def coordinator_says() -> str | None:
        listed = run_cli("volunteers", "--coordinator", pool.coordinator_address)
        return listed.stdout if f"{vid[:8]} takes no tasks: {reason}" in listed.stdout else None

    wait_until(coordinator_says, 15, "the coordinator to hear the volunteer's hours")
    assert list_volunteers(pool.coordinator_address)[vid].load.unavailable == reason

    # A task waits, and the user asking why is told.
    workflow_id = submit(manager, workflow(tmp_path))
    explained = wait_until(
        lambda: why_waiting(manager, workflow_id, "t0"), 30, "the task's reasons"
    )
    assert explained == {f"takes no tasks now: {reason}": [vid]}
    assert task_row(manager, workflow_id)["state"] == "queued"

    # A volunteer whose hours include now runs it.
    cluster = pool.manager_args[pool.manager_args.index("--cluster") + 1]
    opened, _ = window(now, -timedelta(hours=1), timedelta(hours=3))
    runner = daemons.start(
        "open-hours", "--role", "volunteer", "--listen", "127.0.0.1:0",
        "--allow-process-runtime", "--schedule-hours", opened,
        "--coordinator", pool.coordinator_address, "--cluster", cluster,
        "--heartbeat", "0.5", "--no-mdns",
    )  # fmt: skip
    runner.address()
    wait_until(lambda: task_row(manager, workflow_id)["state"] == "completed", 60, "t0 to complete")
    assert task_row(manager, workflow_id)["volunteer_id"] == runner.node_id
    runner_work = cli_json("status", "--data-dir", str(runner.data_dir))["work"]
    assert runner_work["holds"] == []
    assert workflow_id not in volunteer.log, "never offered to the closed volunteer"


def test_service_install_writes_the_schedule_into_its_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed = run_cli(
        "service", "install", "--root", str(root), "--role", "volunteer",
        "--schedule-days", "mon-fri", "--schedule-hours", "18:00-08:00",
        "--schedule-idle-minutes", "10", "--schedule-on-battery",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    config = root / "etc/vcnode/daemon.toml"
    written = tomllib.loads(config.read_text())
    assert written["schedule"] == {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "hours": "18:00-08:00",
        "idle_minutes": 10,
        "on_battery": True,
    }
    # The daemon reads it back as given.
    printed = run_cli("daemon", "--config", str(config), "--print-config")
    assert printed.returncode == 0, printed.stderr
    schedule = printed.stdout[printed.stdout.index("[schedule]") :].splitlines()
    assert schedule[1] == f'days = ["mon", "tue", "wed", "thu", "fri"]  # {config} (schedule.days)'
    assert schedule[2] == f'hours = "18:00-08:00"  # {config} (schedule.hours)'
    assert schedule[4] == "max_other_load = 0.0  # default"
    # A wrong value is refused before anything is written.
    wrong = run_cli("service", "install", "--root", str(tmp_path / "other"), "--role",
                    "volunteer", "--schedule-hours", "evenings")  # fmt: skip
    assert wrong.returncode == 2
    assert "flag --schedule-hours: expected HH:MM-HH:MM" in wrong.stderr
    assert not (tmp_path / "other").exists()
