"""Volunteers without Docker: the process runtime only where the owner opted in, and said."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.harness import (
    NO_DOCKER,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
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


def test_process_runtime_runs_tasks_and_is_shown_unisolated(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
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


def test_without_docker_or_opt_in_a_task_is_refused_as_unschedulable_and_says_why(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, env=NO_DOCKER)
    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "plain.toml"
    workflow.write_text(WORKFLOW.replace("{python}", sys.executable))
    submitted = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert f"{workflow}:5: tasks[0]: task upper is unschedulable" in submitted.stderr
    assert "has no Docker engine and does not allow the process runtime" in submitted.stderr
    assert "--allow-process-runtime" in submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []
