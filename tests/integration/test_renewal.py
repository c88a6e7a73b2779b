"""Certificates are renewed before they expire, while the nodes run; one that expired
anyway needs a new token, and says so."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from daemon.app import Node
from daemon.config import NodeConfig
from daemon.errors import ConfigError
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from daemon.transport.channels import open_channel
from daemon.trust.credentials import ADMIN, NODE, Credential, tls_dir
from daemon.trust.pki import Identity, role_name
from tests.integration.harness import serving, unique_cluster
from tests.trust import admin_credential, authority, node_id_of

pytestmark = pytest.mark.integration

# Issued a certificate with this much left, a node is due for renewal at once.
SHORT = datetime.timedelta(minutes=2)
DEADLINE_SECONDS = 15.0


def short_lived(data_dir: Path, roles: frozenset[str]) -> Credential:
    """Puts in `data_dir` a certificate of the test cluster with two minutes left."""
    credential = authority().credential(Identity(node_id_of(data_dir), roles), SHORT)
    credential.save(tls_dir(data_dir), NODE)
    return credential


async def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def connected_volunteers(address: str) -> set[str]:
    async with open_channel(address, admin_credential()) as channel:
        reply = await coordinator_pb2_grpc.CoordinatorServiceStub(channel).ListVolunteers(
            coordinator_pb2.ListVolunteersRequest(), timeout=5
        )
    return {v.volunteer_id for v in reply.volunteers if v.connected}


def config(data_dir: Path, role: str, cluster: str, coordinator: str | None = None) -> NodeConfig:
    return NodeConfig(
        (role,), data_dir, "127.0.0.1:0", cluster=cluster, coordinator=coordinator, mdns=False
    )


async def test_a_volunteer_renews_its_certificate_from_its_coordinator_while_it_runs(
    tmp_path: Path,
) -> None:
    cluster = unique_cluster()
    async with serving(Node(config(tmp_path / "c", "coordinator", cluster))) as address:
        volunteer_dir = tmp_path / "v"
        old = short_lived(volunteer_dir, frozenset({"volunteer"}))
        volunteer = Node(config(volunteer_dir, "volunteer", cluster, coordinator=address))
        async with serving(volunteer) as volunteer_address:

            def renewed() -> bool:
                held = Credential.load(tls_dir(volunteer_dir), NODE)
                return held is not None and held.expires_at > old.expires_at

            await poll(renewed, "the volunteer's certificate to be renewed")
            new = Credential.load(tls_dir(volunteer_dir), NODE)
            assert new is not None
            assert new.identity == old.identity
            assert new.key_pem != old.key_pem, "a renewal makes a new key"
            assert new.expires_at - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
                days=29
            )
            # Its link registers once Docker was asked (in a child process): maybe after that.
            deadline = time.monotonic() + DEADLINE_SECONDS
            while old.identity.node_id not in await connected_volunteers(address):
                assert time.monotonic() < deadline, "the volunteer did not connect"
                await asyncio.sleep(0.05)
            # Its server takes new handshakes with the new certificate.
            async with open_channel(volunteer_address, new, role_name("volunteer")) as channel:
                reply = await node_pb2_grpc.NodeServiceStub(channel).Health(
                    node_pb2.HealthRequest(), timeout=5
                )
            assert reply.serving
            # A CLI that read the files just before the renewal is still the node's owner;
            # a certificate naming the node's id on another key never was.
            namesake = authority().credential(old.identity)
            said = [await open_dashboard(volunteer_address, held) for held in (new, old, namesake)]
            no_dashboard = "this node serves no dashboard: start its daemon with --http"
            assert [details.startswith(no_dashboard) for _, details in said] == [True, True, False]
            assert said[2][0] == grpc.StatusCode.PERMISSION_DENIED


async def open_dashboard(address: str, held: Credential) -> tuple[grpc.StatusCode, str]:
    """How the node at `address` refuses `held` a dashboard (it serves none): as its owner,
    or as someone who may not ask."""
    async with open_channel(address, held, role_name("volunteer")) as channel:
        try:
            await node_pb2_grpc.NodeServiceStub(channel).OpenDashboard(
                node_pb2.OpenDashboardRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
    raise AssertionError("a node without --http served a dashboard")


async def test_a_coordinator_renews_its_own_and_its_admin_certificates(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    node = Node(config(data_dir, "coordinator", unique_cluster()))
    async with serving(node):
        first = Credential.load(tls_dir(data_dir), NODE)
        assert first is not None
    # Both made at its first start for 30 days; shorten them, as time would.
    ca = authority()
    for stem, identity in ((NODE, first.identity), (ADMIN, Identity("a-1", frozenset({"admin"})))):
        ca.credential(identity, SHORT).save(tls_dir(data_dir), stem)
    async with serving(Node(config(data_dir, "coordinator", unique_cluster()))):
        for stem in (NODE, ADMIN):
            held = Credential.load(tls_dir(data_dir), stem)
            assert held is not None, stem
            assert not held.due_for_renewal(), stem


async def test_a_node_whose_certificate_expired_asks_for_a_new_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "v"
    expired = authority().credential(
        Identity(node_id_of(data_dir), frozenset({"volunteer"})), -datetime.timedelta(minutes=1)
    )
    expired.save(tls_dir(data_dir), NODE)
    node = Node(config(data_dir, "volunteer", unique_cluster(), coordinator="127.0.0.1:9"))
    with pytest.raises(
        ConfigError,
        match=r"certificate expired on .*start it from a fresh data dir with a new --token",
    ):
        await node.run()
