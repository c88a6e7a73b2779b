"""Where a node with a token finds its coordinator's join port: the token's addresses, or
mDNS when those are gone (a coordinator that moved, a token written down without them)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.trust.authority import ClusterAuthority
from daemon.trust.join import join_cluster
from daemon.trust.pki import Identity
from daemon.trust.tokens import JoinToken
from tests.integration.harness import (
    Daemons,
    list_volunteers,
    run_cli,
    unique_cluster,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_token_without_addresses_joins_through_the_join_port_mdns_announces(
    daemons: Daemons,
) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--heartbeat", "0.5"]
    coordinator = daemons.start("coordinator", "--role", "coordinator", *common)
    address = coordinator.address()
    made = run_cli(
        "token", "create", "--role", "volunteer", "--data-dir", str(coordinator.data_dir),
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    assert "@127.0.0.1:" in token, "the token names where the coordinator took joins"
    bare = token.partition("@")[0]

    volunteer = daemons.start("volunteer", "--role", "volunteer", *common, "--token", bare)
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 15, "the volunteer to join")
    assert "joined cluster" in volunteer.log


class EchoingImpostor(trust_pb2_grpc.TrustServiceServicer):
    """A join port that echoes the cluster's CA (every member has it) with a certificate
    that CA never issued."""

    def __init__(self, ca_pem: bytes, forged: bytes) -> None:
        self._ca_pem = ca_pem
        self._forged = forged

    async def Join(self, request: trust_pb2.JoinRequest, context: object) -> trust_pb2.JoinReply:
        return trust_pb2.JoinReply(
            ca_certificate=self._ca_pem, certificate=self._forged, cluster=request.cluster
        )


async def test_a_join_port_echoing_our_ca_with_a_forged_certificate_is_passed_by(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns",
        "--cluster", cluster,
    )  # fmt: skip
    coordinator.address()
    made = run_cli(
        "token", "create", "--role", "volunteer", "--data-dir", str(coordinator.data_dir),
        "--json",
    )  # fmt: skip
    token = JoinToken.parse(json.loads(made.stdout)["token"])
    ca_pem = (coordinator.data_dir / "tls" / "ca.pem").read_bytes()
    elsewhere = ClusterAuthority.load_or_create(tmp_path / "elsewhere", cluster)
    forged = elsewhere.credential(Identity("n1", frozenset({"volunteer"}))).cert_pem
    server = grpc.aio.server()
    impostor = EchoingImpostor(ca_pem, forged)  # type: ignore[abstract]  # it answers Join only
    trust_pb2_grpc.add_TrustServiceServicer_to_server(impostor, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        joined = await join_cluster(token, "n1", cluster, [f"127.0.0.1:{port}"])
    finally:
        await server.stop(None)
    assert joined.identity.node_id == "n1"
    assert joined.ca_pem == ca_pem
