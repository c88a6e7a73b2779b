"""The trust logic on its own: join tokens and their proof, the certificates' identities, the
access rule, what a token may grant, and the membership that trades tokens for certificates
(in real SQLite, with a clock the test moves). Real daemons: tests/integration/test_trust.py.
"""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlite_utils
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from coordinator_node.membership import JoinRefused, Membership, TokenProblem, token_problem
from coordinator_node.membership_store import MIGRATIONS, MembershipStore
from daemon.errors import ConfigError
from daemon.rpc.v1 import (
    control_pb2,
    coordinator_pb2,
    manager_pb2,
    node_pb2,
    transfer_pb2,
    trust_pb2,
)
from daemon.store import Database
from daemon.transport.access import DASHBOARD_RULE, METRICS_RULE, RULES, AccessPolicy, Caller
from daemon.trust import pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.bootstrap import establish
from daemon.trust.credentials import (
    ADMIN,
    CA_KEY_FILE,
    NODE,
    Credential,
    LiveCredential,
    tls_dir,
)
from daemon.trust.tokens import MAX_ADDRESSES, JoinToken, proof, proof_holds, secret_key

CA_HASH = "a" * 52
TOKEN = f"vcn1-abcdefgh-{'b' * 26}-{CA_HASH}"


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_reads_back_as_it_was_printed() -> None:
    with_addresses = f"{TOKEN}@10.0.0.5:7449,[fd00::1]:7449,127.0.0.1:7449"
    for text in (TOKEN, with_addresses):
        token = JoinToken.parse(f"  {text}\n")  # as pasted
        assert str(token) == text
    assert JoinToken.parse(with_addresses).addresses == (
        "10.0.0.5:7449",
        "[fd00::1]:7449",
        "127.0.0.1:7449",
    )
    parsed = JoinToken.parse(TOKEN)
    assert (parsed.token_id, parsed.secret, parsed.ca_hash) == ("abcdefgh", "b" * 26, CA_HASH)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        TOKEN.replace("vcn1", "vcn2"),
        TOKEN[:-1],  # a CA hash one character short
        TOKEN.replace("b" * 26, "b" * 25),  # a secret one character short
        TOKEN.upper(),
        TOKEN.replace("abcdefgh", "abcdefg1"),  # 1 is not base32
        TOKEN + "@",
        f"{TOKEN} {TOKEN}",
    ],
)
def test_what_is_not_a_join_token_is_refused_with_the_shape_it_should_have(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a join token \(expected vcn1-<id>-<secret>-"):
        JoinToken.parse(text)


@pytest.mark.parametrize(
    "addresses",
    [
        "coordinator",
        "10.0.0.5:7449,,10.0.0.6:7449",
        "10.0.0.5:notaport",
        ",".join(f"10.0.0.{i}:7449" for i in range(MAX_ADDRESSES + 1)),
    ],
)
def test_a_tokens_addresses_must_be_a_few_host_ports(addresses: str) -> None:
    with pytest.raises(ValueError, match="the join token's addresses are not HOST:PORT"):
        JoinToken.parse(f"{TOKEN}@{addresses}")


def test_the_proof_binds_the_secret_to_one_certificate_request() -> None:
    key = JoinToken.parse(TOKEN).key
    assert key == secret_key("b" * 26) != secret_key("c" * 26)
    request = pki.certificate_request(pki.new_key(), "node-1")
    other_request = pki.certificate_request(pki.new_key(), "node-1")
    claimed = proof(key, request)
    assert proof_holds(key, request, claimed)
    assert not proof_holds(secret_key("c" * 26), request, claimed), "another secret"
    assert not proof_holds(key, other_request, claimed), "replayed for another key"
    assert b"b" * 26 not in claimed + key, "the secret itself is sent or kept"


# --- certificates -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("ca"), "unit")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("other-ca"), "unit")


@pytest.mark.parametrize(
    "identity",
    [
        pki.Identity("n1", frozenset({"volunteer"})),
        pki.Identity("n2", frozenset({"coordinator", "manager", "volunteer"})),
        pki.Identity("user-1", frozenset({"user"}), user="alice"),
        pki.Identity("admin-1", frozenset({"admin"}), user="root"),
        pki.Identity("n3", frozenset({"volunteer"}), vouched=True),
        pki.Identity("n4", frozenset({"volunteer"}), owner="alice"),
        pki.Identity("n5", frozenset({"manager", "volunteer"}), vouched=True, owner="bob-2"),
    ],
)
def test_an_identity_reads_back_from_the_certificate_that_names_it(
    ca: ClusterAuthority, identity: pki.Identity
) -> None:
    held = ca.credential(identity)
    assert held.identity == identity
    names = pki.load_cert(held.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    node_names = names.value.get_values_for_type(x509.DNSName)
    assert (pki.ANY_NODE in node_names) == bool(identity.roles & set(pki.NODE_ROLES))


def test_names_outside_vcnode_or_of_unknown_roles_grant_nothing() -> None:
    names = [
        "n1.id.vcnode",
        "admin.role.vcnode.evil.example",  # not under .vcnode
        "root.role.vcnode",  # no such role
        "admin.role.other.vcnode",  # a kind that is not `role`
        "Admin.role.vcnode",  # not a label
        "volunteer.role.vcnode",
    ]
    assert pki.Identity.from_names(names) == pki.Identity("n1", frozenset({"volunteer"}))
    assert pki.Identity.from_names(["volunteer.role.vcnode", "node.vcnode"]) is None, "no id"


def test_a_volunteer_is_vouched_for_and_owned_only_by_the_names_that_say_so() -> None:
    said = ["n1.id.vcnode", "volunteer.role.vcnode", "vouched.trust.vcnode", "alice.owner.vcnode"]
    assert pki.Identity.from_names(said) == pki.Identity(
        "n1", frozenset({"volunteer"}), vouched=True, owner="alice"
    )
    assert pki.Identity("n1", frozenset({"volunteer"}), None, True, "alice").names() == [
        *said[:2],
        pki.ANY_NODE,
        *said[2:],
    ]
    not_said = [
        "n1.id.vcnode",
        "volunteer.role.vcnode",
        "vouched.trust.vcnode.evil.example",  # not under .vcnode
        "yes.trust.vcnode",  # trust says vouched or nothing
        "vouched.role.vcnode",  # not a role
        "vouched.vcnode",  # no kind
        "Alice.owner.vcnode",  # not a label
        "1alice.owner.vcnode",  # a label, not a person's name
        "alice.owner.other.vcnode",  # a kind that is not `owner`
    ]
    assert pki.Identity.from_names(not_said) == pki.Identity("n1", frozenset({"volunteer"}))


def test_a_certificate_of_another_ca_or_for_another_key_is_not_ours(
    ca: ClusterAuthority, other_ca: ClusterAuthority
) -> None:
    key = pki.new_key()
    identity = pki.Identity("n1", frozenset({"volunteer"}))
    ours = pki.load_cert(ca.issue(key.public_key(), identity))
    theirs = pki.load_cert(other_ca.issue(key.public_key(), identity))
    pki.check_issued(ca.cert, ours, key)
    with pytest.raises(ValueError, match="was not issued by the cluster's CA"):
        pki.check_issued(ca.cert, theirs, key)
    with pytest.raises(ValueError, match="is not for this node's key"):
        pki.check_issued(ca.cert, ours, pki.new_key())
    assert ca.ca_hash != other_ca.ca_hash
    assert len(ca.ca_hash) == 52, "as a token pins it"


def test_a_saved_credential_keeps_its_key_owner_only(ca: ClusterAuthority, tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    held = ca.credential(pki.Identity("n1", frozenset({"volunteer"})))
    held.save(directory, NODE)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / f"{NODE}.key").stat().st_mode) == 0o600
    assert Credential.load(directory, NODE) == held
    assert Credential.load(directory, ADMIN) is None


# --- the access rule ------------------------------------------------------------------------


def every_rpc() -> set[str]:
    """Every method the nodes serve: ours, and the standard health and reflection."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    modules = (node_pb2, coordinator_pb2, manager_pb2, transfer_pb2, trust_pb2, control_pb2)
    return {
        f"/{service.full_name}/{method.name}"
        for module in (*modules, health_pb2, reflection_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


# Whether a node serves is no secret: a probe without a certificate may ask.
OPEN_TO_STRANGERS = {
    "/vcnode.v1.TrustService/Join",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
}


def test_every_rpc_has_a_rule_and_every_rule_an_rpc() -> None:
    """A method without a rule is refused to everyone: a new RPC must be given one."""
    assert set(RULES) - {DASHBOARD_RULE, METRICS_RULE} == every_rpc()


STRANGER = Caller(None)
OWN_ID = "own-node"


def caller(*roles: str, node_id: str = "n1", user: str | None = None) -> Caller:
    identity = pki.Identity(node_id, frozenset(roles), user)
    return Caller(identity, is_self=node_id == OWN_ID)


@pytest.mark.parametrize("method", sorted(every_rpc()))
def test_a_stranger_may_call_join_and_nothing_else(method: str) -> None:
    refused = AccessPolicy(OWN_ID).refusal(method, STRANGER)
    if method in OPEN_TO_STRANGERS:
        assert refused is None
    else:
        assert refused is not None
        assert refused[0] == grpc.StatusCode.UNAUTHENTICATED
        assert refused[1].startswith("this port takes only join requests")


CONTROL = sorted(m for m in every_rpc() if m.startswith("/vcnode.v1.OwnerControl/"))
LOCAL_OWNER = Caller(None, is_local_owner=True)


@pytest.mark.parametrize("method", CONTROL)
def test_the_owners_control_is_for_the_control_socket_only(method: str) -> None:
    """Not even the node's own certificate or an admin may pause a volunteer over the
    network: only whoever can open the owner-only socket."""
    policy = AccessPolicy(OWN_ID)
    for someone in (caller("admin"), caller("volunteer", node_id=OWN_ID), caller("user")):
        refused = policy.refusal(method, someone)
        assert refused is not None
        assert refused[0] == grpc.StatusCode.PERMISSION_DENIED
        assert "the machine's owner, on the node's control socket" in refused[1]
    assert policy.refusal(method, LOCAL_OWNER) is None


@pytest.mark.parametrize("method", sorted(every_rpc() - set(CONTROL)))
def test_the_control_socket_reaches_nothing_but_the_owners_control(method: str) -> None:
    refused = AccessPolicy(OWN_ID, local_socket=True).refusal(method, LOCAL_OWNER)
    if method in OPEN_TO_STRANGERS:
        assert refused is None
    else:
        assert refused is not None


def test_a_method_without_a_rule_is_refused_to_everyone() -> None:
    policy = AccessPolicy(OWN_ID)
    for who in (STRANGER, caller("admin", user="root"), caller(node_id=OWN_ID)):
        assert policy.refusal("/vcnode.v1.TrustService/Backdoor", who) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "no method /vcnode.v1.TrustService/Backdoor here",
        )


def test_a_revoked_member_is_refused_even_what_every_member_may_do() -> None:
    policy = AccessPolicy(OWN_ID)
    method = "/vcnode.v1.NodeService/GetInfo"
    assert policy.refusal(method, caller("volunteer")) is None
    policy.revoked = lambda node_id: node_id == "n1"
    assert policy.refusal(method, caller("volunteer")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "node n1 (volunteer) was revoked from this cluster: its id stays refused; join from "
        "a fresh data dir with a new token",
    )
    assert policy.refusal(method, caller("volunteer", node_id="n2")) is None


def test_only_the_nodes_own_id_is_its_owner() -> None:
    policy = AccessPolicy(OWN_ID)
    create = "/vcnode.v1.TrustService/CreateToken"
    assert policy.refusal(create, caller("volunteer", node_id=OWN_ID)) is None
    assert policy.refusal(create, caller("volunteer", node_id="own-node-2")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CreateToken is not for node own-node-2 (volunteer): it takes an admin or this node's "
        "owner",
    )
    assert caller("user", user="alice").owner == "alice"
    assert not caller("user", user="alice").sees_everything
    assert caller("admin", user="root").sees_everything
    assert caller(node_id=OWN_ID).sees_everything


class TlsContext:
    """What grpc tells a servicer about a call's TLS session (the parts the edge reads)."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def call_context(auth: dict[str, list[bytes]]) -> Any:
    """A servicer context, as far as the edge reads one."""
    return TlsContext(auth)


def tls_call(held: Credential) -> Any:
    """The context of a call made over mutual TLS with `held`."""
    names = pki.load_cert(held.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return call_context(
        {
            "transport_security_type": [b"ssl"],
            "x509_subject_alternative_name": [
                name.encode() for name in names.value.get_values_for_type(x509.DNSName)
            ],
            "x509_pem_cert": [held.cert_pem],
        }
    )


def test_the_nodes_owner_is_who_holds_its_key_not_whoever_names_its_id(
    ca: ClusterAuthority,
) -> None:
    own = ca.credential(pki.Identity(OWN_ID, frozenset({"coordinator"})))
    namesake = ca.credential(pki.Identity(OWN_ID, frozenset({"volunteer"})))
    policy = AccessPolicy(OWN_ID, LiveCredential(own).own_certificates)
    assert policy.caller(tls_call(own)) == Caller(own.identity, is_self=True)
    assert policy.caller(tls_call(namesake)) == Caller(namesake.identity, is_self=False)
    assert (
        policy.refusal("/vcnode.v1.TrustService/CreateToken", policy.caller(tls_call(own))) is None
    )
    assert policy.caller(call_context({"transport_security_type": [b"insecure"]})) == STRANGER
    assert AccessPolicy(OWN_ID).caller(tls_call(own)) == Caller(own.identity, is_self=False), (
        "a node that names no certificate of its own has no owner"
    )


def rewrapped(pem: bytes, width: int, newline: bytes) -> bytes:
    """The same certificate, its base64 in lines of `width` ending in `newline`."""
    lines = pem.strip().split(b"\n")
    body = b"".join(lines[1:-1])
    chunks = [body[at : at + width] for at in range(0, len(body), width)]
    return newline.join([lines[0], *chunks, lines[-1]]) + newline


def test_the_owner_presents_this_nodes_certificate_byte_for_byte(ca: ClusterAuthority) -> None:
    """The certificate a caller presented is compared with the node's own, never parsed:
    however its PEM is wrapped it is the same certificate; a byte changed, or what is no
    certificate, is not the node's."""
    own = ca.credential(pki.Identity(OWN_ID, frozenset({"coordinator"})))
    policy = AccessPolicy(OWN_ID, LiveCredential(own).own_certificates)

    def presenting(pem: bytes) -> Caller:
        call = tls_call(own)
        call.auth_context()["x509_pem_cert"] = [pem]
        return policy.caller(call)

    for width, newline in ((76, b"\n"), (64, b"\r\n"), (10_000, b"\n")):
        assert presenting(rewrapped(own.cert_pem, width, newline)).is_self
    body = own.cert_pem.split(b"\n")[1]
    changed = body[:20] + (b"A" if body[20:21] != b"A" else b"B") + body[21:]
    for pem in (
        own.cert_pem.replace(body, changed),
        b"-----BEGIN CERTIFICATE-----\nMAA=\n",
        b"",
        own.cert_pem + own.cert_pem,
    ):
        assert presenting(pem) == Caller(own.identity, is_self=False)
    call = tls_call(own)
    del call.auth_context()["x509_pem_cert"]
    assert policy.caller(call) == Caller(own.identity, is_self=False)


def test_the_certificate_before_the_latest_renewal_is_still_the_owners(
    ca: ClusterAuthority,
) -> None:
    """A CLI may have read the node's files just before it renewed its certificate: that
    one is still the owner's until the next renewal, the one before it no longer."""
    identity = pki.Identity(OWN_ID, frozenset({"manager"}))
    first, second, third = (ca.credential(identity) for _ in range(3))
    live = LiveCredential(first)
    policy = AccessPolicy(OWN_ID, live.own_certificates)
    assert [policy.caller(tls_call(held)).is_self for held in (first, second)] == [True, False]
    live.replace(second)
    assert [policy.caller(tls_call(held)).is_self for held in (first, second, third)] == [
        True,
        True,
        False,
    ]
    live.replace(third)
    assert [policy.caller(tls_call(held)).is_self for held in (first, second, third)] == [
        False,
        True,
        True,
    ]


# --- what a token may grant ---------------------------------------------------------------

DAY = 86400.0


@pytest.mark.parametrize(
    ("roles", "name", "ttl", "uses", "problem"),
    [
        (["volunteer"], "", DAY, 0, None),
        (["manager", "volunteer"], "", DAY, 3, None),
        (["user"], "alice", DAY, 1, None),
        (["admin"], "root", 365 * DAY, 0, None),
        ([], "", DAY, 0, "a token needs a role"),
        (["coordinator"], "", DAY, 0, "a token cannot grant coordinator"),
        (["volunteer", "root"], "", DAY, 0, "a token cannot grant root"),
        (["user"], "", DAY, 0, "a user token needs --name"),
        (["user"], "Alice", DAY, 0, "a user token needs --name"),
        (["admin", "volunteer"], "root", DAY, 0, "grants that role alone"),
        (["user", "admin"], "root", DAY, 0, "grants that role alone"),
        (["volunteer"], "alice", DAY, 0, "--name is for user and admin tokens"),
        (["volunteer"], "", 0.0, 0, "a token lives more than 0 s"),
        (["volunteer"], "", 366 * DAY, 0, "at most 365 days"),
        (["volunteer"], "", DAY, -1, "--uses is a count of joins"),
    ],
)
def test_a_token_grants_volunteer_manager_user_or_admin_and_never_coordinator(
    roles: list[str], name: str, ttl: float, uses: int, problem: str | None
) -> None:
    found = token_problem(roles, name, ttl, uses)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    ("roles", "name", "vouched", "owner", "problem"),
    [
        (["volunteer"], "", True, "alice", None),
        (["volunteer"], "", False, "alice", None),
        (["manager", "volunteer"], "", True, "", None),
        (["manager"], "", True, "", "add volunteer to --role or leave --vouched out"),
        (["admin"], "root", True, "", "--vouched is for volunteer tokens"),
        (["manager"], "", False, "alice", "add volunteer to --role or leave --owner out"),
        (["user"], "alice", False, "alice", "a user token runs no tasks"),
        (["volunteer"], "", False, "Alice", "--owner 'Alice' is not a person's name"),
        (["volunteer"], "", False, "1alice", "is not a person's name"),
        (["volunteer"], "", False, "alice-", "is not a person's name"),
        (["volunteer"], "", False, "a" * 33, "is not a person's name"),
        (["volunteer"], "", False, "alice.owner.vcnode", "is not a person's name"),
    ],
)
def test_only_a_volunteer_token_vouches_for_its_nodes_or_names_their_owner(
    roles: list[str], name: str, vouched: bool, owner: str, problem: str | None
) -> None:
    found = token_problem(roles, name, DAY, 0, vouched=vouched, owner=owner)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


# --- the membership -----------------------------------------------------------------------


@dataclass
class Clock:
    # Starts at the real time: certificates are dated by the real clock.
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Coordinator:
    membership: Membership
    store: MembershipStore
    clock: Clock
    data_dir: Path


@pytest.fixture
async def coordinator(tmp_path: Path, ca: ClusterAuthority) -> AsyncIterator[Coordinator]:
    store = MembershipStore(tmp_path)
    await store.open()
    clock = Clock()
    membership = Membership(store, ca, "unit", clock=clock)
    await membership.open()
    yield Coordinator(membership, store, clock, tmp_path)
    await store.close()


@dataclass(frozen=True)
class Joiner:
    """A node about to join: its key, its request, and its proof for `token`."""

    key: pki.Key
    request: bytes
    node_id: str

    @classmethod
    def new(cls, node_id: str) -> Joiner:
        key = pki.new_key()
        return cls(key, pki.certificate_request(key, node_id), node_id)

    async def join(self, membership: Membership, token: JoinToken) -> tuple[bytes, bytes]:
        return await membership.join(
            token.token_id, self.request, proof(token.key, self.request), self.node_id
        )


async def test_a_join_grants_what_the_token_says_not_what_the_request_asks(
    coordinator: Coordinator, ca: ClusterAuthority
) -> None:
    """The request asks for admin in its subject alternative names; the token says volunteer."""
    key = pki.new_key()
    asking = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("admin.role.vcnode"), x509.DNSName("root.user.vcnode")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    token, _ = await coordinator.membership.create_token(["volunteer"])
    ca_pem, cert_pem = await coordinator.membership.join(
        token.token_id, asking, proof(token.key, asking), "n1"
    )
    assert ca_pem == ca.cert_pem
    cert = pki.load_cert(cert_pem)
    pki.check_issued(ca.cert, cert, key)
    assert pki.identity_of(cert) == pki.Identity("n1", frozenset({"volunteer"}))
    [info] = await coordinator.membership.tokens()
    assert (info.token_id, info.joined) == (token.token_id, 1)


async def test_a_person_token_names_the_person(coordinator: Coordinator) -> None:
    token, _ = await coordinator.membership.create_token(["user"], name="alice")
    _, cert = await Joiner.new("user-1").join(coordinator.membership, token)
    assert pki.identity_of(pki.load_cert(cert)) == pki.Identity(
        "user-1", frozenset({"user"}), user="alice"
    )


async def test_a_vouched_token_with_an_owner_says_both_in_its_certificates_and_renewals(
    coordinator: Coordinator,
) -> None:
    token, info = await coordinator.membership.create_token(
        ["volunteer"], vouched=True, owner="alice"
    )
    assert (info.vouched, info.owner) == (True, "alice")
    plain, _ = await coordinator.membership.create_token(["volunteer"])
    _, cert = await Joiner.new("n1").join(coordinator.membership, token)
    _, plain_cert = await Joiner.new("n2").join(coordinator.membership, plain)
    vouched = pki.Identity("n1", frozenset({"volunteer"}), vouched=True, owner="alice")
    assert pki.identity_of(pki.load_cert(cert)) == vouched
    plain_identity = pki.Identity("n2", frozenset({"volunteer"}))
    assert pki.identity_of(pki.load_cert(plain_cert)) == plain_identity
    listed = {t.token_id: (t.vouched, t.owner) for t in await coordinator.membership.tokens()}
    assert listed == {token.token_id: (True, "alice"), plain.token_id: (False, "")}

    # A renewal issues what the member record holds, whatever the caller's certificate said.
    for said in (vouched, pki.Identity("n1", frozenset({"volunteer"}))):
        renewed = await coordinator.membership.renew(said, Joiner.new("n1").request)
        assert pki.identity_of(pki.load_cert(renewed)) == vouched
    renewed = await coordinator.membership.renew(
        pki.Identity("n2", frozenset({"volunteer"}), vouched=True), Joiner.new("n2").request
    )
    assert pki.identity_of(pki.load_cert(renewed)) == plain_identity
    # A certificate this coordinator has no record of is renewed as it is.
    restored = pki.Identity("n9", frozenset({"volunteer"}), vouched=True, owner="bob")
    renewed = await coordinator.membership.renew(restored, Joiner.new("n9").request)
    assert pki.identity_of(pki.load_cert(renewed)) == restored


async def test_a_vouched_or_owned_token_for_no_volunteer_is_not_made(
    coordinator: Coordinator,
) -> None:
    with pytest.raises(TokenProblem, match="--vouched is for volunteer tokens"):
        await coordinator.membership.create_token(["manager"], vouched=True)
    with pytest.raises(TokenProblem, match="--owner names the person"):
        await coordinator.membership.create_token(["manager"], owner="alice")
    assert await coordinator.membership.tokens() == []


async def test_tokens_and_members_kept_before_vouching_read_back_unvouched(
    tmp_path: Path,
) -> None:
    old = Database(tmp_path / "membership.db", MIGRATIONS[:1])
    await old.open()

    def keep(db: sqlite_utils.Database) -> None:
        db.execute("INSERT INTO tokens VALUES ('t1', x'00', 'volunteer', '', 1, 2, 0, 1, 0)")
        db.execute("INSERT INTO members VALUES ('n1', 't1', 'volunteer', '', 1, 2, 0)")

    await old.run(keep)
    await old.close()
    store = MembershipStore(tmp_path)
    await store.open()
    try:
        [token] = await store.tokens()
        member = await store.member("n1")
    finally:
        await store.close()
    assert (token.vouched, token.owner) == (False, "")
    assert member is not None
    assert (member.vouched, member.owner) == (False, "")


NOT_OURS = (
    "the join token is not one this coordinator made, or its secret does not match: "
    "check you copied all of it"
)


async def test_a_wrong_secret_or_an_unknown_token_is_refused_alike(
    coordinator: Coordinator,
) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"])
    forged = JoinToken(token.token_id, "c" * 26, token.ca_hash)
    unknown = JoinToken("zzzzzzzz", token.secret, token.ca_hash)
    for attempt in (forged, unknown):
        with pytest.raises(JoinRefused) as refused:
            await Joiner.new("n1").join(coordinator.membership, attempt)
        assert str(refused.value) == NOT_OURS
    # A proof made for one request does not pass with another (the key it certifies).
    joiner, thief = Joiner.new("n1"), Joiner.new("n2")
    with pytest.raises(JoinRefused, match="its secret does not match"):
        await coordinator.membership.join(
            token.token_id, thief.request, proof(token.key, joiner.request), "n2"
        )
    [info] = await coordinator.membership.tokens()
    assert info.joined == 0


async def test_an_expired_token_is_refused_from_the_second_it_expires(
    coordinator: Coordinator,
) -> None:
    token, info = await coordinator.membership.create_token(["volunteer"], ttl=60)
    coordinator.clock.now = info.expires_at - 0.001
    await Joiner.new("n1").join(coordinator.membership, token)
    coordinator.clock.now = info.expires_at
    with pytest.raises(JoinRefused) as refused:
        await Joiner.new("n2").join(coordinator.membership, token)
    assert str(refused.value) == f"join token {token.token_id} has expired: ask for a new one"


async def test_a_token_of_n_uses_lets_n_nodes_join(coordinator: Coordinator) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"], uses=2)
    await Joiner.new("n1").join(coordinator.membership, token)
    await Joiner.new("n2").join(coordinator.membership, token)
    with pytest.raises(JoinRefused) as refused:
        await Joiner.new("n3").join(coordinator.membership, token)
    assert str(refused.value) == f"join token {token.token_id} has been used up: ask for a new one"


async def test_joins_at_once_take_a_tokens_uses_and_an_id_one_at_a_time(
    coordinator: Coordinator,
) -> None:
    """Checks and records with nothing in between: five nodes racing for a single-use token
    let one in, and two joins racing for one id give it to one."""
    token, _ = await coordinator.membership.create_token(["volunteer"], uses=1)
    raced = await asyncio.gather(
        *(Joiner.new(f"n{i}").join(coordinator.membership, token) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(outcome, BaseException) for outcome in raced) == 1
    assert all(
        isinstance(outcome, JoinRefused) and "used up" in str(outcome)
        for outcome in raced
        if isinstance(outcome, BaseException)
    )
    many, _ = await coordinator.membership.create_token(["volunteer"])
    same_id = await asyncio.gather(
        Joiner.new("twin").join(coordinator.membership, many),
        Joiner.new("twin").join(coordinator.membership, many),
        return_exceptions=True,
    )
    assert sum(isinstance(outcome, JoinRefused) for outcome in same_id) == 1


async def test_revoking_a_token_refuses_it_and_its_members_for_good(
    coordinator: Coordinator, ca: ClusterAuthority
) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"])
    other, _ = await coordinator.membership.create_token(["volunteer"])
    await Joiner.new("n1").join(coordinator.membership, token)
    await Joiner.new("n2").join(coordinator.membership, token)
    await Joiner.new("n3").join(coordinator.membership, other)

    assert sorted(await coordinator.membership.revoke(token.token_id)) == ["n1", "n2"]
    assert [coordinator.membership.is_revoked(n) for n in ("n1", "n2", "n3")] == [
        True,
        True,
        False,
    ]
    with pytest.raises(JoinRefused, match=f"join token {token.token_id} was revoked"):
        await Joiner.new("n4").join(coordinator.membership, token)
    # A revoked node does not come back with another token, nor renew its certificate.
    with pytest.raises(JoinRefused, match="node n1 was revoked from this cluster"):
        await Joiner.new("n1").join(coordinator.membership, other)
    with pytest.raises(JoinRefused, match="node n1 was revoked from this cluster"):
        await coordinator.membership.renew(
            pki.Identity("n1", frozenset({"volunteer"})), Joiner.new("n1").request
        )
    # Remembered by the next coordinator process.
    again = Membership(coordinator.store, ca, "unit", clock=coordinator.clock)
    await again.open()
    assert [again.is_revoked(n) for n in ("n1", "n2", "n3")] == [True, True, False]


async def test_the_coordinators_own_ids_cannot_be_claimed_with_a_token(
    coordinator: Coordinator, ca: ClusterAuthority
) -> None:
    own = [
        pki.Identity("coordinator-1", frozenset({"coordinator"})),
        pki.Identity("admin-coordinato", frozenset({"admin"}), user="admin"),
    ]
    opened = Membership(coordinator.store, ca, "unit", clock=coordinator.clock)
    await opened.open(own)
    token, _ = await opened.create_token(["volunteer"])
    for identity in own:
        with pytest.raises(JoinRefused, match=f"node {identity.node_id} has already joined"):
            await Joiner.new(identity.node_id).join(opened, token)
    await opened.open(own)  # again at the next start: no harm
    [info] = await opened.tokens()
    assert info.joined == 0


async def test_a_join_for_another_cluster_is_refused_before_it_counts(
    coordinator: Coordinator,
) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"], uses=1)
    joiner = Joiner.new("n1")
    with pytest.raises(JoinRefused) as refused:
        await coordinator.membership.join(
            token.token_id, joiner.request, proof(token.key, joiner.request), "n1", "lab"
        )
    assert str(refused.value) == (
        "this coordinator keeps cluster 'unit', not 'lab': start the node with --cluster unit"
    )
    # Nothing was spent or recorded: the corrected retry joins, with the one use.
    await coordinator.membership.join(
        token.token_id, joiner.request, proof(token.key, joiner.request), "n1", "unit"
    )


async def test_no_such_token_to_revoke_says_where_to_look(coordinator: Coordinator) -> None:
    with pytest.raises(ValueError, match="no token 'zzzzzzzz': `vcnode token list` shows them"):
        await coordinator.membership.revoke("zzzzzzzz")


async def test_a_joined_id_cannot_be_claimed_again_even_after_its_certificate_expired(
    coordinator: Coordinator,
) -> None:
    """Whoever holds an id is trusted as that node (its tasks, its sessions): an id lapsed
    is not free for the next token holder."""
    token, _ = await coordinator.membership.create_token(["volunteer"])
    _, cert = await Joiner.new("n1").join(coordinator.membership, token)
    with pytest.raises(JoinRefused, match="node n1 has already joined this cluster"):
        await Joiner.new("n1").join(coordinator.membership, token)
    coordinator.clock.now = pki.load_cert(cert).not_valid_after_utc.timestamp() + 1
    later, _ = await coordinator.membership.create_token(["manager"])
    with pytest.raises(JoinRefused, match="node n1 has already joined this cluster"):
        await Joiner.new("n1").join(coordinator.membership, later)


@pytest.mark.parametrize("node_id", ["", "N1", "n1.id.vcnode", "a" * 64, "-n1", "n_1"])
async def test_a_node_id_that_cannot_sit_in_a_certificate_name_is_refused(
    coordinator: Coordinator, node_id: str
) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"])
    with pytest.raises(JoinRefused, match="is not lower-case letters, digits and dashes"):
        await Joiner(pki.new_key(), pki.certificate_request(pki.new_key(), "x"), node_id).join(
            coordinator.membership, token
        )


def _rsa_request() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _tampered_request() -> bytes:
    request = bytearray(pki.certificate_request(pki.new_key(), "n1"))
    request[-3] ^= 0x01  # inside the signature
    return bytes(request)


@pytest.mark.parametrize(
    ("request_bytes", "problem"),
    [
        (_tampered_request(), "signature|certificate|request"),
        (_rsa_request(), "the certificate request's key is not an EC P-256 key"),
    ],
)
async def test_a_request_that_does_not_prove_its_key_is_refused(
    coordinator: Coordinator, request_bytes: bytes, problem: str
) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"])
    with pytest.raises(JoinRefused, match=problem):
        await coordinator.membership.join(
            token.token_id, request_bytes, proof(token.key, request_bytes), "n1"
        )
    [info] = await coordinator.membership.tokens()
    assert info.joined == 0


async def test_the_coordinator_keeps_no_token_secret(coordinator: Coordinator) -> None:
    token, _ = await coordinator.membership.create_token(["volunteer"])
    files = sorted(coordinator.data_dir.glob("membership.db*"))  # with the WAL
    kept = b"".join(path.read_bytes() for path in files)
    assert token.key in kept, "the secret's digest is kept"
    assert token.secret.encode() not in kept


# --- a node's credential at start -------------------------------------------------------------


async def test_a_node_that_never_joined_says_how_to(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        await establish(tmp_path, "n1", ("volunteer",), "lab", None)
    assert str(refused.value) == (
        "this node has not joined cluster 'lab' yet: start it once with --token (on the "
        "coordinator's host, `vcnode token create --role volunteer` prints one)"
    )


async def test_a_held_certificate_does_not_serve_a_role_it_does_not_name(
    tmp_path: Path, ca: ClusterAuthority
) -> None:
    ca.credential(pki.Identity("n1", frozenset({"volunteer"}))).save(tls_dir(tmp_path), NODE)
    assert (await establish(tmp_path, "n1", ("volunteer",), "lab", None)).authority is None
    with pytest.raises(ConfigError) as refused:
        await establish(tmp_path, "n1", ("manager", "volunteer"), "lab", None)
    assert str(refused.value).startswith(
        "this node's certificate grants volunteer, not manager: its id keeps the roles it "
        "joined with; start it from a fresh data dir with a token"
    )


async def test_a_coordinator_makes_its_ca_once_and_an_admin_credential_beside_it(
    tmp_path: Path,
) -> None:
    first = await establish(tmp_path, "c1", ("coordinator",), "lab", None)
    again = await establish(tmp_path, "c1", ("coordinator",), "lab", None)
    assert first.authority is not None
    assert again.authority is not None
    assert first.authority.ca_hash == again.authority.ca_hash
    assert first.credential.identity == pki.Identity("c1", frozenset({"coordinator"}))
    admin = Credential.load(tls_dir(tmp_path), ADMIN)
    assert admin is not None
    assert admin.identity.roles == frozenset({"admin"})
    assert admin.identity.node_id != "c1", "the admin is not the node itself"
    assert stat.S_IMODE((tls_dir(tmp_path) / CA_KEY_FILE).stat().st_mode) == 0o600
