"""A revoked member is refused beyond the coordinator: a manager of its own asks the
coordinator whom it revoked, and refuses them too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import Daemons, run_cli, start_split_pool, wait_until

pytestmark = pytest.mark.integration


def test_a_manager_of_its_own_refuses_a_person_the_coordinator_revoked(
    daemons: Daemons, tmp_path: Path
) -> None:
    pool = start_split_pool(daemons)  # coordinator, manager and volunteer: three daemons
    coordinator_dir = str(daemons.root / "coordinator")
    made = run_cli(
        "token", "create", "--role", "user", "--name", "alice", "--data-dir", coordinator_dir,
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    alice = {"XDG_CONFIG_HOME": str(tmp_path / "alice"), "PATH": "/usr/bin:/bin"}
    assert run_cli("login", token["token"], env=alice).returncode == 0
    manager = pool.manager.address()

    def listing() -> subprocess.CompletedProcess[str]:
        return run_cli("workflows", "--manager", manager, "--json", env=alice)

    assert listing().returncode == 0, listing().stderr
    revoked = run_cli("token", "revoke", token["token_id"], "--data-dir", coordinator_dir)
    assert revoked.returncode == 0, revoked.stderr

    def refusal() -> subprocess.CompletedProcess[str] | None:
        result = listing()
        return result if result.returncode != 0 else None

    refused = wait_until(refusal, 10, "the manager to refuse")
    assert refused.returncode == 4, refused.stderr
    assert "was revoked from this cluster" in refused.stderr
