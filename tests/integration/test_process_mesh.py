"""Volunteers without Docker: the process runtime only where the owner opted in, and said."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    unique_cluster,
    wait_until,
)

pytestmark = pytest.mark.integration

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
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


def test_process_runtime_runs_tasks_and_is_shown_unisolated(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--heartbeat", "0.5"]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = manager.address()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--allow-process-runtime", *common, env=NO_DOCKER
    )
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 15, "volunteer to join")
    [listed] = cli_json("volunteers", "--coordinator", address)
    assert listed["runtime"] == "process (UNISOLATED)"
    assert listed["isolated"] is False

    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "plain.toml"
    workflow.write_text(WORKFLOW.replace("{python}", sys.executable))
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--wait", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr + volunteer.log
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    out = tmp_path / "out"
    run_cli("results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "out.txt").read_text() == "HELLO"
    assert "UNISOLATED" in volunteer.log


def test_without_docker_or_opt_in_a_task_is_unschedulable_and_says_why(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--heartbeat", "0.5"]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = manager.address()
    volunteer = daemons.start("volunteer", "--role", "volunteer", *common, env=NO_DOCKER)
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 15, "volunteer to join")
    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "plain.toml"
    workflow.write_text(WORKFLOW.replace("{python}", sys.executable))
    submitted = cli_json("submit", str(workflow), "--data-dir", str(manager.data_dir))
    workflow_id = submitted["workflow_id"]

    def unschedulable() -> str | None:
        status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
        error: str = status["tasks"][0]["error"]
        return error if error.startswith("unschedulable") else None

    reason = wait_until(unschedulable, 15, "the task to be reported unschedulable")
    assert "has no Docker engine and does not allow the process runtime" in reason
