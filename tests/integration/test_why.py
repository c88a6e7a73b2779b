"""`vcnode status WF --why`: each waiting task explained against each volunteer of the pool,
through real daemons (HTCondor's `condor_q -better-analyze`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    unique_cluster,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def test_why_names_the_disk_cap_and_the_busy_volunteer_and_the_dependency(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    common = ["--listen", "127.0.0.1:0", "--cluster", unique_cluster(), "--heartbeat", "0.5"]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = manager.address()
    small = daemons.start("small", "--role", "volunteer", "--max-disk-mb", "50", *common)
    roomy = daemons.start("roomy", "--role", "volunteer", *common)
    ids = {small.address() and small.node_id, roomy.address() and roomy.node_id}
    wait_until(lambda: ids <= set(list_volunteers(address)), 20, "the volunteers")
    sleeper = '["sh", "-c", "sleep 30; echo x > /output/o"]'
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{n}"\ncommand = {sleeper}\noutputs = ["o"]\n'
        "resources = { disk_mb = 64 }\n"
        for n in range(3)
    )
    tasks += '\n[[tasks]]\nname = "after"\ncommand = ["true"]\ndepends_on = ["t0"]\n'
    workflow = tmp_path / "w.toml"
    workflow.write_text(f'[workflow]\nname = "w"\nvalidation = "none"\n{tasks}')
    data = ["--data-dir", str(manager.data_dir)]
    workflow_id = cli_json("submit", str(workflow), *data)["workflow_id"]

    def busy() -> bool:
        # roomy holds two (one running, one fetched ahead) and says so in its heartbeat.
        volunteer = list_volunteers(address).get(roomy.node_id)
        return volunteer is not None and volunteer.load.running_tasks >= 2

    wait_until(busy, 30, "the roomy volunteer to hold two tasks")
    explained = cli_json("status", workflow_id, "--why", *data)
    assert explained["pool_unknown"] == ""
    by_name = {task["name"]: task for task in explained["tasks"]}
    assert set(by_name) == {"t0", "t1", "t2", "after"} - _held(manager, workflow_id)
    queued = next(task for name, task in by_name.items() if name != "after")
    groups = {group["reason"]: group["volunteer_ids"] for group in queued["groups"]}
    assert groups == {
        "not enough disk: needs 64 MiB, may use 50": [small.node_id],
        "busy until a slot frees (holds 2 tasks, runs 1 at once)": [roomy.node_id],
    }
    assert by_name["after"]["groups"] == [
        {"reason": "waits for t0 to complete", "volunteer_ids": []}
    ]
    text = run_cli("status", workflow_id, "--why", queued["name"], *data).stdout
    assert f"task {queued['name']} (queued)" in text
    assert f"1 volunteer: not enough disk: needs 64 MiB, may use 50 ({small.node_id[:8]})" in text
    # Asking about a task that is not there, or with no right to, says so.
    missing = run_cli("status", workflow_id, "--why", "nope", *data)
    assert missing.returncode != 0
    assert "has no task 'nope'" in missing.stderr
    assert run_cli("cancel", workflow_id, *data).returncode == 0


def _held(manager: Daemon, workflow_id: str) -> set[str]:
    """The tasks the roomy volunteer holds (one running, one fetched ahead of its slot),
    which have nothing to explain."""
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    return {task["name"] for task in status["tasks"] if task["state"] in ("running", "fetching")}
