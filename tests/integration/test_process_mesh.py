"""Volunteers without Docker: the process runtime only where the owner opted in, and said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness import (
    NO_DOCKER,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
    wait_until,
)

pytestmark = pytest.mark.integration

WORKFLOW = """
[workflow]
name = "plain"

[[tasks]]
name = "upper"
command = [
    "{python}", "-c",
    "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())",
    "/input/in.txt", "/output/out.txt",
]
inputs = ["in.txt"]
outputs = ["out.txt"]
"""


def test_process_runtime_runs_tasks_and_is_shown_apart(daemons: Daemons, tmp_path: Path) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    [listed] = cli_json("volunteers", "--coordinator", address)
    assert listed["runtime"] == "process (sandbox)"
    assert listed["isolated"] is False

    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "plain.toml"
    workflow.write_text(WORKFLOW.replace("{python}", "python3"))
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--wait", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr + volunteer.log
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    out = tmp_path / "out"
    run_cli("results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "upper" / "out.txt").read_text() == "HELLO"
    assert "bubblewrap sandbox" in volunteer.log


def test_without_docker_or_opt_in_a_task_is_refused_as_unschedulable_and_says_why(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, env=NO_DOCKER)
    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "plain.toml"
    workflow.write_text(WORKFLOW.replace("{python}", "python3"))
    submitted = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert f"{workflow}:5: tasks[0]: task upper is unschedulable" in submitted.stderr
    assert "has no Docker engine and does not allow the process runtime" in submitted.stderr
    assert "--allow-process-runtime" in submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []


# Runs for ten minutes: long past any deadline below.
LONG_TASK = '[workflow]\nname = "long"\n\n[[tasks]]\nname = "wait"\ncommand = ["sleep", "600"]\n'


def test_a_volunteer_stopped_by_its_owner_hands_its_task_on_at_once(
    daemons: Daemons, tmp_path: Path
) -> None:
    """SIGTERM: the volunteer stops its task and says goodbye, and the coordinator offers the
    task elsewhere. With a 20 s heartbeat a silent volunteer counts as lost only after 60 s;
    the deadlines below are far shorter."""
    manager, volunteers = start_pool(
        daemons, "--allow-process-runtime", volunteers=2, env=NO_DOCKER, heartbeat="20"
    )
    workflow = tmp_path / "long.toml"
    workflow.write_text(LONG_TASK)
    submitted = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir), "--json")
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = json.loads(submitted.stdout)["workflow_id"]

    def runner() -> str | None:
        [task] = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))["tasks"]
        return str(task["volunteer_id"]) if task["state"] == "running" else None

    first = wait_until(runner, 15, "the task to run")
    stopped = next(v for v in volunteers if v.node_id == first)
    assert stopped.terminate() == 0, stopped.log

    listed = {v["id"]: v for v in cli_json("volunteers", "--data-dir", str(manager.data_dir))}
    assert listed[first]["state"] == "left", "it said goodbye before it exited"
    second = wait_until(lambda: (r := runner()) != first and r, 15, "the task to run elsewhere")
    [task] = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))["tasks"]
    assert (task["attempts"], task["volunteer_id"]) == (2, second)
    assert "left: its owner stopped it" in manager.log


def test_a_volunteer_that_cannot_sandbox_its_tasks_refuses_to_start(
    daemons: Daemons, tmp_path: Path
) -> None:
    bare = tmp_path / "bin"  # a PATH without bwrap, setpriv or prlimit
    bare.mkdir()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--allow-process-runtime", "--no-mdns",
        "--coordinator", "127.0.0.1:9", "--listen", "127.0.0.1:0",
        env={**NO_DOCKER, "PATH": str(bare)},
    )  # fmt: skip
    assert volunteer.wait_exit() == 2, volunteer.log
    assert "no Docker engine, and the process runtime runs tasks in a sandbox" in volunteer.log
    assert "needs bwrap, setpriv, prlimit" in volunteer.log
