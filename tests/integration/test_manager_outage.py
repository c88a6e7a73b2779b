"""A manager that goes away mid-task loses nothing: the volunteer keeps the outputs and
delivers them when the manager is back (or, for outputs small enough to travel inline with
the result, the coordinator keeps them in its events), and the manager catches up on the
events it missed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemons,
    cli_json,
    run_cli,
    start_split_pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


# An output over daemon/inline.py's MAX_FILE_BYTES is uploaded; a small one rides with the
# result through the coordinator.
LARGE = ("seq 1 2000", "upload of late.txt", "a failed upload attempt")
SMALL = ("echo done", ") completed", "the volunteer to report the result")


@pytest.mark.parametrize(("writer", "log_line", "what"), [LARGE, SMALL], ids=["upload", "inline"])
def test_outputs_reach_a_manager_that_was_down_when_the_task_ended(
    daemons: Daemons, tmp_path: Path, worker_image: str, writer: str, log_line: str, what: str
) -> None:
    pool = start_split_pool(daemons)
    manager, manager_args, volunteer = pool.manager, pool.manager_args, pool.volunteer
    manager_address = manager.address()

    workflow = tmp_path / "slow.toml"
    workflow.write_text(
        '[workflow]\nname = "slow"\n\n[[tasks]]\nname = "late"\n'
        f'command = ["sh", "-c", "sleep 3; {writer} > /output/late.txt"]\n'
        'outputs = ["late.txt"]\n'
    )
    workflow_id = cli_json("submit", str(workflow), "--manager", manager_address)["workflow_id"]
    wait_until(
        lambda: (
            cli_json("status", workflow_id, "--manager", manager_address)["tasks"][0]["state"]
            == "running"
        ),
        30,
        "the task to run",
    )
    manager.kill()
    wait_until(lambda: log_line in volunteer.log, 30, what)

    restarted = daemons.start(
        "manager", *manager_args, "--listen", manager_address, data_dir=manager.data_dir
    )
    assert restarted.address() == manager_address

    def finished() -> dict[str, object] | None:
        status: dict[str, object] = cli_json("status", workflow_id, "--manager", manager_address)
        return status if status["state"] in ("completed", "failed") else None

    status = wait_until(finished, 60, "the workflow to finish after the manager came back")
    assert status["state"] == "completed", status
    out = tmp_path / "out"
    listing = json.loads(
        run_cli(
            "results", workflow_id, "--manager", manager_address, "-o", str(out), "--json"
        ).stdout
    )
    assert [item["name"] for item in listing] == ["late/late.txt"]
    expected = subprocess.run(["sh", "-c", writer], capture_output=True, check=True).stdout
    assert (out / "late" / "late.txt").read_bytes() == expected
