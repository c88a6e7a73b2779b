"""`vcnode history` on a volunteer shows what ran there, with its figures: real daemons, real
Docker, one task that burns CPU and holds memory, and one handed back by a drain."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.harness import Daemons, cli_json, run_cli, start_split_pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

# ~1 s of CPU with ~100 MiB held, then a 64 KiB output (uploaded, not inline).
HEAVY = (
    "import time\n"
    "held = bytearray(100 * 1024 * 1024)\n"
    "for i in range(0, len(held), 4096): held[i] = 1\n"
    "end = time.process_time() + 1.0\n"
    "while time.process_time() < end: pass\n"
    "open('/output/out.bin', 'wb').write(bytes(64 * 1024))\n"
)


def test_history_shows_a_finished_task_with_its_figures(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons)
    manager, volunteer = pool.manager, pool.volunteer
    path = tmp_path / "heavy.toml"
    path.write_text(
        '[workflow]\nname = "heavy"\nvalidation = "none"\n\n[[tasks]]\nname = "t0"\n'
        'outputs = ["out.bin"]\nresources = { memory_mb = 256 }\n'
        f'command = ["python3", "-c", {json.dumps(HEAVY)}]\n'
    )
    before = time.time()
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

    history = wait_until(
        lambda: cli_json("history", "--data-dir", str(volunteer.data_dir))["tasks"],
        15,
        "the task in the history",
    )
    [ran] = history
    assert ran["workflow_id"] == workflow_id
    assert ran["task_id"].endswith("t0")
    assert (ran["outcome"], ran["exit_code"]) == ("completed", 0), ran
    assert ran["manager_id"] == manager.node_id
    assert ran["image"] == "vcnode/worker:1"
    assert before <= ran["received_at"] <= ran["started_at"] <= ran["finished_at"] <= time.time()
    assert ran["cpu_seconds"] >= 0.8, ran
    assert ran["peak_memory_mb"] >= 90, ran
    assert ran["bytes_out"] >= 64 * 1024, ran
    [day] = cli_json("history", "--data-dir", str(volunteer.data_dir))["days"]
    assert (day["tasks"], day["completed"], day["failed"]) == (1, 1, 0), day

    text = run_cli("history", "--data-dir", str(volunteer.data_dir))
    assert text.returncode == 0, text.stderr
    assert "heavy" in text.stdout or workflow_id in text.stdout, text.stdout
    assert "vcnode/worker:1" in text.stdout, text.stdout
