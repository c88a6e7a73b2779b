"""DAGs through the whole mesh: data flowing from task to task, and `--resume` after a
failure running only the branch that did not complete."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
)
from tests.integration.test_tasks_end_to_end import start_mesh, submit

pytestmark = pytest.mark.integration

# One script for every step, so the workflow files stay readable: `numbers` writes 1..4,
# `map F` applies F to each number, `total` sums every file it reads.
STEP = """\
import pathlib, socket, sys
step, out = sys.argv[1], pathlib.Path(sys.argv[2])
args = sys.argv[3:]
if step == "numbers":
    out.write_text("1 2 3 4")
elif step == "map":
    factor, source = int(args[0]), pathlib.Path(args[1])
    out.write_text(" ".join(str(int(n) ** factor) for n in source.read_text().split()))
elif step == "needs":
    try:
        socket.create_connection(("127.0.0.1", int(args[0])), timeout=2).close()
    except OSError:
        sys.exit(f"nothing listens on {args[0]} yet")
    out.write_text("0")
elif step == "total":
    out.write_text(str(sum(int(n) for p in args for n in pathlib.Path(p).read_text().split())))
"""

THREE_LEVELS = """\
[workflow]
name = "levels"

[[tasks]]
name = "numbers"
command = ["{python}", "/input/step.py", "numbers", "/output/numbers.txt"]
inputs = ["step.py"]
outputs = ["numbers.txt"]

[[tasks]]
name = "squares"
command = ["{python}", "/input/step.py", "map", "/output/squares.txt", "2", "/input/in.txt"]
inputs = {{ "step.py" = "step.py", "in.txt" = {{ task = "numbers", output = "numbers.txt" }} }}
outputs = ["squares.txt"]

[[tasks]]
name = "cubes"
command = ["{python}", "/input/step.py", "map", "/output/cubes.txt", "3", "/input/in.txt"]
inputs = {{ "step.py" = "step.py", "in.txt" = {{ task = "numbers", output = "numbers.txt" }} }}
outputs = ["cubes.txt"]

[[tasks]]
name = "total"
command = ["{python}", "/input/step.py", "total", "/output/total.txt", "/input/s", "/input/c"]
outputs = ["total.txt"]

[tasks.inputs]
"step.py" = "step.py"
s = {{ task = "squares", output = "squares.txt" }}
c = {{ task = "cubes", output = "cubes.txt" }}
"""


def write_workflow(tmp_path: Path, text: str, python: str) -> Path:
    (tmp_path / "step.py").write_text(STEP)
    workflow = tmp_path / "workflow.toml"
    workflow.write_text(text.format(python=python))
    return workflow


@pytest.mark.docker
def test_outputs_flow_down_three_levels_in_containers(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = write_workflow(tmp_path, THREE_LEVELS, "python3")
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    out = tmp_path / "out"
    fetched = run_cli(
        "results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out)
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "squares" / "squares.txt").read_text() == "1 4 9 16"
    assert (out / "cubes" / "cubes.txt").read_text() == "1 8 27 64"
    assert (out / "total" / "total.txt").read_text() == str(30 + 100)


# b needs something the test opens only after the first run failed: a port of this host's
# loopback to listen on (so b asks for the network, which its volunteer allows).
BRANCH_FAILS = """\
[workflow]
name = "rescue"

[[tasks]]
name = "a"
command = ["{python}", "/input/step.py", "numbers", "/output/a.txt"]
inputs = ["step.py"]
outputs = ["a.txt"]

[[tasks]]
name = "b"
command = ["{python}", "/input/step.py", "needs", "/output/b.txt", "{marker}"]
inputs = ["step.py"]
outputs = ["b.txt"]
network = true
depends_on = ["a"]

[[tasks]]
name = "c"
command = ["{python}", "/input/step.py", "map", "/output/c.txt", "2", "/input/a.txt"]
inputs = {{ "step.py" = "step.py", "a.txt" = {{ task = "a", output = "a.txt" }} }}
outputs = ["c.txt"]

[[tasks]]
name = "d"
command = ["{python}", "/input/step.py", "total", "/output/d.txt", "/input/b.txt", "/input/c.txt"]
outputs = ["d.txt"]

[tasks.inputs]
"step.py" = "step.py"
"b.txt" = {{ task = "b", output = "b.txt" }}
"c.txt" = {{ task = "c", output = "c.txt" }}
"""


def start_process_mesh(daemons: Daemons) -> Daemon:
    """A manager and one volunteer that runs tasks as sandboxed processes, with the host's
    network when they ask: a task can then depend on a port of this host, which is how the
    test decides when `b` may succeed."""
    manager, _ = start_pool(daemons, "--allow-process-runtime", "--allow-network", env=NO_DOCKER)
    return manager


@pytest.fixture
def marker() -> Iterator[socket.socket]:
    """A port of this host's loopback that nothing listens on until the test says so."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield reserved


def task_rows(manager: Daemon, workflow_id: str) -> dict[str, dict[str, Any]]:
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    return {task["name"]: task for task in status["tasks"]}


def test_resume_runs_only_the_branch_that_did_not_complete(
    daemons: Daemons, tmp_path: Path, marker: socket.socket
) -> None:
    manager = start_process_mesh(daemons)
    text = BRANCH_FAILS.replace("{marker}", str(marker.getsockname()[1]))
    workflow = write_workflow(tmp_path, text, "python3")

    first = submit(manager, workflow, "--wait")
    assert first["exit_code"] == 1, first
    workflow_id = first["workflow_id"]
    before = task_rows(manager, workflow_id)
    assert {name: row["state"] for name, row in before.items()} == {
        "a": "completed",
        "b": "failed",
        "c": "completed",
        "d": "skipped",
    }
    assert "nothing listens on" in before["b"]["error"]

    marker.listen()
    resumed = run_cli(
        "submit", "--resume", workflow_id, "--data-dir", str(manager.data_dir), "--wait", "--json"
    )
    assert resumed.returncode == 0, resumed.stderr + manager.log
    assert json.loads(resumed.stdout)["state"] == "completed"
    after = task_rows(manager, workflow_id)
    assert {row["state"] for row in after.values()} == {"completed"}
    # a and c kept their first (and only) attempt; b ran again, d for the first time.
    assert after["a"]["attempts"] == before["a"]["attempts"] == 1
    assert after["c"]["attempts"] == before["c"]["attempts"] == 1
    assert after["b"]["attempts"] == 2
    out = tmp_path / "out"
    run_cli("results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "d" / "d.txt").read_text() == "30", "b.txt holds 0, c.txt the squares of 1..4"


def test_resume_refuses_a_workflow_that_completed_or_does_not_exist(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager = start_process_mesh(daemons)
    workflow = write_workflow(tmp_path, THREE_LEVELS, "python3")
    done = submit(manager, workflow, "--wait")
    assert done["exit_code"] == 0, done
    again = run_cli("submit", "--resume", done["workflow_id"], "--data-dir", str(manager.data_dir))
    assert again.returncode != 0
    assert "completed: nothing to resume" in again.stderr
    unknown = run_cli("submit", "--resume", "nope-1234", "--data-dir", str(manager.data_dir))
    assert unknown.returncode != 0
    assert "no workflow 'nope-1234'" in unknown.stderr
    both = run_cli("submit", str(workflow), "--resume", "x", "--data-dir", str(manager.data_dir))
    assert both.returncode == 2
    assert "not both" in both.stderr


@pytest.mark.docker
def test_the_init_example_dag_runs_as_written(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_mesh(daemons)
    workflow = tmp_path / "pipeline.toml"
    assert run_cli("init", "tasks", "-o", str(workflow)).returncode == 0
    reply = submit(manager, workflow, "--wait")
    assert reply["exit_code"] == 0, reply
    out = tmp_path / "out"
    run_cli("results", reply["workflow_id"], "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "total" / "total.txt").read_text().strip() == str(
        sum(n * n for n in range(1, 101))
    )


def test_on_failure_fail_fails_the_dependents_and_resume_still_runs_them(
    daemons: Daemons, tmp_path: Path, marker: socket.socket
) -> None:
    manager = start_process_mesh(daemons)
    text = BRANCH_FAILS.replace("{marker}", str(marker.getsockname()[1])).replace(
        'name = "rescue"\n', 'name = "rescue"\non_failure = "fail"\n'
    )
    workflow = write_workflow(tmp_path, text, "python3")
    first = submit(manager, workflow, "--wait")
    assert first["exit_code"] == 1, first
    rows = task_rows(manager, first["workflow_id"])
    assert (rows["d"]["state"], rows["d"]["error"]) == ("failed", "failed: b did not complete")
    printed = run_cli("status", first["workflow_id"], "--data-dir", str(manager.data_dir))
    assert f"vcnode submit --resume {first['workflow_id']}" in printed.stdout
    marker.listen()
    resumed = run_cli(
        "submit", "--resume", first["workflow_id"], "--data-dir", str(manager.data_dir),
        "--wait", "--json",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
