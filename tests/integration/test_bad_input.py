"""Bad input gets a clear message and a non-zero exit, and corrupts nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from daemon.rpc.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from daemon.transport.channels import open_sync_channel
from tests.integration.harness import Daemons, list_volunteers, run_cli, unique_cluster, wait_until
from tests.trust import admin_credential, credential

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unknown_role_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    result = run_cli("daemon", "--role", "coordinator,painter", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert "unknown role 'painter'" in result.stderr
    assert "coordinator, volunteer, manager" in result.stderr
    assert not data_dir.exists()


def test_unreachable_coordinator_is_reported_with_its_address() -> None:
    address = f"127.0.0.1:{closed_port()}"
    result = run_cli("volunteers", "--coordinator", address)
    assert result.returncode == 3
    assert f"no coordinator answered at {address}" in result.stderr


def test_volunteer_keeps_retrying_an_unreachable_coordinator(daemons: Daemons) -> None:
    address = f"127.0.0.1:{closed_port()}"
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--listen", "127.0.0.1:0", "--no-mdns",
        "--coordinator", address,
    )  # fmt: skip
    volunteer.address()
    wait_until(lambda: f"coordinator {address} unreachable" in volunteer.log, 10, "retry logged")
    wait_until(lambda: "reconnecting in" in volunteer.log, 10, "backoff logged")
    assert volunteer.terminate() == 0


def test_corrupt_config_file_is_named_with_the_parse_error(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('roles = ["volunteer"\ncluster = \n')
    data_dir = tmp_path / "node"
    result = run_cli("daemon", "--config", str(config), "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert f"config file {config} is not valid TOML" in result.stderr
    assert config.read_text() == 'roles = ["volunteer"\ncluster = \n'
    assert not data_dir.exists()


def test_unwritable_data_dir_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("daemon", "--role", "coordinator", "--data-dir", str(blocker / "node"))
    assert result.returncode == 2
    assert "is not usable" in result.stderr
    assert "--data-dir" in result.stderr
    assert blocker.read_text() == "not a directory"


def test_second_daemon_on_the_same_data_dir_exits_and_leaves_the_first_serving(
    daemons: Daemons,
) -> None:
    first = daemons.start("node", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns")
    address = first.address()
    second = daemons.start(
        "node-again", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns",
        data_dir=first.data_dir,
    )  # fmt: skip
    assert second.wait_exit() == 2
    assert f"another node daemon (pid {first.process.pid})" in second.log  # type: ignore[union-attr]
    assert (first.data_dir / "address").read_text().strip() == address
    with open_sync_channel(address, admin_credential()) as channel:
        reply = node_pb2_grpc.NodeServiceStub(channel).Health(node_pb2.HealthRequest(), timeout=5)
    assert reply.serving
    assert first.terminate() == 0


def test_volunteer_of_another_cluster_is_refused_and_exits(daemons: Daemons) -> None:
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns",
        "--cluster", "lab",
    )  # fmt: skip
    address = coordinator.address()
    stranger = daemons.start(
        "stranger", "--role", "volunteer", "--listen", "127.0.0.1:0", "--no-mdns",
        "--coordinator", address, "--cluster", "home",
    )  # fmt: skip
    assert stranger.wait_exit() == 2
    assert "volunteer is in cluster 'home' but this coordinator serves cluster 'lab'" in (
        stranger.log
    )
    assert "--cluster lab" in stranger.log
    assert list_volunteers(address) == {}
    assert coordinator.terminate() == 0


def test_volunteer_of_another_protocol_version_is_refused(daemons: Daemons) -> None:
    cluster = unique_cluster()
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns",
        "--cluster", cluster,
    )  # fmt: skip
    address = coordinator.address()
    register = coordinator_pb2.Register(
        volunteer_id="from-the-future",
        hostname="elsewhere",
        cluster=cluster,
        protocol_version=99,
        resources=common_pb2.Resources(cpu_cores=1, memory_mb=1024),
    )
    with open_sync_channel(
        address, credential(["volunteer"], node_id="from-the-future")
    ) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        stream = stub.VolunteerSession(
            iter([coordinator_pb2.VolunteerMessage(register=register)]), timeout=5
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol version 99" in (raised.value.details() or "")
    assert list_volunteers(address) == {}
    assert coordinator.terminate() == 0


def test_session_that_does_not_start_with_register_is_refused(daemons: Daemons) -> None:
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns"
    )
    address = coordinator.address()
    heartbeat = coordinator_pb2.VolunteerMessage(heartbeat=coordinator_pb2.Heartbeat())
    with open_sync_channel(address, credential(["volunteer"])) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            next(stub.VolunteerSession(iter([heartbeat]), timeout=5))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be register" in (raised.value.details() or "")
    assert coordinator.terminate() == 0


def test_listen_address_in_use_is_reported(daemons: Daemons) -> None:
    first = daemons.start("first", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns")
    taken = first.address()
    second = daemons.start("second", "--role", "coordinator", "--listen", taken, "--no-mdns")
    assert second.wait_exit() == 2
    assert f"cannot listen on {taken}" in second.log
    assert first.terminate() == 0


def test_volunteer_without_mdns_or_coordinator_is_told_what_to_pass(tmp_path: Path) -> None:
    result = run_cli(
        "daemon", "--role", "volunteer", "--no-mdns", "--data-dir", str(tmp_path / "node")
    )
    assert result.returncode == 2
    assert "pass --coordinator HOST:PORT" in result.stderr
