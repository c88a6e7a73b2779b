"""Workflows through the whole mesh: real daemons as processes, real Docker, real files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.inline import MAX_FILE_BYTES
from splitters.blocks import generate
from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

HEARTBEAT = "0.5"


def start_mesh(daemons: Daemons, volunteers: int = 2) -> tuple[Daemon, list[Daemon]]:
    return start_pool(daemons, volunteers=volunteers, heartbeat=HEARTBEAT)


def submit(manager: Daemon, workflow: Path, *extra: str) -> dict[str, Any]:
    result = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--json", *extra, timeout=240
    )
    assert result.stdout, f"submit printed nothing: {result.stderr}\n{manager.log}"
    reply: dict[str, Any] = json.loads(result.stdout)
    reply["exit_code"] = result.returncode
    return reply


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_matrix_multiplication_merges_to_the_true_product(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = write(
        tmp_path / "matmul.toml",
        '[workflow]\nname = "mm"\ntype = "matrix_multiplication"\n\n'
        "[parameters]\nsize = 96\nseed = 11\nblocks = 2\n",
    )
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    assert reply["state"] == "completed"
    assert reply["counts"]["completed"] == 4
    out = tmp_path / "results"
    assert (
        run_cli(
            "results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out)
        ).returncode
        == 0
    )
    a, b = generate(96, 11)
    np.testing.assert_allclose(np.load(out / "C.npy"), a @ b, rtol=1e-12, atol=1e-9)


def test_failing_tasks_end_failed_with_their_reason(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = write(
        tmp_path / "failures.toml",
        """
[workflow]
name = "failures"

[[tasks]]
name = "fine"
command = ["sh", "-c", "echo ok > /output/ok.txt"]
outputs = ["ok.txt"]

[[tasks]]
name = "hungry"
command = ["python3", "-c", "x = bytearray(400 * 1024 * 1024); print(len(x))"]
resources = { memory_mb = 64 }

[[tasks]]
name = "slow"
command = ["sleep", "60"]
timeout = 2

[[tasks]]
name = "broken"
command = ["sh", "-c", "echo boom >&2; exit 3"]
""",
    )
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 1
    assert reply["state"] == "failed"
    status = cli_json("status", reply["workflow_id"], "--data-dir", str(manager.data_dir))
    tasks = {task["name"]: task for task in status["tasks"]}
    assert tasks["fine"]["state"] == "completed"
    assert tasks["hungry"]["state"] == "failed"
    assert tasks["hungry"]["error"] == "out of memory: needed more than its 64 MiB limit (killed)"
    assert tasks["slow"]["error"] == "timed out after 2 s (killed)"
    assert tasks["broken"]["error"] == "exited with code 3: boom"
    text = run_cli("status", reply["workflow_id"], "--data-dir", str(manager.data_dir)).stdout
    assert "timed out after 2 s (killed)" in text


def test_a_task_sees_no_network_no_root_and_only_output_writable(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons, volunteers=1)
    write(tmp_path / "data.txt", "input data")
    probe = (
        "exec > /output/report.txt 2>&1;"
        " echo uid=$(id -u);"
        " echo interfaces=$(cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | tr '\\n' ,);"
        # No route anywhere: checked without sending a packet.
        " echo routes=$(tail -n +2 /proc/net/route | wc -l);"
        " touch /etc/x 2>/dev/null && echo root_fs=writable || echo root_fs=readonly;"
        " touch /input/x 2>/dev/null && echo input=writable || echo input=readonly;"
        " cat /input/data.txt; echo"
    )
    workflow = write(
        tmp_path / "probe.toml",
        f"""
[workflow]
name = "probe"

[[tasks]]
name = "probe"
command = ["sh", "-c", {json.dumps(probe)}]
inputs = ["data.txt"]
outputs = ["report.txt"]
""",
    )
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    out = tmp_path / "results"
    run_cli("results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out))
    report = (out / "probe" / "report.txt").read_text().split("\n")
    assert report[:6] == [
        "uid=65534",
        "interfaces=lo,",
        "routes=0",
        "root_fs=readonly",
        "input=readonly",
        "input data",
    ]


def test_killing_a_volunteer_mid_task_still_completes_once(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, volunteers = start_mesh(daemons)
    tasks = "".join(
        f"""
[[tasks]]
name = "step-{i}"
command = ["sh", "-c", "sleep 2; echo {i} > /output/out-{i}.txt"]
outputs = ["out-{i}.txt"]
"""
        for i in range(4)
    )
    workflow = write(tmp_path / "steps.toml", '[workflow]\nname = "steps"\n' + tasks)
    reply = submit(manager, workflow)
    workflow_id = reply["workflow_id"]
    victim = volunteers[0]

    def running_on_victim() -> dict[str, Any] | None:
        status: dict[str, Any] = cli_json(
            "status", workflow_id, "--data-dir", str(manager.data_dir)
        )
        running = any(
            t["state"] == "running" and t["volunteer_id"] == victim.node_id for t in status["tasks"]
        )
        return status if running else None

    status = wait_until(running_on_victim, 30, "a task to run on the victim")
    assert status["state"] == "running", "a workflow with a task running is running"
    victim.kill()

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cli_json(
            "status", workflow_id, "--data-dir", str(manager.data_dir)
        )
        return status if status["state"] in ("completed", "failed") else None

    status = wait_until(finished, 90, "the workflow to finish")
    assert status["state"] == "completed", status
    assert any(t["attempts"] >= 2 for t in status["tasks"]), "no task was retried"
    out = tmp_path / "results"
    listing = json.loads(
        run_cli(
            "results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out), "--json"
        ).stdout
    )
    assert sorted(item["name"] for item in listing) == [f"step-{i}/out-{i}.txt" for i in range(4)]
    for i in range(4):
        assert (out / f"step-{i}" / f"out-{i}.txt").read_text().strip() == str(i)

    # Restarted, the victim removes the container its killed self left behind.
    assert containers_of(victim.node_id), "the killed volunteer left no container to clean"
    daemons.start(victim.data_dir.name, *victim.args, data_dir=victim.data_dir).address()
    wait_until(lambda: not containers_of(victim.node_id), 30, "leftover containers removed")


def containers_of(volunteer_id: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=vcnode.volunteer={volunteer_id}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listing.stdout.split()


def test_cancel_stops_running_containers(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    tasks = "".join(
        f'\n[[tasks]]\nname = "long-{i}"\ncommand = ["sleep", "300"]\n' for i in range(3)
    )
    workflow = write(tmp_path / "long.toml", '[workflow]\nname = "long"\n' + tasks)
    workflow_id = submit(manager, workflow)["workflow_id"]

    def running_containers() -> list[str]:
        labels = subprocess.run(
            ["docker", "ps", "--format", "{{.Labels}}", "--filter", "label=vcnode.run"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [line for line in labels.splitlines() if workflow_id in line]

    wait_until(lambda: len(running_containers()) == 2, 30, "two containers running")
    cancelled = run_cli("cancel", workflow_id, "--data-dir", str(manager.data_dir))
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: running_containers() == [], 30, "the containers to be stopped")
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    assert status["state"] == "cancelled"
    assert {t["state"] for t in status["tasks"]} == {"cancelled"}

    again = run_cli("cancel", workflow_id, "--data-dir", str(manager.data_dir))
    assert again.returncode == 2
    assert f"workflow {workflow_id} has ended (cancelled): nothing to cancel" in again.stderr
    unknown = run_cli("cancel", "no-such-workflow", "--data-dir", str(manager.data_dir))
    assert unknown.returncode == 1
    assert "no workflow 'no-such-workflow' on this manager" in unknown.stderr


def test_tasks_run_in_dependency_order(daemons: Daemons, tmp_path: Path, worker_image: str) -> None:
    manager, _ = start_mesh(daemons)
    clock = "python3 -c 'import time; print(repr(time.time()))'"
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    tasks = "".join(
        f"""
[[tasks]]
name = "{name}"
command = ["sh", "-c", "{clock} > /output/{name}.txt; sleep 0.5; {clock} >> /output/{name}.txt"]
outputs = ["{name}.txt"]
depends_on = {json.dumps(deps)}
"""
        for name, deps in graph.items()
    )
    # Its outputs are clock readings: no two runs of a task agree, so no copies.
    header = '[workflow]\nname = "dag"\nvalidation = "none"\n'
    workflow = write(tmp_path / "dag.toml", header + tasks)
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    out = tmp_path / "out"
    run_cli("results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out))
    spans = {
        name: [float(t) for t in (out / name / f"{name}.txt").read_text().split()] for name in graph
    }
    for name, deps in graph.items():
        for dep in deps:
            assert spans[name][0] >= spans[dep][1], f"{name} started before {dep} ended"


def test_small_files_travel_inline_and_large_ones_by_transfer(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, (volunteer,) = start_mesh(daemons, volunteers=1)
    small = write(tmp_path / "small.txt", "a few bytes\n").read_bytes()
    large_path = tmp_path / "large.bin"
    large_path.write_bytes(os.urandom(3 * MAX_FILE_BYTES))
    large = large_path.read_bytes()
    tasks = "".join(
        f'\n[[tasks]]\nname = "{name}"\ncommand = ["sh", "-c", "cp /input/in /output/{name}"]\n'
        f'inputs = {{ in = "{source}" }}\noutputs = ["{name}"]\n'
        for name, source in (("small", "small.txt"), ("large", "large.bin"))
    )
    workflow = write(tmp_path / "sizes.toml", '[workflow]\nname = "sizes"\n' + tasks)
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    out = tmp_path / "out"
    run_cli("results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "small" / "small").read_bytes() == small
    assert (out / "large" / "large").read_bytes() == large

    # Only the large input went through the volunteer's blob cache (TransferService).
    cached = {p.name for p in (volunteer.data_dir / "blobs" / "complete").rglob("*") if p.is_file()}
    assert hashlib.sha256(large).hexdigest() in cached
    assert hashlib.sha256(small).hexdigest() not in cached
    # Only the small output came back inside the result, through the coordinator.
    with sqlite3.connect(manager.data_dir / "coordinator.db") as db:
        rows = db.execute("SELECT subject, data FROM events WHERE kind = 'completed'").fetchall()
    carried = {
        subject.rpartition(".")[2]: json.loads(data)["result"]["inline_outputs"]
        for subject, data in rows
    }
    assert carried["large"] == []
    assert [blob["sha256"] for blob in carried["small"]] == [hashlib.sha256(small).hexdigest()]
