"""The data dir: created on demand, locked against a second daemon, holding id and address."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.datadir import DataDir, read_address, read_roles
from daemon.errors import DataDirError


def test_open_creates_the_dir_and_a_node_id(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "node"
    data_dir = DataDir.open(path)
    try:
        assert path.is_dir()
        assert data_dir.path == path.resolve()
        assert len(data_dir.node_id) == 32
        assert (path / "node_id").read_text().strip() == data_dir.node_id
    finally:
        data_dir.close()


def test_the_node_id_survives_a_reopen(tmp_path: Path) -> None:
    first = DataDir.open(tmp_path)
    first.close()
    second = DataDir.open(tmp_path)
    second.close()
    assert second.node_id == first.node_id


def test_a_second_open_while_held_names_the_holder(tmp_path: Path) -> None:
    holder = DataDir.open(tmp_path)
    try:
        with pytest.raises(DataDirError, match="another node daemon") as caught:
            DataDir.open(tmp_path)
        assert f"pid {os.getpid()}" in str(caught.value)
        assert str(tmp_path.resolve()) in str(caught.value)
    finally:
        holder.close()


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_path_at_or_under_a_regular_file_is_refused(tmp_path: Path, below: str) -> None:
    file = tmp_path / "file"
    file.write_text("not a dir")
    with pytest.raises(DataDirError, match=r"not usable.*--data-dir"):
        DataDir.open(file / below if below else file)


def test_the_address_round_trips(tmp_path: Path) -> None:
    data_dir = DataDir.open(tmp_path)
    try:
        assert read_address(tmp_path) is None
        data_dir.write_address("127.0.0.1:7450", ("coordinator",))
        assert read_address(tmp_path) == "127.0.0.1:7450"
        data_dir.write_address("127.0.0.1:7999", ("coordinator", "manager"))
        assert read_address(tmp_path) == "127.0.0.1:7999"
        assert read_roles(tmp_path) == ("coordinator", "manager")
    finally:
        data_dir.close()


def test_close_removes_the_address_and_releases_the_lock(tmp_path: Path) -> None:
    data_dir = DataDir.open(tmp_path)
    data_dir.write_address("127.0.0.1:7450", ("coordinator",))
    data_dir.close()
    assert read_address(tmp_path) is None
    again = DataDir.open(tmp_path)
    again.close()
    assert again.node_id == data_dir.node_id


def test_an_address_left_by_a_dead_daemon_is_cleared_on_open(tmp_path: Path) -> None:
    (tmp_path / "address").write_text("127.0.0.1:7450\n")
    data_dir = DataDir.open(tmp_path)
    try:
        assert read_address(tmp_path) is None
    finally:
        data_dir.close()


def test_read_address_of_a_missing_dir_is_none(tmp_path: Path) -> None:
    assert read_address(tmp_path / "nowhere") is None
