"""The owner's caps bound the whole machine: `--max-cpus 1 --max-memory-mb 300
--max-concurrent-tasks 3` used to run three containers of 1 CPU and 256 MiB at once (3 CPUs,
768 MiB); real daemons and Docker show them run one at a time, each to completion."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.integration.harness import Daemons, cli_json, run_cli, start_split_pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TASKS = 3


def test_three_tasks_under_a_one_cpu_cap_run_one_at_a_time(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    caps = ("--max-cpus", "1", "--max-memory-mb", "300", "--max-concurrent-tasks", "3")
    pool = start_split_pool(daemons, volunteer_args=caps)
    manager, volunteer = pool.manager, pool.volunteer
    path = tmp_path / "capped.toml"
    path.write_text(
        '[workflow]\nname = "capped"\nvalidation = "none"\n'
        + "".join(
            f'\n[[tasks]]\nname = "t{i}"\noutputs = ["o"]\n'
            "resources = { cpus = 1, memory_mb = 256 }\n"
            'command = ["sh", "-c", "sleep 1; echo done > /output/o"]\n'
            for i in range(TASKS)
        )
    )
    submitted = run_cli("submit", str(path), "--manager", manager.address(), "--json")
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    most_running = 0

    def ended() -> bool:
        nonlocal most_running
        status = cli_json("status", workflow_id, "--manager", manager.address())
        most_running = max(most_running, status["counts"]["running"])
        return bool(status["state"] != "running")

    wait_until(ended, 120, "the workflow to end")
    status = cli_json("status", workflow_id, "--manager", manager.address())
    assert status["state"] == "completed", status
    assert most_running <= 1, f"{most_running} tasks ran at once under a 1-CPU cap"
    # The volunteer's own record: their containers' lives never overlapped.
    ran = sorted(
        (entry["started_at"], entry["finished_at"])
        for entry in cli_json("history", "--data-dir", str(volunteer.data_dir))["tasks"]
    )
    assert len(ran) == TASKS
    for (_, first_end), (second_start, _) in itertools.pairwise(ran):
        assert second_start >= first_end, f"two containers ran at once: {ran}"


# Two seconds of wall clock spent spinning, then a pause for the last usage reading (the
# volunteer reads the container's cgroup once a second while it runs).
SPIN = (
    "import time\n"
    "end = time.time() + 2.0\n"
    "while time.time() < end: pass\n"
    "time.sleep(1.5)\n"
    "open('/output/o', 'w').write('spun')\n"
)


def test_a_cpu_throttle_holds_a_task_to_its_share_of_the_cpu(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons, volunteer_args=("--cpu-throttle-percent", "25"))
    manager, volunteer = pool.manager, pool.volunteer
    path = tmp_path / "spin.toml"
    path.write_text(
        '[workflow]\nname = "spin"\nvalidation = "none"\n\n[[tasks]]\nname = "t0"\n'
        f'outputs = ["o"]\ncommand = ["python3", "-c", {json.dumps(SPIN)}]\n'
    )
    submitted = run_cli("submit", str(path), "--manager", manager.address(), "--json")
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    wait_until(
        lambda: (
            cli_json("status", workflow_id, "--manager", manager.address())["state"] == "completed"
        ),
        120,
        "the workflow to complete",
    )
    [ran] = cli_json("history", "--data-dir", str(volunteer.data_dir))["tasks"]
    # Unthrottled it spins 2 CPU seconds; a quarter of a CPU gives it 0.5.
    assert 0.3 <= ran["cpu_seconds"] <= 0.8, ran
