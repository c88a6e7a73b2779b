"""Names a volunteer builds from what peers send stay inside its data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.models import ResourceRequest, TaskSpec
from volunteer_node.worker import TaskFailedError, check_file_name, regular_file, run_id


def task(task_id: str, attempt: int = 1) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        workflow_id="wf",
        image="i",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=1,
        attempt=attempt,
    )


@pytest.mark.parametrize("task_id", ["../../etc/passwd", "/abs/path", "..", "a/b\\c", "x\0y", ""])
def test_run_ids_are_one_safe_path_component(task_id: str, tmp_path: Path) -> None:
    name = run_id(task(task_id))
    assert "/" not in name
    assert "\0" not in name
    assert not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_run_ids_stay_unique_and_readable() -> None:
    assert run_id(task("wf.a/b")) != run_id(task("wf.a_b")), "sanitising must not merge ids"
    assert run_id(task("wf.a", 1)) != run_id(task("wf.a", 2))
    assert run_id(task("matmul-1.block-0-0")).startswith("matmul-1.block-0-0.1-")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\\b", ".progress", "x\0"])
def test_file_names_from_peers_must_be_plain(name: str) -> None:
    with pytest.raises(TaskFailedError):
        check_file_name(name, "input")


def test_outputs_are_read_only_if_regular_files(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "link.txt").symlink_to("/etc/hostname")
    (tmp_path / "dir").mkdir()
    assert regular_file(tmp_path, "real.txt") == tmp_path / "real.txt"
    assert regular_file(tmp_path, "link.txt") is None, "a symlink could point anywhere"
    assert regular_file(tmp_path, "dir") is None
    assert regular_file(tmp_path, "missing") is None
