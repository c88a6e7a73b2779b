"""`submit --wait` outlives a manager restart (it waits for the manager and follows the
workflow to its end), and Ctrl-C stops only the client, saying the workflow goes on."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemons,
    cli_json,
    node_command,
    start_split_pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SLOW = (
    '[workflow]\nname = "slow"\n\n[[tasks]]\nname = "late"\n'
    'command = ["sh", "-c", "sleep 4; echo done > /output/late.txt"]\n'
    'outputs = ["late.txt"]\n'
)


def submit_and_wait(manager_address: str, tmp_path: Path) -> subprocess.Popen[str]:
    """`submit --wait` of a task that runs a few seconds, as a process of its own."""
    workflow = tmp_path / "slow.toml"
    workflow.write_text(SLOW)
    return subprocess.Popen(
        node_command("submit", str(workflow), "--manager", manager_address, "--wait", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def running_task(manager_address: str) -> str | None:
    listed = cli_json("workflows", "--manager", manager_address)
    if listed and listed[0]["counts"]["running"]:
        return str(listed[0]["workflow_id"])
    return None


def test_submit_wait_follows_its_workflow_across_a_manager_restart(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons)
    manager, address = pool.manager, pool.manager.address()
    client = submit_and_wait(address, tmp_path)
    try:
        wait_until(lambda: running_task(address), 30, "the task to run")
        assert manager.terminate() == 0, manager.log
        restarted = daemons.start(
            "manager", *pool.manager_args, "--listen", address, data_dir=manager.data_dir
        )
        assert restarted.address() == address
        stdout, stderr = client.communicate(timeout=90)
    finally:
        client.kill()
    assert client.returncode == 0, stderr + restarted.log
    assert json.loads(stdout)["state"] == "completed"


def test_ctrl_c_stops_the_client_and_not_the_workflow(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    address = start_split_pool(daemons).manager.address()
    client = submit_and_wait(address, tmp_path)
    try:
        workflow_id = wait_until(lambda: running_task(address), 30, "the task to run")
        client.send_signal(signal.SIGINT)
        _, stderr = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode == 130
    assert f"{workflow_id} goes on without you: 'vcnode watch {workflow_id}'" in stderr
    status = cli_json("status", workflow_id, "--manager", address)
    assert status["state"] in ("running", "completed"), status
