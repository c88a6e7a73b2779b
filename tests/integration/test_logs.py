"""A task's stdout and stderr reach the manager with its result and `vcnode logs` prints
them; a failure's reason quotes the stderr line that names the cause (real daemons, real
Docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness import Daemons, cli_json, run_cli, start_pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

WORKFLOW = r'''
[workflow]
name = "logs"
validation = "none"

[[tasks]]
name = "broken"
command = ["sh", "-c", """echo starting >&2; \
echo 'Error: unable to open primary document entity /om/scenario_48.xsd' >&2; \
seq 1 460 >&2; echo half-done; exit 67"""]

[[tasks]]
name = "chatty"
command = ["sh", "-c", "head -c 20971520 /dev/zero | tr '\\0' x; echo; echo THE-END"]
'''


def test_logs_travel_with_the_result_and_the_reason_names_the_cause(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_pool(daemons, volunteers=1)
    workflow = tmp_path / "logs.toml"
    workflow.write_text(WORKFLOW)
    data = ["--data-dir", str(manager.data_dir)]
    submitted = run_cli("submit", str(workflow), *data, "--json", "--wait", timeout=240)
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    status = cli_json("status", workflow_id, *data)
    tasks = {task["name"]: task for task in status["tasks"]}
    assert tasks["broken"]["error"] == (
        "exited with code 67: Error: unable to open primary document entity /om/scenario_48.xsd"
    )
    text = run_cli("status", workflow_id, *data).stdout
    assert f"vcnode logs {workflow_id} broken --stderr" in text

    stderr = run_cli("logs", workflow_id, "broken", "--stderr", *data)
    assert stderr.returncode == 0, stderr.stderr
    lines = stderr.stdout.splitlines()
    assert lines[:2] == [
        "starting",
        "Error: unable to open primary document entity /om/scenario_48.xsd",
    ]
    assert lines[-1] == "460"
    assert len(lines) == 462
    assert run_cli("logs", workflow_id, "broken", *data).stdout == "half-done\n"

    chatty = cli_json("logs", workflow_id, "chatty", *data)
    assert chatty["state"] == "completed"
    assert len(chatty["content"]) == 8 * 1024 * 1024
    assert chatty["content"].endswith("THE-END\n")
    assert chatty["note"] == "stdout: only the last 8 MiB"
    quiet = run_cli("logs", workflow_id, "chatty", "--stderr", *data)
    assert quiet.stdout == ""
    assert "chatty wrote nothing to stderr" in quiet.stderr
    missing = run_cli("logs", workflow_id, "nope", *data)
    assert missing.returncode != 0
    assert "has no task 'nope'" in missing.stderr


def test_watch_replays_an_ended_workflows_history(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_pool(daemons, volunteers=1)
    workflow = tmp_path / "two.toml"
    workflow.write_text(
        '[workflow]\nname = "two"\n\n[[tasks]]\nname = "a"\ncommand = ["true"]\n\n'
        '[[tasks]]\nname = "b"\ncommand = ["sh", "-c", "echo nope >&2; exit 3"]\n'
    )
    data = ["--data-dir", str(manager.data_dir)]
    submitted = run_cli("submit", str(workflow), *data, "--json", "--wait", timeout=240)
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    watched = run_cli("watch", workflow_id, *data, "--json")
    assert watched.returncode == 1  # it failed
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert {(e["task_id"], e["kind"]) for e in events[:-1]} == {
        (f"{workflow_id}.a", "completed"),
        (f"{workflow_id}.b", "failed"),
    }
    assert (events[-1]["task_id"], events[-1]["kind"]) == ("", "failed")
    # Each line carries the counts as they stood after it, as the progress bar shows them.
    counts = events[-1]["counts"]
    assert (counts["total"], counts["completed"], counts["failed"]) == (2, 1, 1)
    failed = next(e for e in events if e["kind"] == "failed" and e["task_id"])
    assert failed["message"] == "exited with code 3: nope"
    # --since: what happened within the last second only, which is soon nothing.
    wait_until(
        lambda: run_cli("watch", workflow_id, *data, "--json", "--since", "1s").stdout == "",
        20,
        "the history to fall out of the last second",
    )
