"""Where a node with a token finds its coordinator's join port: the token's addresses, or
mDNS when those are gone (a coordinator that moved, a token written down without them); and
what a volunteer token says of its nodes (vouched for, whose machines) in their certificates."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import grpc
import pytest

from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import NODE, Credential, tls_dir
from daemon.trust.join import join_cluster
from daemon.trust.pki import Identity
from daemon.trust.tokens import JoinToken
from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    unique_cluster,
    wait_until,
)
from tests.trust import authority

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


def held(daemon: Daemon) -> Credential:
    credential = Credential.load(tls_dir(daemon.data_dir), NODE)
    assert credential is not None, f"no certificate in {daemon.data_dir}"
    return credential


def test_a_vouched_token_with_an_owner_says_both_in_the_certificate_and_a_renewal_keeps_them(
    daemons: Daemons,
) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--no-mdns", "--heartbeat", "0.5"]
    coordinator = daemons.start("coordinator", "--role", "coordinator", *common)
    address = coordinator.address()
    on_coordinator = ["--data-dir", str(coordinator.data_dir)]
    vouched = cli_json(
        "token", "create", "--role", "volunteer", "--vouched", "--owner", "alice", *on_coordinator
    )
    plain = cli_json("token", "create", "--role", "volunteer", *on_coordinator)
    assert (vouched["vouched"], vouched["owner"]) == (True, "alice")
    assert (plain["vouched"], plain["owner"]) == (False, "")
    listed = {t["token_id"]: t for t in cli_json("token", "list", *on_coordinator)}
    assert (listed[vouched["token_id"]]["vouched"], listed[vouched["token_id"]]["owner"]) == (
        True,
        "alice",
    )
    assert (listed[plain["token_id"]]["vouched"], listed[plain["token_id"]]["owner"]) == (False, "")
    table = run_cli("token", "list", *on_coordinator)
    assert table.returncode == 0, table.stderr
    [row] = [line.split() for line in table.stdout.splitlines() if vouched["token_id"] in line]
    assert row[1:5] == ["volunteer", "-", "yes", "alice"], table.stdout

    volunteer_args = ["--role", "volunteer", *common, "--coordinator", address]
    lab = daemons.start("lab", *volunteer_args, "--token", vouched["token"])
    guest = daemons.start("guest", *volunteer_args, "--token", plain["token"])
    joined = {lab.address() and lab.node_id, guest.address() and guest.node_id}
    wait_until(lambda: joined <= set(list_volunteers(address)), 15, "the volunteers to join")
    said = Identity(lab.node_id, frozenset({"volunteer"}), vouched=True, owner="alice")
    assert held(lab).identity == said
    assert held(guest).identity == Identity(guest.node_id, frozenset({"volunteer"}))

    # Two minutes left: due for renewal at the next start, from the coordinator.
    assert lab.terminate() == 0, lab.log
    short = authority().credential(said, datetime.timedelta(minutes=2))
    short.save(tls_dir(lab.data_dir), NODE)
    again = daemons.add(Daemon(lab.data_dir, volunteer_args))
    again.address()
    wait_until(lambda: held(again).expires_at > short.expires_at, 15, "the renewal")
    assert held(again).identity == said
    # Said once the new certificate is saved, which the wait above may see first.
    wait_until(lambda: "renewed this node's certificate" in again.log, 15, "the renewal's word")


def test_a_vouched_or_owned_token_for_a_manager_is_refused_with_what_to_do(
    daemons: Daemons,
) -> None:
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", "--no-mdns",
        "--cluster", unique_cluster(),
    )  # fmt: skip
    coordinator.address()
    on_coordinator = ["--data-dir", str(coordinator.data_dir)]
    for asked, problem in (
        (["--vouched"], "--vouched is for volunteer tokens"),
        (["--owner", "alice"], "--owner names the person whose machine a volunteer is"),
    ):
        refused = run_cli("token", "create", "--role", "manager", *asked, *on_coordinator)
        assert refused.returncode == 2, refused.stderr
        assert problem in refused.stderr
        assert "add volunteer to --role or leave" in refused.stderr
    assert cli_json("token", "list", *on_coordinator) == []
