"""Who may join the cluster and what each member may do, attacked on real daemons.

Real processes, real gRPC on 127.0.0.1, real certificates: a coordinator's own CA (or the
test session's, see tests/trust.py), join tokens made and spent through the CLI, strangers
on the plaintext join port, callers of every role at the edge of every service, impostors
of another node's id, revocation, `vcnode login`, and a coordinator of another CA. Each test
asserts the exact refusal (status code and the words of its message), so it fails if the
protection it is about were taken away.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from daemon.config import PROTOCOL_VERSION
from daemon.discovery.browsing import listening
from daemon.errors import AccessDeniedError
from daemon.models import OwnerLimits, Registration, ResourceRequest, Resources, TaskSpec
from daemon.rpc.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    manager_pb2,
    node_pb2,
    transfer_pb2,
    trust_pb2,
)
from daemon.transport import convert
from daemon.transport.channels import open_sync_channel
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import ADMIN, NODE, USER, Credential, tls_dir
from daemon.trust.join import join_cluster
from daemon.trust.pki import Identity, new_secret
from daemon.trust.tokens import JoinToken
from daemon.version import VERSION
from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
    unique_cluster,
    wait_until,
)
from tests.trust import admin_credential, authority, credential

pytestmark = pytest.mark.integration

CALL_SECONDS = 5.0
# Long enough that no volunteer counts as lost while a test runs: whatever ends a session
# here is the protection under test, never a missed heartbeat.
SLOW_HEARTBEAT = "30"


# --- helpers --------------------------------------------------------------------------------


def start_coordinator(
    daemons: Daemons,
    cluster: str,
    *extra: str,
    name: str = "coordinator",
    roles: str = "coordinator",
    heartbeat: str = SLOW_HEARTBEAT,
    provisioned: bool = True,
) -> Daemon:
    """A coordinator on loopback. Provisioned, it holds the test session's CA (so the
    session's admin login works); else it makes a CA of its own."""
    args = ["--role", roles, "--listen", "127.0.0.1:0", "--cluster", cluster]
    args += ["--heartbeat", heartbeat, *extra]
    coordinator = daemons.add(Daemon(daemons.root / name, args), provisioned=provisioned)
    coordinator.address()
    return coordinator


def make_token(coordinator: Daemon, role: str, *args: str) -> tuple[str, str]:
    """(token, token id), made with `vcnode token create` on the coordinator's host."""
    made = cli_json(
        "token", "create", "--role", role, *args, "--data-dir", str(coordinator.data_dir)
    )
    return str(made["token"]), str(made["token_id"])


def token_info(coordinator: Daemon, token_id: str) -> dict[str, object]:
    listed = cli_json("token", "list", "--data-dir", str(coordinator.data_dir))
    [info] = [info for info in listed if info["token_id"] == token_id]
    return dict(info)


def join_address(token: str) -> str:
    [address] = JoinToken.parse(token).addresses
    return address


def run_node(
    data_dir: Path, token: str, coordinator: str, cluster: str, role: str = "volunteer"
) -> subprocess.CompletedProcess[str]:
    """`vcnode daemon --token` that is expected to give up (a refused join): its exit."""
    return run_cli(
        "daemon", "--role", role, "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--cluster", cluster, "--no-mdns", "--coordinator", coordinator, "--token", token,
        timeout=30,
    )  # fmt: skip


def joining_volunteer(
    daemons: Daemons, name: str, token: str, coordinator: str, cluster: str, *extra: str
) -> Daemon:
    """A volunteer daemon with no certificate but `token`: it must join to run."""
    args = ["--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster]
    args += ["--no-mdns", "--coordinator", coordinator, "--token", token, *extra]
    return daemons.add(Daemon(daemons.root / name, args), provisioned=False)


def held_credential(daemon: Daemon, stem: str = NODE) -> Credential | None:
    return Credential.load(tls_dir(daemon.data_dir), stem)


def listed(address: str) -> dict[str, bool]:
    """The coordinator's volunteers, by id: whether each holds a session now. Unlike
    `list_volunteers`, a failed call fails the test: "not listed" is never vacuous."""
    with open_sync_channel(address, admin_credential()) as channel:
        reply = coordinator_pb2_grpc.CoordinatorServiceStub(channel).ListVolunteers(
            coordinator_pb2.ListVolunteersRequest(), timeout=CALL_SECONDS
        )
    return {v.volunteer_id: v.connected for v in reply.volunteers}


def connected(address: str, node_id: str) -> bool:
    return listed(address).get(node_id, False)


def methods() -> list[MethodDescriptor]:
    """Every RPC of every service, from the protos (not from the access table)."""
    modules = (node_pb2, coordinator_pb2, manager_pb2, transfer_pb2, trust_pb2)
    return [
        method
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


METHODS = {path_of(method).removeprefix("/vcnode.v1."): method for method in methods()}


def _raw(data: bytes) -> bytes:
    return data


def call(channel: grpc.Channel, method: str, request: bytes = b"") -> grpc.RpcError | None:
    """Calls `method` ("Service/Method") with a serialized request, whatever its arity;
    returns how it failed, None if it did not."""
    descriptor = METHODS[method]
    path = path_of(descriptor)
    raw = {"request_serializer": _raw, "response_deserializer": _raw}
    try:
        if descriptor.client_streaming and descriptor.server_streaming:
            replies = channel.stream_stream(path, **raw)(iter([request]), timeout=CALL_SECONDS)
            next(replies, None)
        elif descriptor.client_streaming:
            channel.stream_unary(path, **raw)(iter([request]), timeout=CALL_SECONDS)
        elif descriptor.server_streaming:
            next(channel.unary_stream(path, **raw)(request, timeout=CALL_SECONDS), None)
        else:
            channel.unary_unary(path, **raw)(request, timeout=CALL_SECONDS)
    except grpc.RpcError as error:
        return error
    return None


def refusal(channel: grpc.Channel, method: str, request: bytes = b"") -> tuple[str, str]:
    """(status name, details) of a call that must fail."""
    error = call(channel, method, request)
    assert error is not None, f"{method} was let through"
    return error.code().name, error.details() or ""


def task(workflow_id: str, index: int = 0) -> common_pb2.TaskSpec:
    spec = TaskSpec(
        f"{workflow_id}.t{index}", workflow_id, "vcnode/worker:1", ("true",), ResourceRequest(), 60
    )
    return convert.task_spec_to_proto(spec)


def registration(volunteer_id: str, cluster: str) -> coordinator_pb2.VolunteerMessage:
    return coordinator_pb2.VolunteerMessage(
        register=convert.registration_to_proto(
            Registration(
                volunteer_id=volunteer_id,
                hostname="impostor",
                cluster=cluster,
                protocol_version=PROTOCOL_VERSION,
                version=VERSION,
                resources=Resources(4, 8192, 100_000),
                limits=OwnerLimits(),
            )
        )
    )


def other_authority(tmp_path: Path) -> ClusterAuthority:
    """The CA of some other cluster."""
    return ClusterAuthority.load_or_create(tmp_path / f"other-ca-{uuid.uuid4().hex[:6]}", "other")


# --- a coordinator+manager shared by the tests that only call it -----------------------------


@dataclass(frozen=True)
class Mesh:
    daemon: Daemon
    address: str
    join_address: str
    cluster: str
    node_id: str
    # A token nobody spends: what a RevokeToken that got through would revoke.
    spare_token_id: str


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    daemons = Daemons(tmp_path_factory.mktemp("trust-mesh"))
    try:
        cluster = unique_cluster()
        node = start_coordinator(daemons, cluster, "--no-mdns", roles="coordinator,manager")
        token, token_id = make_token(node, "volunteer")
        yield Mesh(node, node.address(), join_address(token), cluster, node.node_id, token_id)
    finally:
        daemons.stop_all()


# --- 1. the token flow --------------------------------------------------------------------

WORKFLOW = """
[workflow]
name = "shout"

[[tasks]]
name = "upper"
command = [
    "python3", "-c",
    "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())",
    "/input/in.txt", "/output/out.txt",
]
inputs = ["in.txt"]
outputs = ["out.txt"]
"""


def test_a_volunteer_with_only_a_token_joins_runs_tasks_and_restarts_without_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The volunteer is given its token, its cluster and nothing else: it joins at the join
    port mDNS announces (or the token names) and finds its coordinator on mDNS."""
    cluster = unique_cluster()
    coordinator = start_coordinator(daemons, cluster, roles="coordinator,manager", heartbeat="0.5")
    address = coordinator.address()
    token, token_id = make_token(coordinator, "volunteer")
    args = ["--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster]
    args += ["--allow-process-runtime"]
    volunteer_dir = tmp_path / "volunteer"
    volunteer = daemons.add(
        Daemon(volunteer_dir, [*args, "--token", token], NO_DOCKER), provisioned=False
    )
    volunteer.address()
    wait_until(lambda: connected(address, volunteer.node_id), 15, "the volunteer to join")

    joined = held_credential(volunteer)
    assert joined is not None, "the join left no certificate in the data dir"
    assert joined.identity == Identity(volunteer.node_id, frozenset({"volunteer"}))
    assert joined.ca_hash == authority().ca_hash == JoinToken.parse(token).ca_hash
    assert f"joined cluster {cluster!r} with token {token_id}" in volunteer.log
    # The secret is shown once, at `token create`: in no log, listing or printed config.
    secret = JoinToken.parse(token).secret
    listing = run_cli("token", "list", "--json", "--data-dir", str(coordinator.data_dir))
    printed = run_cli("daemon", *args, "--token", token, "--print-config")
    assert printed.returncode == 0, printed.stderr
    for shown in (volunteer.log, coordinator.log, listing.stdout, printed.stdout):
        assert secret not in shown

    (tmp_path / "in.txt").write_text("hello")
    workflow = tmp_path / "shout.toml"
    workflow.write_text(WORKFLOW)
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(coordinator.data_dir), "--wait", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr + volunteer.log
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    out = tmp_path / "out"
    fetched = run_cli(
        "results", workflow_id, "--data-dir", str(coordinator.data_dir), "-o", str(out)
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "upper" / "out.txt").read_text() == "HELLO"
    assert token_info(coordinator, token_id)["joined"] == 1

    # The second start: no token, the certificate the first one got.
    assert volunteer.terminate() == 0, volunteer.log
    wait_until(lambda: not connected(address, volunteer.node_id), 10, "the volunteer to leave")
    again = daemons.add(Daemon(volunteer_dir, args, NO_DOCKER), provisioned=False)
    again.address()
    wait_until(lambda: connected(address, again.node_id), 15, "the volunteer to come back")
    assert again.node_id == volunteer.node_id
    assert again.log.count("joined cluster") == 1, "the restart joined again"
    assert held_credential(again) == joined
    assert token_info(coordinator, token_id)["joined"] == 1


# --- 2. bad tokens ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A coordinator for tokens to be refused by (its own; `mesh` is for calls)."""
    daemons = Daemons(tmp_path_factory.mktemp("trust-host"))
    try:
        cluster = unique_cluster()
        node = start_coordinator(daemons, cluster, "--no-mdns")
        token, token_id = make_token(node, "volunteer")
        yield Mesh(node, node.address(), join_address(token), cluster, node.node_id, token_id)
    finally:
        daemons.stop_all()


def assert_nothing_joined(host: Mesh, data_dir: Path) -> None:
    assert not (tls_dir(data_dir) / f"{NODE}.pem").exists(), "a refused join left a certificate"
    node_id = (data_dir / "node_id").read_text().strip()
    assert node_id not in listed(host.address)


def test_a_garbage_token_is_refused_before_the_node_starts(host: Mesh, tmp_path: Path) -> None:
    data_dir = tmp_path / "volunteer"
    result = run_node(data_dir, "vcn1-not-a-token@" + host.join_address, host.address, host.cluster)
    assert result.returncode == 2, result.stderr
    assert "flag --token: not a join token" in result.stderr
    assert "as `vcnode token create` prints it" in result.stderr
    assert not data_dir.exists(), "nothing starts on a token that is not one"


def _wrong_secret(host: Mesh) -> tuple[str, str]:
    token, token_id = make_token(host.daemon, "volunteer")
    return str(replace(JoinToken.parse(token), secret=new_secret(17)[:26])), token_id


def _unknown_id(host: Mesh) -> tuple[str, str]:
    token, token_id = make_token(host.daemon, "volunteer")
    return str(replace(JoinToken.parse(token), token_id="aaaaaaaa")), token_id


def _expired(host: Mesh) -> tuple[str, str]:
    token, token_id = make_token(host.daemon, "volunteer", "--ttl", "1s")
    expires_at = float(str(token_info(host.daemon, token_id)["expires_at"]))
    wait_until(lambda: time.time() > expires_at + 0.05, 5, "the token to expire")
    return token, token_id


def _revoked(host: Mesh) -> tuple[str, str]:
    token, token_id = make_token(host.daemon, "volunteer")
    revoked = run_cli("token", "revoke", token_id, "--data-dir", str(host.daemon.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == (
        f"token {token_id} revoked, with the 0 members that joined with it"
    )
    return token, token_id


NOT_OURS = (
    "the join token is not one this coordinator made, or its secret does not match: check "
    "you copied all of it"
)
# case -> (makes the token to join with and names the token it came from, the cause)
BAD_TOKENS: dict[str, tuple[Callable[[Mesh], tuple[str, str]], str]] = {
    "wrong secret": (_wrong_secret, NOT_OURS),
    "unknown token id": (_unknown_id, NOT_OURS),
    "expired": (_expired, "join token {token_id} has expired: ask for a new one"),
    "revoked": (_revoked, "join token {token_id} was revoked: ask for a new one"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_bad_token_is_refused_with_its_cause_and_nothing_joins(
    host: Mesh, tmp_path: Path, case: str
) -> None:
    make, cause = BAD_TOKENS[case]
    token, token_id = make(host)
    data_dir = tmp_path / "volunteer"
    result = run_node(data_dir, token, host.address, host.cluster)
    assert result.returncode == 4, result.stderr
    assert f"the coordinator at {host.join_address} refused" in result.stderr
    assert cause.format(token_id=token_id) in result.stderr
    assert_nothing_joined(host, data_dir)
    assert token_info(host.daemon, token_id)["joined"] == 0


def test_a_used_up_token_is_refused_for_a_second_node(
    host: Mesh, daemons: Daemons, tmp_path: Path
) -> None:
    token, token_id = make_token(host.daemon, "volunteer", "--uses", "1")
    first = joining_volunteer(daemons, "first", token, host.address, host.cluster)
    first.address()
    wait_until(lambda: connected(host.address, first.node_id), 10, "the first node to join")

    data_dir = tmp_path / "second"
    result = run_node(data_dir, token, host.address, host.cluster)
    assert result.returncode == 4, result.stderr
    assert f"join token {token_id} has been used up: ask for a new one" in result.stderr
    assert_nothing_joined(host, data_dir)
    assert token_info(host.daemon, token_id)["joined"] == 1


def test_a_token_pinning_another_ca_is_never_trusted(host: Mesh, tmp_path: Path) -> None:
    """The coordinator answers the join, but its CA is not the one the token pins (as a
    coordinator in the middle would answer): the node keeps nothing it sent."""
    token, _ = make_token(host.daemon, "volunteer")
    pinned_elsewhere = replace(JoinToken.parse(token), ca_hash=other_authority(tmp_path).ca_hash)
    data_dir = tmp_path / "volunteer"
    result = run_node(data_dir, str(pinned_elsewhere), host.address, host.cluster)
    assert result.returncode == 3, result.stderr
    assert "could not join: " in result.stderr
    assert (
        f"{host.join_address} (its CA is not the one the token names: not our cluster)"
    ) in result.stderr
    assert_nothing_joined(host, data_dir)
    assert not (tls_dir(data_dir) / "ca.pem").exists(), "the untrusted CA was kept"


def test_a_node_token_grants_its_roles_only(host: Mesh, tmp_path: Path) -> None:
    """A volunteer token does not make a manager, whatever the node asks to be."""
    token, _ = make_token(host.daemon, "volunteer")
    data_dir = tmp_path / "manager"
    result = run_node(data_dir, token, host.address, host.cluster, role="manager")
    assert result.returncode == 2, result.stderr
    assert "this node's certificate grants volunteer, not manager" in result.stderr
    assert "start it from a fresh data dir with a token for those roles" in result.stderr
    assert not (tls_dir(data_dir) / f"{NODE}.pem").exists()


def test_a_node_refused_for_its_cluster_name_joins_once_it_follows_the_advice(
    host: Mesh, daemons: Daemons, tmp_path: Path
) -> None:
    """The refused join must not count: it once did (the coordinator recorded the member
    before the node saw the cluster's name), and the corrected retry was 'already joined'."""
    token, _ = make_token(host.daemon, "volunteer")
    data_dir = tmp_path / "volunteer"
    result = run_node(data_dir, token, host.address, "not-" + host.cluster)
    assert result.returncode != 0, result.stderr
    assert f"--cluster {host.cluster}" in result.stderr, "the advice"
    assert not (tls_dir(data_dir) / f"{NODE}.pem").exists()

    # Following the advice, from the same data dir (it holds no certificate).
    volunteer = joining_volunteer(daemons, "volunteer", token, host.address, host.cluster)
    assert volunteer.data_dir == data_dir
    volunteer.address()
    wait_until(lambda: connected(host.address, volunteer.node_id), 10, "the volunteer to join")


TOKEN_REQUESTS = {
    "coordinator": (["--role", "coordinator"], "a token cannot grant coordinator"),
    "user without a name": (["--role", "user"], "a user token needs --name"),
    "person and node": (
        ["--role", "user,volunteer", "--name", "alice"],
        "a token for a person (user or admin) grants that role alone",
    ),
    "name on a node token": (
        ["--role", "volunteer", "--name", "alice"],
        "--name is for user and admin tokens",
    ),
    "over a year": (["--role", "volunteer", "--ttl", "366d"], "at most 365 days"),
}


@pytest.mark.parametrize("case", list(TOKEN_REQUESTS))
def test_a_token_that_cannot_be_made_as_asked_is_refused(mesh: Mesh, case: str) -> None:
    args, problem = TOKEN_REQUESTS[case]
    before = cli_json("token", "list", "--data-dir", str(mesh.daemon.data_dir))
    result = run_cli("token", "create", *args, "--data-dir", str(mesh.daemon.data_dir))
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr
    assert cli_json("token", "list", "--data-dir", str(mesh.daemon.data_dir)) == before


def test_a_token_of_no_lifetime_is_refused_not_made_for_a_day(mesh: Mesh) -> None:
    """0 on the wire means the default (24 h): `--ttl 0` once made a token for a day."""
    before = cli_json("token", "list", "--data-dir", str(mesh.daemon.data_dir))
    result = run_cli(
        "token", "create", "--role", "volunteer", "--ttl", "0", "--data-dir",
        str(mesh.daemon.data_dir),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert "--ttl" in result.stderr
    assert "0 s" in result.stderr
    assert cli_json("token", "list", "--data-dir", str(mesh.daemon.data_dir)) == before


# --- 3. strangers ---------------------------------------------------------------------------


def stranger_credentials(tmp_path: Path) -> dict[str, grpc.ChannelCredentials | None]:
    """Ways to dial the main port without a certificate of the cluster."""
    foreign = other_authority(tmp_path).credential(
        Identity("mallory", frozenset({"admin"}), user="admin")
    )
    ours = authority().cert_pem
    return {
        "plaintext": None,
        "TLS without a client certificate": grpc.ssl_channel_credentials(ours),
        "a certificate of another CA": grpc.ssl_channel_credentials(
            ours, foreign.key_pem, foreign.cert_pem
        ),
        "another cluster's credential": foreign.channel_credentials(),
    }


STRANGERS = ["plaintext", "TLS without a client certificate", "a certificate of another CA"]
STRANGERS += ["another cluster's credential"]


@pytest.mark.parametrize("stranger", STRANGERS)
def test_without_a_certificate_of_the_cluster_no_call_passes_the_main_port(
    mesh: Mesh, tmp_path: Path, stranger: str
) -> None:
    with open_sync_channel(mesh.address, admin_credential()) as member:
        assert call(member, "NodeService/GetInfo") is None, "the port answers members"
    credentials = stranger_credentials(tmp_path)[stranger]
    options = [("grpc.ssl_target_name_override", "node.vcnode")]
    channel = (
        grpc.insecure_channel(mesh.address)
        if credentials is None
        else grpc.secure_channel(mesh.address, credentials, options=options)
    )
    with channel:
        outcomes = {method: refusal(channel, method)[0] for method in METHODS}
    assert outcomes == dict.fromkeys(METHODS, "UNAVAILABLE"), "a call passed the handshake"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "TrustService/Join"])
def test_on_the_join_port_a_stranger_may_only_join(mesh: Mesh, method: str) -> None:
    with grpc.insecure_channel(mesh.join_address) as channel:
        assert refusal(channel, method) == (
            "UNAUTHENTICATED",
            "this port takes only join requests: dial the node's main port with a "
            "certificate of its cluster",
        )


def test_on_the_join_port_join_reaches_the_coordinator(mesh: Mesh) -> None:
    """The one call a stranger may make gets past the edge: a join with a made-up token is
    refused by the membership, for its token."""
    request = trust_pb2.JoinRequest(
        token_id="aaaaaaaa", certificate_request=b"x", proof=b"y", node_id="n"
    )
    with grpc.insecure_channel(mesh.join_address) as channel:
        code, details = refusal(channel, "TrustService/Join", request.SerializeToString())
    assert code == "PERMISSION_DENIED"
    assert details.startswith("the join token is not one this coordinator made")


@pytest.mark.parametrize("held", ["another cluster's credential", "no credential"])
def test_the_cli_with_a_credential_of_another_cluster_says_what_to_do(
    mesh: Mesh, tmp_path: Path, held: str
) -> None:
    config_home = tmp_path / "config"
    if held == "another cluster's credential":
        foreign = other_authority(tmp_path).credential(
            Identity("someone", frozenset({"admin"}), user="admin")
        )
        foreign.save(config_home / "vcnode", USER)
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # no daemon's credential either
    result = run_cli("volunteers", "--coordinator", mesh.address, env=env)
    assert result.returncode == 4, result.stderr
    if held == "no credential":
        assert "this machine holds no credential for a vcnode cluster" in result.stderr
        assert "run `vcnode login TOKEN`" in result.stderr
    else:
        assert (
            f"the node at {mesh.address} is not a coordinator we may talk to: its certificate "
            "is not from this cluster's CA"
        ) in result.stderr
        assert "Is this machine's credential for the right cluster?" in result.stderr
        assert "`vcnode login TOKEN`" in result.stderr
    # The same command with the session's admin login works.
    assert run_cli("volunteers", "--coordinator", mesh.address).returncode == 0


# --- 4. roles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    roles: tuple[str, ...]
    user: str | None = None

    def credential(self, node_id: str) -> Credential:
        return credential(self.roles, user=self.user, node_id=node_id)

    def describe(self, node_id: str) -> str:
        who = f"user {self.user}" if self.user else f"node {node_id[:12]}"
        return f"{who} ({', '.join(sorted(self.roles))})"


VOLUNTEER = Caller(("volunteer",))
MANAGER = Caller(("manager",))
USER_ALICE = Caller(("user",), user="alice")
ADMIN_CALLER = Caller(("admin",), user="root")

# How a refusal names who a method takes.
A_MANAGER = "a manager"
A_VOLUNTEER = "a volunteer"
TRUST_ADMINS = "an admin or this node's owner"
PEOPLE = f"{TRUST_ADMINS} or a person's credential (`vcnode login TOKEN`)"
TRANSFER = f"{PEOPLE} or a volunteer"
REVOCATIONS = "an admin or a manager or this node's owner"

# (caller, method, what the method takes): each a call that role has no right to.
FORBIDDEN = [
    (VOLUNTEER, "CoordinatorService/SubmitTasks", A_MANAGER),
    (VOLUNTEER, "CoordinatorService/WatchTasks", A_MANAGER),
    (VOLUNTEER, "CoordinatorService/CancelTasks", A_MANAGER),
    (VOLUNTEER, "CoordinatorService/ReportVerdicts", A_MANAGER),
    (VOLUNTEER, "CoordinatorService/ClearTrust", TRUST_ADMINS),
    (MANAGER, "CoordinatorService/ClearTrust", TRUST_ADMINS),
    (USER_ALICE, "CoordinatorService/ReportVerdicts", A_MANAGER),
    (USER_ALICE, "CoordinatorService/ClearTrust", TRUST_ADMINS),
    (ADMIN_CALLER, "CoordinatorService/ReportVerdicts", A_MANAGER),
    (VOLUNTEER, "TrustService/CreateToken", TRUST_ADMINS),
    (VOLUNTEER, "TrustService/ListTokens", TRUST_ADMINS),
    (VOLUNTEER, "TrustService/RevokeToken", TRUST_ADMINS),
    (VOLUNTEER, "TrustService/ListRevoked", REVOCATIONS),
    (VOLUNTEER, "ManagerService/SubmitWorkflow", PEOPLE),
    (VOLUNTEER, "ManagerService/ListWorkflows", PEOPLE),
    (VOLUNTEER, "ManagerService/CancelWorkflow", PEOPLE),
    (VOLUNTEER, "ManagerService/DeleteWorkflow", PEOPLE),
    (VOLUNTEER, "ManagerService/ExplainTasks", PEOPLE),
    (MANAGER, "ManagerService/ExplainTasks", PEOPLE),
    (VOLUNTEER, "ManagerService/GetTaskLog", PEOPLE),
    (VOLUNTEER, "NodeService/OpenDashboard", PEOPLE),
    (MANAGER, "NodeService/OpenDashboard", PEOPLE),
    (MANAGER, "ManagerService/GetTaskLog", PEOPLE),
    (MANAGER, "CoordinatorService/VolunteerSession", A_VOLUNTEER),
    (MANAGER, "TrustService/CreateToken", TRUST_ADMINS),
    (MANAGER, "TrustService/RevokeToken", TRUST_ADMINS),
    (MANAGER, "ManagerService/SubmitWorkflow", PEOPLE),
    (MANAGER, "ManagerService/GetImageArchive", A_VOLUNTEER),
    (MANAGER, "TransferService/Upload", TRANSFER),
    (MANAGER, "TransferService/Download", TRANSFER),
    (USER_ALICE, "CoordinatorService/SubmitTasks", A_MANAGER),
    (USER_ALICE, "CoordinatorService/CancelTasks", A_MANAGER),
    (USER_ALICE, "CoordinatorService/WatchTasks", A_MANAGER),
    (USER_ALICE, "CoordinatorService/VolunteerSession", A_VOLUNTEER),
    (USER_ALICE, "TrustService/CreateToken", TRUST_ADMINS),
    (USER_ALICE, "TrustService/ListTokens", TRUST_ADMINS),
    (USER_ALICE, "TrustService/RevokeToken", TRUST_ADMINS),
    (USER_ALICE, "TrustService/ListRevoked", REVOCATIONS),
    (USER_ALICE, "ManagerService/GetImageArchive", A_VOLUNTEER),
    (ADMIN_CALLER, "CoordinatorService/SubmitTasks", A_MANAGER),
    (ADMIN_CALLER, "CoordinatorService/VolunteerSession", A_VOLUNTEER),
]


def request_for(method: str, caller_id: str, mesh: Mesh) -> bytes:
    """A request that would do harm if the call got through: under the caller's own id, so
    no later check but the edge's stands in the way."""
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
    message = {
        "CoordinatorService/SubmitTasks": coordinator_pb2.SubmitTasksRequest(
            manager_id=caller_id, manager_address="127.0.0.1:9", tasks=[task(workflow_id)]
        ),
        "CoordinatorService/WatchTasks": coordinator_pb2.WatchTasksRequest(manager_id=caller_id),
        "CoordinatorService/CancelTasks": coordinator_pb2.CancelTasksRequest(
            manager_id=caller_id, workflow_id=workflow_id
        ),
        "CoordinatorService/VolunteerSession": registration(caller_id, mesh.cluster),
        "CoordinatorService/ReportVerdicts": coordinator_pb2.ReportVerdictsRequest(
            manager_id=caller_id,
            verdicts=[coordinator_pb2.Verdict(task_id="t", attempt=1, volunteer_id="v")],
        ),
        "CoordinatorService/ClearTrust": coordinator_pb2.ClearTrustRequest(volunteer_id="v"),
        "TrustService/CreateToken": trust_pb2.CreateTokenRequest(roles=["admin"], name="mallory"),
        "TrustService/RevokeToken": trust_pb2.RevokeTokenRequest(token_id=mesh.spare_token_id),
    }.get(method)
    return message.SerializeToString() if message is not None else b""


@pytest.mark.parametrize(
    ("caller", "method", "takes"),
    FORBIDDEN,
    ids=[f"{c.roles[0]}-{m.partition('/')[2]}" for c, m, _ in FORBIDDEN],
)
def test_a_role_is_refused_what_it_has_no_right_to(
    mesh: Mesh, caller: Caller, method: str, takes: str
) -> None:
    node_id = f"{caller.roles[0]}-{uuid.uuid4().hex[:12]}"
    with open_sync_channel(mesh.address, caller.credential(node_id)) as channel:
        refused = refusal(channel, method, request_for(method, node_id, mesh))
    name = method.partition("/")[2]
    assert refused == (
        "PERMISSION_DENIED",
        f"{name} is not for {caller.describe(node_id)}: it takes {takes}",
    )


ALLOWED = [
    (VOLUNTEER, "CoordinatorService/ListVolunteers"),
    (VOLUNTEER, "NodeService/GetInfo"),
    (MANAGER, "CoordinatorService/CancelTasks"),
    (USER_ALICE, "ManagerService/ListWorkflows"),
    (ADMIN_CALLER, "TrustService/ListTokens"),
]


@pytest.mark.parametrize(
    ("caller", "method"),
    ALLOWED,
    ids=[f"{c.roles[0]}-{m.partition('/')[2]}" for c, m in ALLOWED],
)
def test_a_role_is_admitted_to_what_it_has_a_right_to(
    mesh: Mesh, caller: Caller, method: str
) -> None:
    """The table refuses by role, not everyone: the same callers get through where they may."""
    node_id = f"{caller.roles[0]}-{uuid.uuid4().hex[:12]}"
    with open_sync_channel(mesh.address, caller.credential(node_id)) as channel:
        assert call(channel, method, request_for(method, node_id, mesh)) is None


# --- 5. identity: a certificate acts for its own node id only --------------------------------


def test_a_volunteer_cannot_register_as_another_and_the_real_one_keeps_its_session(
    daemons: Daemons,
) -> None:
    cluster = unique_cluster()
    coordinator = start_coordinator(daemons, cluster, "--no-mdns")
    address = coordinator.address()
    victim = daemons.start(
        "victim", "--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster,
        "--no-mdns", "--coordinator", address,
    )  # fmt: skip
    victim.address()
    wait_until(lambda: connected(address, victim.node_id), 10, "the victim to join")

    impostor_id = f"impostor-{uuid.uuid4().hex[:12]}"
    with open_sync_channel(address, credential(["volunteer"], node_id=impostor_id)) as channel:
        refused = refusal(
            channel,
            "CoordinatorService/VolunteerSession",
            registration(victim.node_id, cluster).SerializeToString(),
        )
    assert refused == (
        "PERMISSION_DENIED",
        f"this session's certificate is for node {impostor_id}, which may not register as "
        f"{victim.node_id!r}",
    )
    assert connected(address, victim.node_id)
    assert coordinator.log.count(f"volunteer {victim.node_id} (") == 1, "it was registered again"
    assert f"volunteer {victim.node_id} disconnected" not in coordinator.log
    assert "closed the session" not in victim.log
    assert impostor_id not in listed(address)


@pytest.mark.parametrize(
    "method",
    [
        "CoordinatorService/SubmitTasks",
        "CoordinatorService/WatchTasks",
        "CoordinatorService/CancelTasks",
        "CoordinatorService/ReportVerdicts",
    ],
)
def test_a_manager_cannot_act_under_another_managers_id(mesh: Mesh, method: str) -> None:
    """The mesh's own manager is the victim: its id is public (mDNS, GetInfo)."""
    impostor_id = f"impostor-{uuid.uuid4().hex[:12]}"
    victim = mesh.node_id
    request = {
        "CoordinatorService/SubmitTasks": coordinator_pb2.SubmitTasksRequest(
            manager_id=victim, manager_address="127.0.0.1:9", tasks=[task("hijack")]
        ),
        "CoordinatorService/WatchTasks": coordinator_pb2.WatchTasksRequest(manager_id=victim),
        "CoordinatorService/CancelTasks": coordinator_pb2.CancelTasksRequest(
            manager_id=victim, workflow_id="any"
        ),
        "CoordinatorService/ReportVerdicts": coordinator_pb2.ReportVerdictsRequest(
            manager_id=victim, verdicts=[coordinator_pb2.Verdict(task_id="t", volunteer_id="v")]
        ),
    }[method]
    with open_sync_channel(mesh.address, credential(["manager"], node_id=impostor_id)) as channel:
        refused = refusal(channel, method, request.SerializeToString())
    assert refused == (
        "PERMISSION_DENIED",
        f"this call's certificate is for node {impostor_id}, which may not act as manager "
        f"{victim!r}",
    )


def test_a_manager_cannot_pass_a_task_off_as_a_copy_of_another(mesh: Mesh) -> None:
    """A copy's id names the task it copies: a task claiming to copy another (a victim's, to
    make the volunteers running decoys "hold another copy" of it) is refused at the edge."""
    manager_id = f"manager-{uuid.uuid4().hex[:12]}"
    decoy = task("wf-decoy")
    decoy.replica_of = "wf-victim.t0"
    request = coordinator_pb2.SubmitTasksRequest(
        manager_id=manager_id, manager_address="127.0.0.1:9", tasks=[decoy]
    )
    with open_sync_channel(mesh.address, credential(["manager"], node_id=manager_id)) as channel:
        refused = refusal(channel, "CoordinatorService/SubmitTasks", request.SerializeToString())
    assert refused == (
        "INVALID_ARGUMENT",
        "task 'wf-decoy.t0' cannot be a copy of 'wf-victim.t0'",
    )


def test_a_managers_cancel_and_resubmission_never_touch_another_managers_tasks(
    mesh: Mesh,
) -> None:
    """Two managers, each under its own id: the second names the first's workflow and task
    ids. The mesh has no volunteer, so the first's tasks stay queued throughout."""
    first_id, second_id = (f"manager-{uuid.uuid4().hex[:12]}" for _ in range(2))
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
    tasks = [task(workflow_id, i) for i in range(2)]
    task_ids = [t.task_id for t in tasks]
    with (
        open_sync_channel(mesh.address, credential(["manager"], node_id=first_id)) as first,
        open_sync_channel(mesh.address, credential(["manager"], node_id=second_id)) as second,
    ):
        coordinator = coordinator_pb2_grpc.CoordinatorServiceStub(first)
        other = coordinator_pb2_grpc.CoordinatorServiceStub(second)
        accepted = coordinator.SubmitTasks(
            coordinator_pb2.SubmitTasksRequest(
                manager_id=first_id, manager_address="127.0.0.1:9", tasks=tasks
            ),
            timeout=CALL_SECONDS,
        )
        assert accepted.accepted == 2

        cancelled = other.CancelTasks(
            coordinator_pb2.CancelTasksRequest(
                manager_id=second_id, workflow_id=workflow_id, task_ids=task_ids
            ),
            timeout=CALL_SECONDS,
        )
        assert cancelled.cancelled == 0
        taken = other.SubmitTasks(
            coordinator_pb2.SubmitTasksRequest(
                manager_id=second_id, manager_address="127.0.0.1:8", tasks=tasks
            ),
            timeout=CALL_SECONDS,
        )
        assert taken.accepted == 0, "another manager's task ids were taken over"

        # Still the first's, still queued: its own cancel finds both.
        own = coordinator.CancelTasks(
            coordinator_pb2.CancelTasksRequest(manager_id=first_id, workflow_id=workflow_id),
            timeout=CALL_SECONDS,
        )
        assert own.cancelled == 2


def test_a_token_holder_cannot_take_a_joined_nodes_id(host: Mesh, daemons: Daemons) -> None:
    """Node ids are public; a certificate for one is what lets a session register as it."""
    token, _ = make_token(host.daemon, "volunteer")
    victim = joining_volunteer(daemons, "victim", token, host.address, host.cluster)
    victim.address()
    wait_until(lambda: connected(host.address, victim.node_id), 10, "the victim to join")

    other_token, _ = make_token(host.daemon, "volunteer")
    with pytest.raises(AccessDeniedError) as refused:
        asyncio.run(join_cluster(JoinToken.parse(other_token), victim.node_id, host.cluster))
    assert f"the coordinator at {host.join_address} refused" in str(refused.value)
    assert (
        f"node {victim.node_id} has already joined this cluster: start it from the data dir "
        "that holds its certificate, or from a fresh data dir"
    ) in str(refused.value)
    assert connected(host.address, victim.node_id)


def test_a_token_holder_cannot_become_the_coordinator_itself(mesh: Mesh) -> None:
    """The coordinator's node id is public (mDNS, GetInfo). A certificate naming it used to
    pass for the node's own owner (SELF: tokens, every workflow), so a volunteer token
    minted admin tokens. Either the join is refused, or what it grants is no more than the
    token said."""
    token, _ = make_token(mesh.daemon, "volunteer")

    async def attempt() -> Credential | AccessDeniedError:
        try:
            return await join_cluster(JoinToken.parse(token), mesh.node_id, mesh.cluster)
        except AccessDeniedError as error:
            return error

    outcome = asyncio.run(attempt())
    if isinstance(outcome, AccessDeniedError):
        assert f"node {mesh.node_id}" in str(outcome)
        return
    # Granted: the certificate must at least give no more than the volunteer token did.
    admin_token = trust_pb2.CreateTokenRequest(roles=["admin"], name="mallory")
    with open_sync_channel(mesh.address, outcome) as channel:
        code, _ = refusal(channel, "TrustService/CreateToken", admin_token.SerializeToString())
    assert code == "PERMISSION_DENIED", "a volunteer token minted an admin token"


@pytest.mark.parametrize("method", ["TrustService/CreateToken", "TrustService/ListTokens"])
def test_a_certificate_naming_the_nodes_id_without_its_key_is_not_its_owner(
    mesh: Mesh, method: str
) -> None:
    """Should the CA ever issue one (a bug, a token of old), the node's own id on another
    key is not the node: its owner is who holds its key."""
    namesake = credential(["volunteer"], node_id=mesh.node_id)
    with open_sync_channel(mesh.address, namesake) as channel:
        refused = refusal(channel, method, request_for(method, mesh.node_id, mesh))
    assert refused == (
        "PERMISSION_DENIED",
        f"{method.partition('/')[2]} is not for node {mesh.node_id[:12]} (volunteer): it "
        f"takes {TRUST_ADMINS}",
    )


# --- 6. revocation ------------------------------------------------------------------------


def test_revoking_a_token_ends_its_volunteers_session_at_once_and_for_good(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    coordinator = start_coordinator(daemons, cluster, "--no-mdns")
    address = coordinator.address()
    token, token_id = make_token(coordinator, "volunteer")
    volunteer = joining_volunteer(daemons, "volunteer", token, address, cluster)
    volunteer.address()
    wait_until(lambda: connected(address, volunteer.node_id), 10, "the volunteer to join")
    held = held_credential(volunteer)
    assert held is not None

    revoked = run_cli("token", "revoke", token_id, "--data-dir", str(coordinator.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == (
        f"token {token_id} revoked, with the 1 member that joined with it"
    )
    # Far sooner than three missed heartbeats (90 s): the coordinator ended the session.
    wait_until(lambda: not connected(address, volunteer.node_id), 5, "the session to end")
    assert f"volunteer {volunteer.node_id} revoked: ending its session" in coordinator.log

    refused_for = (
        f"node {volunteer.node_id[:12]} (volunteer) was revoked from this cluster: its id stays "
        "refused; join from a fresh data dir with a new token"
    )
    wait_until(lambda: refused_for in volunteer.log, 10, "the volunteer's reconnect refused")
    assert not connected(address, volunteer.node_id)
    with open_sync_channel(address, held) as channel:
        assert refusal(channel, "CoordinatorService/ListVolunteers") == (
            "UNAUTHENTICATED",
            refused_for,
        )
        assert refusal(channel, "TrustService/Renew")[0] == "UNAUTHENTICATED"
    assert token_info(coordinator, token_id)["revoked"] is True

    data_dir = tmp_path / "newcomer"
    result = run_node(data_dir, token, address, cluster)
    assert result.returncode == 4, result.stderr
    assert f"join token {token_id} was revoked: ask for a new one" in result.stderr
    assert not (tls_dir(data_dir) / f"{NODE}.pem").exists()

    # The coordinator remembers it across a restart.
    volunteer.kill()
    assert coordinator.terminate() == 0, coordinator.log
    restarted = daemons.add(Daemon(coordinator.data_dir, coordinator.args))
    restarted_address = restarted.address()
    with open_sync_channel(restarted_address, held) as channel:
        assert refusal(channel, "NodeService/GetInfo") == ("UNAUTHENTICATED", refused_for)


def test_revoking_a_managers_token_ends_its_open_watch(host: Mesh) -> None:
    """Not only volunteer sessions: a manager's open watch of its tasks once went on
    flowing after its token was revoked."""
    token, token_id = make_token(host.daemon, "manager")
    manager_id = f"manager-{uuid.uuid4().hex[:12]}"
    held = asyncio.run(join_cluster(JoinToken.parse(token), manager_id, host.cluster))
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
    with open_sync_channel(host.address, held) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        watch = stub.WatchTasks(
            coordinator_pb2.WatchTasksRequest(manager_id=manager_id), timeout=30
        )
        stub.SubmitTasks(
            coordinator_pb2.SubmitTasksRequest(
                manager_id=manager_id, manager_address="127.0.0.1:9", tasks=[task(workflow_id)]
            ),
            timeout=CALL_SECONDS,
        )
        assert next(watch).task_id == f"{workflow_id}.t0", "the watch is open"
        revoked = run_cli("token", "revoke", token_id, "--data-dir", str(host.daemon.data_dir))
        assert revoked.returncode == 0, revoked.stderr
        assert "with the 1 member that joined with it" in revoked.stdout

        with pytest.raises(grpc.RpcError) as ended:
            next(watch)
        # Ended by the revocation, not by the watch's own deadline.
        assert ended.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, ended.value.details()
        assert refusal(channel, "CoordinatorService/CancelTasks")[0] == "UNAUTHENTICATED"


# --- 7. vcnode login ----------------------------------------------------------------------


def person_env(tmp_path: Path, name: str) -> dict[str, str]:
    """A person's own machine: no login yet, no daemon's data dir."""
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / f"{name}-config"),
        "XDG_DATA_HOME": str(tmp_path / f"{name}-data"),
    }


PLAIN = '[workflow]\nname = "plain"\n\n[[tasks]]\nname = "noop"\ncommand = ["true"]\n'


def test_login_with_a_user_token_keeps_a_credential_that_the_cli_uses(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    workflow = tmp_path / "plain.toml"
    workflow.write_text(PLAIN)
    admins = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir), "--json")
    assert admins.returncode == 0, admins.stderr
    admins_id = json.loads(admins.stdout)["workflow_id"]

    env = person_env(tmp_path, "alice")
    before = run_cli("workflows", "--manager", address, env=env)
    assert before.returncode == 4, before.stderr
    assert "this machine holds no credential for a vcnode cluster" in before.stderr

    token, token_id = make_token(manager, "user", "--name", "alice")
    login = run_cli("login", token, env=env)
    assert login.returncode == 0, login.stderr
    directory = tmp_path / "alice-config" / "vcnode"
    assert login.stdout.strip() == f"logged in as alice (user); kept in {directory}"
    assert stat.S_IMODE((directory / f"{USER}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    kept = Credential.load(directory, USER)
    assert kept is not None
    assert (kept.identity.user, kept.identity.roles) == ("alice", frozenset({"user"}))
    assert token_info(manager, token_id)["joined"] == 1

    listed = run_cli("workflows", "--manager", address, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [], "alice sees the admin's workflow"
    submitted = run_cli("submit", str(workflow), "--manager", address, "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    alices_id = json.loads(submitted.stdout)["workflow_id"]
    listed = run_cli("workflows", "--manager", address, "--json", env=env)
    assert [w["workflow_id"] for w in json.loads(listed.stdout)] == [alices_id]
    everyone = cli_json("workflows", "--data-dir", str(manager.data_dir))
    assert {w["workflow_id"] for w in everyone} == {admins_id, alices_id}


def test_login_refuses_a_node_token_and_keeps_nothing(mesh: Mesh, tmp_path: Path) -> None:
    token, _ = make_token(mesh.daemon, "volunteer")
    env = person_env(tmp_path, "bob")
    result = run_cli("login", token, env=env)
    assert result.returncode == 2, result.stderr
    assert "that token is for a node, not a person" in result.stderr
    assert "--role user" in result.stderr
    assert not (tmp_path / "bob-config" / "vcnode" / f"{USER}.key").exists()

    garbage = run_cli("login", "vcn1-nope", env=env)
    assert garbage.returncode == 2, garbage.stderr
    assert "not a join token" in garbage.stderr


def test_an_admin_logged_in_elsewhere_manages_tokens_and_a_user_may_not(
    mesh: Mesh, tmp_path: Path
) -> None:
    admin_token, _ = make_token(mesh.daemon, "admin", "--name", "boss")
    user_token, _ = make_token(mesh.daemon, "user", "--name", "carol")
    boss, carol = person_env(tmp_path, "boss"), person_env(tmp_path, "carol")
    for token, env in ((admin_token, boss), (user_token, carol)):
        logged_in = run_cli("login", token, env=env)
        assert logged_in.returncode == 0, logged_in.stderr

    made = run_cli(
        "token", "create", "--role", "volunteer", "--coordinator", mesh.address, "--json",
        env=boss,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    made_id = json.loads(made.stdout)["token_id"]
    assert token_info(mesh.daemon, made_id)["roles"] == ["volunteer"]

    for action in (["list"], ["revoke", made_id], ["create", "--role", "admin", "--name", "x"]):
        refused = run_cli("token", *action, "--coordinator", mesh.address, env=carol)
        assert refused.returncode == 4, refused.stderr
        name = {"list": "ListTokens", "revoke": "RevokeToken", "create": "CreateToken"}
        assert (
            f"the coordinator at {mesh.address} refused: {name[action[0]]} is not for user "
            f"carol (user): it takes {TRUST_ADMINS}"
        ) in refused.stderr
    assert token_info(mesh.daemon, made_id)["revoked"] is False


# --- 8. a coordinator of another CA -------------------------------------------------------


def volunteers_of(coordinator: Daemon) -> list[str]:
    """The volunteers a coordinator of its own CA knows, asked with its own admin
    credential (so a failed call fails the test rather than listing nobody)."""
    own = held_credential(coordinator, ADMIN)
    assert own is not None
    with open_sync_channel(coordinator.address(), own) as channel:
        reply = coordinator_pb2_grpc.CoordinatorServiceStub(channel).ListVolunteers(
            coordinator_pb2.ListVolunteersRequest(), timeout=CALL_SECONDS
        )
    return [v.volunteer_id for v in reply.volunteers]


def test_a_coordinator_of_another_ca_announced_in_our_cluster_is_never_followed(
    daemons: Daemons,
) -> None:
    """mDNS is a hint: the fake is found first (it is alone), tried, and refused at the
    handshake; once the real one appears the volunteer joins it."""
    cluster = unique_cluster()
    fake = start_coordinator(daemons, cluster, name="fake", provisioned=False)
    fake_address = fake.address()
    fake_credential = held_credential(fake)
    assert fake_credential is not None
    assert fake_credential.ca_hash != authority().ca_hash, "the fake has a CA of its own"
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster
    )
    volunteer.address()
    skipped = f"coordinator {fake_address} skipped: untrusted ("
    wait_until(lambda: skipped in volunteer.log, 15, "the volunteer to try the fake")
    line = next(line for line in volunteer.log.splitlines() if skipped in line)
    assert "its certificate is not from this cluster's CA" in line, line

    real = start_coordinator(daemons, cluster, name="real")
    real_address = real.address()
    wait_until(lambda: connected(real_address, volunteer.node_id), 20, "the volunteer to join")
    # The coordinator counts it connected as it sends the welcome; the volunteer says it has
    # joined once the welcome arrives.
    joined = f"at {real_address} (heartbeat every"
    wait_until(lambda: joined in volunteer.log, 10, "the volunteer to say it joined")
    assert volunteers_of(fake) == []
    assert f"volunteer {volunteer.node_id}" not in fake.log


def _announced_join_addresses(cluster: str) -> list[str]:
    """The join ports mDNS shows for coordinators of `cluster` now (browsing 3 s at most)."""

    async def browse() -> list[str]:
        async with listening(cluster, ("127.0.0.1",)) as directory:
            found = await directory.wait_for(
                lambda table: (
                    [p.join_address for p in table.coordinators() if p.join_address] or None
                ),
                3.0,
            )
        return [address for address in found or [] if address]

    return asyncio.run(browse())


def test_a_join_port_of_another_ca_found_on_mdns_does_not_stop_the_join(
    daemons: Daemons,
) -> None:
    """The decoy refuses the token (it never made it); the token's own address, tried next,
    lets the node in. The first refusal once ended the join: a coordinator of another CA
    announced in our cluster stopped every join."""
    cluster = unique_cluster()
    real = start_coordinator(daemons, cluster, "--no-mdns")  # found through the token only
    address = real.address()
    decoy = start_coordinator(daemons, cluster, name="decoy", provisioned=False)
    decoy.address()
    wait_until(lambda: _announced_join_addresses(cluster), 15, "the decoy's join port on mDNS")
    token, _ = make_token(real, "volunteer")
    args = ["--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster]
    args += ["--coordinator", address, "--token", token]  # mDNS on: it browses for joins
    volunteer = daemons.add(Daemon(daemons.root / "volunteer", args), provisioned=False)
    volunteer.address()
    wait_until(lambda: connected(address, volunteer.node_id), 10, "the volunteer to join")


# --- 8. operators' tools: gRPC health and reflection ------------------------------------------


def _health(channel: grpc.Channel, service: str = "") -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # The stub packages type the stubs for grpc.aio only.
    stub: Any = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_SECONDS)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _reflected(channel: grpc.Channel) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=CALL_SECONDS))
    return sorted(service.name for service in reply.list_services_response.service)


def test_members_see_health_and_reflection_and_a_probe_without_a_certificate_health_only(
    mesh: Mesh,
) -> None:
    with open_sync_channel(mesh.address, admin_credential()) as channel:
        assert _health(channel) == "SERVING"
        assert _health(channel, "vcnode.v1.ManagerService") == "SERVING"
        assert _reflected(channel) == [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "vcnode.v1.CoordinatorService",
            "vcnode.v1.ManagerService",
            "vcnode.v1.NodeService",
            "vcnode.v1.TransferService",
            "vcnode.v1.TrustService",
        ]
    # A probe on the plaintext join port (Kubernetes' gRPC probe has no certificate).
    with grpc.insecure_channel(mesh.join_address) as channel:
        assert _health(channel) == "SERVING"
        with pytest.raises(grpc.RpcError) as refused:
            _reflected(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
