"""`submit --wait` outlives a manager restart (it waits for the manager and follows the
workflow to its end), and Ctrl-C stops only the client, saying the workflow goes on."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    node_command,
    unique_cluster,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SLOW = (
    '[workflow]\nname = "slow"\n\n[[tasks]]\nname = "late"\n'
    'command = ["sh", "-c", "sleep 4; echo done > /output/late.txt"]\n'
    'outputs = ["late.txt"]\n'
)


def pool(daemons: Daemons) -> tuple[Daemon, list[str]]:
    """A coordinator, a manager (returned with the flags it was started with) and a volunteer."""
    common = ["--cluster", unique_cluster(), "--heartbeat", "0.5", "--no-mdns"]
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", *common
    )
    coordinator_address = coordinator.address()
    manager_args = ["--role", "manager", "--coordinator", coordinator_address, *common]
    manager = daemons.start("manager", *manager_args, "--listen", "127.0.0.1:0")
    manager.address()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--listen", "127.0.0.1:0",
        "--coordinator", coordinator_address, *common,
    )  # fmt: skip
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(coordinator_address), 15, "join")
    return manager, manager_args


def submit_and_wait(manager_address: str, workflow: Path) -> subprocess.Popen[str]:
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
    manager, manager_args = pool(daemons)
    address = manager.address()
    workflow = tmp_path / "slow.toml"
    workflow.write_text(SLOW)
    client = submit_and_wait(address, workflow)
    try:
        wait_until(lambda: running_task(address), 30, "the task to run")
        assert manager.terminate() == 0, manager.log
        restarted = daemons.start(
            "manager", *manager_args, "--listen", address, data_dir=manager.data_dir
        )
        assert restarted.address() == address
        stdout, stderr = client.communicate(timeout=90)
    finally:
        client.kill()
    assert client.returncode == 0, stderr + restarted.log
    assert json.loads(stdout)["state"] == "completed"
    assert "the manager went away; waiting for it (the workflow goes on)" in stderr


def test_ctrl_c_stops_the_client_and_not_the_workflow(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = pool(daemons)
    address = manager.address()
    workflow = tmp_path / "slow.toml"
    workflow.write_text(SLOW)
    client = submit_and_wait(address, workflow)
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
