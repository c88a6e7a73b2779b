"""Where `vcnode results` writes each result: a manager's names never leave the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.workflows import result_path
from daemon.errors import NodeError


def test_a_tasks_outputs_go_in_a_folder_named_after_it() -> None:
    assert result_path("C.npy") == Path("C.npy")
    assert result_path("train/model.npz") == Path("train/model.npz")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a/b/c", "a/", "", "t/.."])
def test_a_name_that_would_leave_the_folder_is_refused(name: str) -> None:
    with pytest.raises(NodeError, match="is not a file name"):
        result_path(name)
