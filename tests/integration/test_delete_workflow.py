"""`node delete`: an ended workflow is forgotten and the manager's disk freed of the files
only it used, through real daemons (process runtime, so no Docker is needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.integration.harness import NO_DOCKER, Daemon, Daemons, cli_json, run_cli, start_pool

pytestmark = pytest.mark.integration

# Copies its input to its output with a suffix, after `wait` seconds (a workflow held going).
STEP = """\
import pathlib, sys, time
source, suffix, target, wait = sys.argv[1:5]
time.sleep(float(wait))
pathlib.Path(target).write_text(pathlib.Path(source).read_text() + suffix)
"""


def workflow(tmp_path: Path, name: str, unique: str, wait: str = "0") -> Path:
    (tmp_path / f"{name}.txt").write_text(unique)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[workflow]\nname = "{name}"\n\n[[tasks]]\nname = "copy"\n'
        f'command = ["python3", "/input/step.py", "/input/in.txt", "{name}",'
        f' "/output/out.txt", "{wait}"]\n'
        f'inputs = {{ "step.py" = "step.py", "in.txt" = "{name}.txt" }}\n'
        'outputs = ["out.txt"]\n'
    )
    return path


def submit(manager: Daemon, path: Path, *extra: str) -> str:
    result = run_cli("submit", str(path), "--data-dir", str(manager.data_dir), "--json", *extra)
    assert result.returncode == 0, result.stderr + manager.log
    workflow_id: str = json.loads(result.stdout)["workflow_id"]
    return workflow_id


def held(manager: Daemon, content: str) -> bool:
    sha256 = hashlib.sha256(content.encode()).hexdigest()
    return (manager.data_dir / "blobs" / "complete" / sha256[:2] / sha256).is_file()


def test_delete_frees_what_only_the_workflow_used_and_keeps_what_others_share(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    (tmp_path / "step.py").write_text(STEP)
    first = submit(manager, workflow(tmp_path, "first", "only first's input\n"), "--wait")
    second = submit(manager, workflow(tmp_path, "second", "only second's input\n"), "--wait")
    assert held(manager, "only first's input\nfirst")  # first's output

    deleted = run_cli("delete", first, "--data-dir", str(manager.data_dir))
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted {first}: 2 files no other workflow uses" in deleted.stdout
    assert not held(manager, "only first's input\n")
    assert not held(manager, "only first's input\nfirst")
    assert held(manager, STEP), "the script both workflows use stays"

    listed = [w["workflow_id"] for w in cli_json("workflows", "--data-dir", str(manager.data_dir))]
    assert listed == [second]
    gone = run_cli("status", first, "--data-dir", str(manager.data_dir))
    assert gone.returncode == 1
    assert f"no workflow {first!r}" in gone.stderr
    again = run_cli("delete", first, "--data-dir", str(manager.data_dir))
    assert again.returncode == 1
    assert f"no workflow {first!r} on this manager" in again.stderr

    out = tmp_path / "results"
    fetched = run_cli("results", second, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "copy" / "out.txt").read_text() == "only second's input\nsecond"


def test_a_workflow_still_going_is_not_deleted(daemons: Daemons, tmp_path: Path) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    (tmp_path / "step.py").write_text(STEP)
    going = submit(manager, workflow(tmp_path, "held", "held input\n", wait="600"))

    refused = run_cli("delete", going, "--data-dir", str(manager.data_dir))
    assert refused.returncode == 2
    assert f"workflow {going} is still going; cancel it first" in refused.stderr
    assert held(manager, "held input\n")

    cancelled = run_cli("cancel", going, "--data-dir", str(manager.data_dir))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cli_json("status", going, "--data-dir", str(manager.data_dir))["state"] == "cancelled"
    deleted = run_cli("delete", going, "--data-dir", str(manager.data_dir))
    assert deleted.returncode == 0, deleted.stderr
