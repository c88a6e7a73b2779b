"""The client commands, for people and for scripts, against real daemons."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemons,
    cli_json,
    list_volunteers,
    node_command,
    run_cli,
    unique_cluster,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_status_and_volunteers_for_people_and_scripts(daemons: Daemons) -> None:
    cluster = unique_cluster()
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator,manager", "--listen", "127.0.0.1:0",
        "--cluster", cluster, "--no-mdns",
    )  # fmt: skip
    address = coordinator.address()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster,
        "--no-mdns", "--coordinator", address, "--max-concurrent-tasks", "3",
    )  # fmt: skip
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 10, "volunteer to join")

    status = cli_json("status", "--data-dir", str(coordinator.data_dir))
    assert status["node_id"] == coordinator.node_id
    assert status["roles"] == ["coordinator", "manager"]
    assert status["cluster"] == cluster
    assert status["address"] == address
    assert status["mdns"] is False

    [listed] = cli_json("volunteers", "--coordinator", address)
    assert listed["id"] == volunteer.node_id
    assert listed["state"] == "online"
    assert listed["limits"]["max_concurrent_tasks"] == 3
    assert listed["runtime"] in ("docker", "none")

    table = run_cli("volunteers", "--data-dir", str(coordinator.data_dir))
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "ID", "HOST", "CORES", "RAM", "LOAD", "RUNTIME", "TRUST", "STATE", "LAST", "SEEN",
    ]  # fmt: skip
    assert row.startswith(volunteer.node_id[:8])
    assert " online " in row
    assert " vouched " in row  # the harness's volunteers stand for the lab's own machines
    assert listed["trust"]["vouched"] is True

    text = run_cli("status", "--data-dir", str(volunteer.data_dir))
    assert text.returncode == 0
    assert f"node      {volunteer.node_id}" in text.stdout
    assert "roles     volunteer" in text.stdout
    assert f"coordinator {address}" in text.stdout
    assert "results   trusted (vouched for); 0 agreed with other volunteers', 0 disagreed" in (
        text.stdout
    )


def test_peers_shows_other_clusters_and_malformed_announcements_as_skipped(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    ours = daemons.start(
        "ours", "--role", "coordinator", "--listen", "127.0.0.1:0", "--cluster", cluster
    )
    theirs = daemons.start(
        "theirs", "--role", "coordinator", "--listen", "127.0.0.1:0", "--cluster", "elsewhere"
    )
    ours.address()
    theirs.address()
    stranger = tmp_path / "stranger.py"
    stranger.write_text(STRANGER_SCRIPT)
    daemons.start_script("stranger", stranger)

    def peers_seen() -> list[dict[str, object]] | None:
        peers = cli_json("peers", "--data-dir", str(ours.data_dir))
        ids = {peer["node_id"] for peer in peers}
        return peers if theirs.node_id in ids and "" in ids else None

    peers = wait_until(peers_seen, 15, "the other cluster and the stranger on mDNS")
    by_id = {peer["node_id"]: peer for peer in peers}
    assert by_id[theirs.node_id]["skipped_reason"] == "other cluster 'elsewhere'"
    assert str(by_id[""]["skipped_reason"]).startswith("TXT record lacks id")
    assert all(not peer["usable"] for peer in peers)
    assert ours.process is not None
    assert ours.process.poll() is None, "a bad record crashed us"


STRANGER_SCRIPT = """
import asyncio, socket, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

async def main():
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        "_vcnode._tcp.local.", "stranger-%d._vcnode._tcp.local." % __import__("os").getpid(),
        addresses=[socket.inet_aton("127.0.0.1")], port=9,
        properties={"roles": "coordinator", "proto": "x"}, server="stranger.local.",
    )
    await zc.async_register_service(info)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_print_config_shows_precedence_and_sources(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('role = "volunteer"\ncluster = "from-file"\nheartbeat_seconds = 7\n')
    env = {**os.environ, "VCNODE_CLUSTER": "from-env", "VCNODE_HEARTBEAT": "3"}
    result = run_cli(
        "daemon", "--config", str(config), "--heartbeat", "2", "--print-config", env=env
    )
    assert result.returncode == 0, result.stderr
    effective = tomllib.loads(result.stdout)
    assert effective["roles"] == ["volunteer"]
    assert effective["cluster"] == "from-env"
    assert effective["heartbeat_seconds"] == 2.0
    assert "# environment variable VCNODE_CLUSTER" in result.stdout
    assert "# flag --heartbeat" in result.stdout
    assert f"# {config} (role)" in result.stdout


def test_no_daemon_found_says_what_was_tried(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("volunteers", "--data-dir", str(empty))
    assert result.returncode == 3
    assert f"no daemon is serving from data dir {empty}" in result.stderr

    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    cluster = unique_cluster()
    result = run_cli(
        "volunteers", "--cluster", cluster, "--mdns-interfaces", "127.0.0.1", "--timeout", "0.5",
        env=env,
    )  # fmt: skip
    assert result.returncode == 3
    assert f"no coordinator of cluster '{cluster}' answered on mDNS within 0.5 s" in result.stderr
    assert "--coordinator HOST:PORT" in result.stderr


def test_a_local_daemon_of_another_role_does_not_end_the_search_and_vcnode_cluster_applies(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--cluster", cluster
    )
    # A donated machine: its volunteer daemon serves from the default data dir.
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster,
        data_dir=xdg / "vcnode",
    )  # fmt: skip
    address = coordinator.address()
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 10, "volunteer to join")

    # Only VCNODE_CLUSTER says which cluster: no flag at all.
    env = {**os.environ, "XDG_DATA_HOME": str(xdg), "VCNODE_CLUSTER": cluster}
    result = run_cli("volunteers", "--json", "--mdns-interfaces", "127.0.0.1", env=env)
    assert result.returncode == 0, result.stderr
    assert volunteer.node_id in result.stdout

    # Nothing of the wanted role: the error says what was there instead.
    result = run_cli("workflows", "--mdns-interfaces", "127.0.0.1", "--timeout", "1", env=env)
    assert result.returncode == 3
    assert f"the daemon serving from {xdg / 'vcnode'} runs volunteer, not manager" in result.stderr
    assert f"cluster '{cluster}': coordinator, volunteer (2 nodes)" in result.stderr


def test_sigterm_stops_cleanly_and_removes_the_address_file(daemons: Daemons) -> None:
    node = daemons.start(
        "node", "--role", "coordinator,manager,volunteer", "--listen", "127.0.0.1:0",
        "--cluster", unique_cluster(),
    )  # fmt: skip
    address = node.address()
    wait_until(lambda: node.node_id in list_volunteers(address), 10, "own volunteer to join")
    assert node.terminate() == 0, node.log
    assert not (node.data_dir / "address").exists()
    for state_file in ("coordinator.db", "manager.db", "volunteer.db"):
        assert (node.data_dir / state_file).exists()


def test_init_writes_a_file_refuses_to_overwrite_and_names_the_types(tmp_path: Path) -> None:
    target = tmp_path / "wf.toml"
    written = run_cli("init", "matrix_multiplication", "-o", str(target))
    assert written.returncode == 0, written.stderr
    assert 'type = "matrix_multiplication"' in target.read_text()
    assert run_cli("validate", str(target)).returncode == 0

    target.write_text("mine")
    again = run_cli("init", "tasks", "-o", str(target))
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert "--force" in again.stderr
    assert target.read_text() == "mine", "nothing is overwritten without --force"

    unknown = run_cli("init", "nope")
    assert unknown.returncode == 2
    assert "choose one of: tasks, " in unknown.stderr
    assert "matrix_addition" in unknown.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly() -> None:
    """`node ... | head`: no traceback, and the exit status a shell shows for SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        result = subprocess.run(
            node_command("init", "tasks"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""
