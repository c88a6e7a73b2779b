"""Results you can believe, through the whole mesh: real daemons, real Docker, and a real
volunteer made bad by tests/fixtures/tampering (it flips the last byte of every output its
tasks write, before hashing and sending them, so its forged results carry matching sha256s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitters.blocks import generate
from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    start_split_pool,
    unique_cluster,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TAMPERING = Path(__file__).resolve().parents[1] / "fixtures" / "tampering"


def start_pool(
    daemons: Daemons, honest: int, tamperer: str = "", tamperer_vouched: bool = False
) -> tuple[Daemon, list[Daemon], Daemon | None]:
    """A coordinator+manager, `honest` vouched volunteers and, with `tamperer` ("every" or
    "once"), one more that corrupts its outputs (not vouched unless asked)."""
    common = ["--listen", "127.0.0.1:0", "--cluster", unique_cluster(), "--heartbeat", "0.5"]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = manager.address()
    volunteers = [
        daemons.start(f"honest-{i}", "--role", "volunteer", *common) for i in range(honest)
    ]
    bad = None
    if tamperer:
        env = {"PYTHONPATH": str(TAMPERING), "VCNODE_TAMPER": tamperer}
        bad = daemons.start(
            "tamperer", "--role", "volunteer", *common, env=env, vouched=tamperer_vouched
        )
    everyone = [*volunteers, *([bad] if bad else [])]
    ids = {v.address() and v.node_id for v in everyone}
    wait_until(
        lambda: ids <= {vid for vid, v in list_volunteers(address).items() if v.connected},
        20,
        "volunteers to join",
    )
    return manager, volunteers, bad


def submit(manager: Daemon, workflow: Path) -> dict[str, Any]:
    result = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--json", "--wait",
        timeout=300,
    )  # fmt: skip
    assert result.stdout, f"submit printed nothing: {result.stderr}\n{manager.log}"
    reply: dict[str, Any] = json.loads(result.stdout)
    reply["exit_code"] = result.returncode
    reply["stderr"] = result.stderr
    return reply


def trust_of(manager: Daemon, volunteer: Daemon) -> dict[str, Any]:
    listing = cli_json("volunteers", "--data-dir", str(manager.data_dir))
    (found,) = [v for v in listing if v["id"] == volunteer.node_id]
    return dict(found["trust"])


def copies_of(manager: Daemon, workflow_id: str, task: str) -> list[dict[str, Any]]:
    status = cli_json("status", workflow_id, "--task", task, "--data-dir", str(manager.data_dir))
    (row,) = status["tasks"]
    return list(row.get("copy_details", []))


def test_a_volunteer_corrupting_one_output_byte_is_outvoted_and_loses_trust(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _, bad = start_pool(daemons, honest=2, tamperer="every")
    assert bad is not None
    workflow = tmp_path / "matmul.toml"
    workflow.write_text(
        '[workflow]\nname = "mm"\ntype = "matrix_multiplication"\nvalidation = "quorum"\n\n'
        "[parameters]\nsize = 96\nseed = 5\nblocks = 3\n"
    )
    reply = submit(manager, workflow)
    assert reply["exit_code"] == 0, reply
    workflow_id = reply["workflow_id"]
    out = tmp_path / "results"
    fetched = run_cli("results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    a, b = generate(96, 5)
    # The honest product, though one volunteer of three corrupted every block it computed.
    np.testing.assert_allclose(np.load(out / "C.npy"), a @ b, rtol=1e-12, atol=1e-9)
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    tampered = []
    for task in status["tasks"]:
        assert task["copies"] >= 2
        assert task["agreeing"] >= 2
        for copy in copies_of(manager, workflow_id, task["name"]):
            if copy["volunteer_id"] == bad.node_id:
                tampered.append(copy)
                assert copy["verdict"] in ("disagreed", "")  # "" only if it came too late
    assert tampered, "the tampering volunteer ran no copy: the test proved nothing"
    assert any(copy["verdict"] == "disagreed" for copy in tampered)
    trust = trust_of(manager, bad)
    assert trust["disagreed"] >= 1
    assert trust["agreed"] == 0
    assert status["validation_cost"]["extra_copies"] >= 9


def test_a_volunteer_forging_every_result_is_blocklisted_and_none_of_its_outputs_count(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, honest, cheat = start_pool(daemons, honest=2, tamperer="every")
    assert cheat is not None
    count = 48  # enough that the cheat, one task per verdict, runs at least two
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{n}"\ncommand = ["sh", "-c", "echo {n} > /output/out.txt"]\n'
        'outputs = ["out.txt"]\n'
        for n in range(count)
    )
    workflow = tmp_path / "many.toml"
    workflow.write_text(f'[workflow]\nname = "many"\nvalidation = "adaptive"\n{tasks}')
    reply = submit(manager, workflow)
    assert reply["exit_code"] == 0, reply
    workflow_id = reply["workflow_id"]
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    completed_by_cheat = 0
    for task in status["tasks"]:
        copies = copies_of(manager, workflow_id, task["name"])
        standing = [c for c in copies if c["verdict"] in ("agreed", "unchecked")]
        assert standing, task
        assert all(c["volunteer_id"] != cheat.node_id for c in standing), task
        # The result is the honest one ("N\n"), never the flipped "N\x0b".
        expected = hashlib.sha256(f"{task['name'][1:]}\n".encode()).hexdigest()
        assert [ref["sha256"] for ref in standing[0]["outputs"]] == [expected], task
        completed_by_cheat += sum(
            c["volunteer_id"] == cheat.node_id and c["state"] == "completed" for c in copies
        )
    trust = wait_until(
        lambda: (t := trust_of(manager, cheat))["blocklisted"] and t, 20, "the blocklisting"
    )
    assert trust["agreed"] == 0
    assert "disagreed with other volunteers" in trust["blocklist_reason"]
    assert completed_by_cheat <= 5, f"the cheat completed {completed_by_cheat} tasks first"
    # The honest volunteers were vouched for and never disagreed.
    for volunteer in honest:
        assert trust_of(manager, volunteer)["disagreed"] == 0
    listing = run_cli("volunteers", "--data-dir", str(manager.data_dir)).stdout
    assert f"{cheat.node_id[:8]} is blocklisted" in listing

    # Its owner sees it on that machine, with the reason.
    def blocklisted_here() -> str | None:
        text = run_cli("status", "--data-dir", str(cheat.data_dir)).stdout
        return text if "BLOCKLISTED" in text else None

    seen = wait_until(blocklisted_here, 20, "the blocklisting in the volunteer's own status")
    assert "disagreed with other volunteers" in seen
    assert cli_json("status", "--data-dir", str(cheat.data_dir))["trust"]["blocklisted"]
    # An admin lifts it; the volunteer hears at once.
    cleared = run_cli(
        "volunteers", "--clear-trust", cheat.node_id, "--data-dir", str(manager.data_dir)
    )
    assert cleared.returncode == 0, cleared.stderr
    assert "trust record cleared" in cleared.stdout
    assert not trust_of(manager, cheat)["blocklisted"]
    wait_until(
        lambda: not cli_json("status", "--data-dir", str(cheat.data_dir))["trust"]["blocklisted"],
        20,
        "the volunteer to hear it was cleared",
    )
    unknown = run_cli("volunteers", "--clear-trust", "nobody", "--data-dir", str(manager.data_dir))
    assert unknown.returncode != 0
    assert "no volunteer 'nobody' in this pool" in unknown.stderr


def test_quorum_on_a_pool_of_one_volunteer_is_refused_with_the_reason(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _, _ = start_pool(daemons, honest=1)
    workflow = tmp_path / "q.toml"
    workflow.write_text(
        '[workflow]\nname = "q"\nvalidation = "quorum"\n\n[[tasks]]\nname = "one"\n'
        'command = ["true"]\n'
    )
    result = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "workflow.quorum" in result.stderr
    assert "2 distinct volunteers" in result.stderr
    assert "1 of the 1 online can run it" in result.stderr


def test_copies_and_verdicts_survive_a_manager_restart_and_count_once(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    """The manager is killed while copies run and started again at its address: every task
    still ends with two agreeing copies, and the coordinator counted each verdict once
    (the restarted manager reports them all again)."""
    pool = start_split_pool(daemons, volunteers=2)
    manager, manager_args = pool.manager, pool.manager_args
    coordinator_address, manager_address = pool.coordinator_address, manager.address()
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{n}"\n'
        f'command = ["sh", "-c", "sleep 2; echo {n} > /output/out.txt"]\noutputs = ["out.txt"]\n'
        for n in range(3)
    )
    workflow = tmp_path / "q.toml"
    workflow.write_text(f'[workflow]\nname = "q"\nvalidation = "quorum"\n{tasks}')
    workflow_id = cli_json("submit", str(workflow), "--manager", manager_address)["workflow_id"]
    wait_until(
        lambda: cli_json("status", workflow_id, "--manager", manager_address)["counts"]["running"],
        30,
        "copies to run",
    )
    manager.kill()
    restarted = daemons.start(
        "manager", *manager_args, "--listen", manager_address, data_dir=manager.data_dir
    )
    assert restarted.address() == manager_address

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cli_json("status", workflow_id, "--manager", manager_address)
        return status if status["state"] in ("completed", "failed") else None

    status = wait_until(finished, 90, "the workflow to end after the restart")
    assert status["state"] == "completed", status
    for task in status["tasks"]:
        assert (task["copies"], task["agreeing"]) == (2, 2), task
    listing = cli_json("volunteers", "--coordinator", coordinator_address)

    def agreed() -> int | None:
        listing = cli_json("volunteers", "--coordinator", coordinator_address)
        total = sum(v["trust"]["agreed"] for v in listing)
        return total if total >= 6 else None

    assert wait_until(agreed, 20, "the verdicts to reach the coordinator") == 6
    assert all(v["trust"]["disagreed"] == 0 for v in listing)


def test_a_trusted_cheat_once_caught_has_its_unchecked_results_checked_after_all(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    """Vouched for, the cheat's results stand unchecked until a spot check catches it; then
    those of the workflow still going are checked after all, and none stays the result."""
    manager, _, cheat = start_pool(daemons, honest=2, tamperer="every", tamperer_vouched=True)
    assert cheat is not None
    count = 40
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{n}"\ncommand = ["sh", "-c", "echo {n} > /output/out.txt"]\n'
        'outputs = ["out.txt"]\n'
        for n in range(count)
    )
    workflow = tmp_path / "many.toml"
    workflow.write_text(
        f'[workflow]\nname = "many"\nvalidation = "adaptive"\nspot_check_rate = 0.5\n{tasks}'
    )
    reply = submit(manager, workflow)
    assert reply["exit_code"] == 0, reply
    workflow_id = reply["workflow_id"]
    assert trust_of(manager, cheat)["disagreed"] >= 1, "the cheat was never caught"
    rechecked = 0
    for task in cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))["tasks"]:
        copies = copies_of(manager, workflow_id, task["name"])
        standing = [c for c in copies if c["verdict"] in ("agreed", "unchecked")]
        assert standing, task
        expected = hashlib.sha256(f"{task['name'][1:]}\n".encode()).hexdigest()
        assert [ref["sha256"] for ref in standing[0]["outputs"]] == [expected], task
        rechecked += any(
            c["volunteer_id"] == cheat.node_id and c["verdict"] == "disagreed" for c in copies
        )
    assert rechecked >= 1
