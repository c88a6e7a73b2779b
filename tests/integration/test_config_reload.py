"""A volunteer's owner changes its config file and the running daemon applies it, without a
restart: by `vcnode config reload` (the control socket) or SIGHUP (`systemctl reload`). Real
daemons as processes; what changes is seen where it matters, in the coordinator's view."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemon,
    Daemons,
    list_volunteers,
    run_cli,
    start_split_pool,
    wait_until,
)

pytestmark = pytest.mark.integration


def slots_seen(coordinator_address: str, volunteer: Daemon) -> int:
    listed = list_volunteers(coordinator_address)
    return int(listed[volunteer.node_id].limits.max_concurrent_tasks)


def test_a_changed_config_applies_without_a_restart(daemons: Daemons, tmp_path: Path) -> None:
    config = tmp_path / "volunteer.toml"
    config.write_text("[limits]\nmax_concurrent_tasks = 1\nallow_process_runtime = true\n")
    pool = start_split_pool(daemons, volunteer_args=("--config", str(config)))
    volunteer, address = pool.volunteer, pool.coordinator_address
    assert slots_seen(address, volunteer) == 1
    pid = volunteer.process.pid if volunteer.process else 0

    config.write_text("[limits]\nmax_concurrent_tasks = 3\nallow_process_runtime = true\n")
    reloaded = run_cli("config", "reload", "--data-dir", str(volunteer.data_dir))
    assert reloaded.returncode == 0, reloaded.stderr + volunteer.log
    assert reloaded.stdout.strip() == "reloaded: applied limits.max_concurrent_tasks"
    wait_until(lambda: slots_seen(address, volunteer) == 3, 15, "the coordinator to see 3 slots")
    shown = run_cli("status", "--data-dir", str(volunteer.data_dir))
    assert "limits    3 tasks at once" in shown.stdout, shown.stdout

    # A setting the daemon opened at its start waits for the next one, and says so.
    config.write_text(
        'log_format = "json"\n[limits]\nmax_concurrent_tasks = 2\nallow_process_runtime = true\n'
    )
    reloaded = run_cli("config", "reload", "--data-dir", str(volunteer.data_dir))
    assert reloaded.stdout.strip() == (
        "reloaded: applied limits.max_concurrent_tasks; log_format changed: applied at the next "
        "start"
    ), reloaded.stdout

    # A config with an error is refused; the one in use stays.
    config.write_text("[limits]\nmax_concurrent_tasks = -4\n")
    refused = run_cli("config", "reload", "--data-dir", str(volunteer.data_dir))
    assert refused.returncode == 2, refused.stdout
    assert "max_concurrent_tasks" in refused.stderr, refused.stderr
    assert slots_seen(address, volunteer) == 2

    # SIGHUP (what `systemctl reload vcnode` sends) does the same.
    config.write_text("[limits]\nmax_concurrent_tasks = 4\nallow_process_runtime = true\n")
    assert volunteer.process is not None
    volunteer.process.send_signal(signal.SIGHUP)
    wait_until(lambda: slots_seen(address, volunteer) == 4, 15, "SIGHUP's reload")
    assert "reloaded the configuration: applied limits.max_concurrent_tasks" in volunteer.log
    assert volunteer.process.pid == pid, "the same process all along"
