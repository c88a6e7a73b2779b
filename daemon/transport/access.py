"""Who may call what: the one rule every call passes before any servicer sees it.

A caller is who its client certificate says it is (see daemon/trust/pki.py), or a stranger
on the coordinator's plaintext join port. Each method names the kinds of caller it takes;
a method not listed here is refused to everyone. What a caller may do with a given object
(its own tasks, its own workflows) is the servicers' part: they get the same `Caller`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from daemon.trust.pki import Identity

# Kinds of caller beyond the roles a certificate names.
STRANGER = "stranger"  # anyone, even without a certificate
MEMBER = "member"  # anyone with a certificate of the cluster
SELF = "self"  # this node's own certificate: the local CLI of whoever may read its key
# On the owner-only Unix socket in the data dir (daemon/transport/local_socket.py): only the
# user running the daemon, and root, can open it.
LOCAL_OWNER = "local owner"

_NODE = "/vcnode.v1.NodeService/"
_COORDINATOR = "/vcnode.v1.CoordinatorService/"
_MANAGER = "/vcnode.v1.ManagerService/"
_TRANSFER = "/vcnode.v1.TransferService/"
_TRUST = "/vcnode.v1.TrustService/"
_CONTROL = "/vcnode.v1.OwnerControl/"

PEOPLE = frozenset({"user", "admin", SELF})
# The web dashboard's requests pass the same rule, under these names (daemon/web/server.py).
DASHBOARD_RULE = "/http/dashboard"
METRICS_RULE = "/http/metrics"
RULES: dict[str, frozenset[str]] = {
    _NODE + "GetInfo": frozenset({MEMBER}),
    _NODE + "Health": frozenset({MEMBER}),
    _NODE + "ListPeers": frozenset({MEMBER}),
    _COORDINATOR + "VolunteerSession": frozenset({"volunteer"}),
    _COORDINATOR + "ListVolunteers": frozenset({MEMBER}),
    _COORDINATOR + "SubmitTasks": frozenset({"manager"}),
    _COORDINATOR + "WatchTasks": frozenset({"manager"}),
    _COORDINATOR + "CancelTasks": frozenset({"manager"}),
    _COORDINATOR + "ReportVerdicts": frozenset({"manager"}),
    _COORDINATOR + "ClearTrust": frozenset({"admin", SELF}),
    **{
        _MANAGER + name: PEOPLE
        for name in (
            "SubmitWorkflow",
            "WatchWorkflow",
            "GetWorkflowStatus",
            "GetResults",
            "CancelWorkflow",
            "ResumeWorkflow",
            "ListWorkflows",
            "DeleteWorkflow",
            "ExplainTasks",
            "GetTaskLog",
            "FollowTaskLog",
        )
    },
    _NODE + "OpenDashboard": PEOPLE,
    DASHBOARD_RULE: PEOPLE,
    METRICS_RULE: PEOPLE,
    _MANAGER + "GetImageArchive": frozenset({"volunteer"}),
    _MANAGER + "PushTaskLog": frozenset({"volunteer"}),  # the manager checks it holds the task
    # Volunteers fetch inputs and send outputs; people send inputs and fetch results.
    _TRANSFER + "Download": PEOPLE | {"volunteer"},
    _TRANSFER + "Upload": PEOPLE | {"volunteer"},
    _TRANSFER + "Stat": PEOPLE | {"volunteer"},
    **{
        _CONTROL + name: frozenset({LOCAL_OWNER})
        for name in ("Pause", "Resume", "Drain", "GetWork", "ReloadConfig", "ClearCache")
    },
    _TRUST + "Join": frozenset({STRANGER}),
    _TRUST + "Renew": frozenset({MEMBER}),
    _TRUST + "CreateToken": frozenset({"admin", SELF}),
    _TRUST + "ListTokens": frozenset({"admin", SELF}),
    _TRUST + "RevokeToken": frozenset({"admin", SELF}),
    _TRUST + "ListRevoked": frozenset({"manager", "admin", SELF}),
    # Operators' tools (daemon/transport/operations.py): whether a node serves is no secret
    # (a probe without a certificate may ask on a coordinator's join port); what it serves is
    # for members.
    "/grpc.health.v1.Health/Check": frozenset({STRANGER}),
    "/grpc.health.v1.Health/Watch": frozenset({STRANGER}),
    "/grpc.health.v1.Health/List": frozenset({MEMBER}),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset({MEMBER}),
}


# How a refusal names who a method takes.
_WHO = {
    MEMBER: "any member of the cluster",
    SELF: "this node's owner",
    LOCAL_OWNER: "the machine's owner, on the node's control socket",
    "admin": "an admin",
    "user": "a person's credential (`vcnode login TOKEN`)",
    "volunteer": "a volunteer",
    "manager": "a manager",
    "coordinator": "a coordinator",
}


@dataclass(frozen=True)
class Caller:
    """Who is calling: `identity` is None for a stranger."""

    identity: Identity | None
    is_self: bool = False
    # Came through the owner-only control socket (no certificate there: the file's
    # permissions are the proof).
    is_local_owner: bool = False

    @property
    def kinds(self) -> frozenset[str]:
        if self.is_local_owner:
            return frozenset({STRANGER, LOCAL_OWNER})
        if self.identity is None:
            return frozenset({STRANGER})
        kinds = {STRANGER, MEMBER, *self.identity.roles}
        if self.is_self:
            kinds.add(SELF)
        return frozenset(kinds)

    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity is not None else ""

    @property
    def sees_everything(self) -> bool:
        """An admin, or this node's own owner: sees and acts on every user's objects."""
        return "admin" in self.kinds or self.is_self

    @property
    def owner(self) -> str:
        """The name a workflow submitted by this caller is recorded under."""
        identity = self.identity
        if identity is None:
            return ""
        if identity.user is not None:
            return identity.user
        return f"node {identity.node_id[:12]}"

    def describe(self) -> str:
        identity = self.identity
        if self.is_local_owner:
            return "the machine's owner (control socket)"
        if identity is None:
            return "a caller without a certificate of this cluster"
        kinds = ", ".join(sorted(identity.roles)) or "no role"
        who = f"user {identity.user}" if identity.user else f"node {identity.node_id[:12]}"
        return f"{who} ({kinds})"


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """Who makes the call being served: the edge admitted it and said who it is (see
    daemon/transport/edge.py), so servicers never read ids from messages to know."""
    try:
        return _CALLER.get()
    except LookupError:
        raise RuntimeError("no call is being served here: the edge sets the caller") from None


def set_current_caller(caller: Caller) -> None:
    _CALLER.set(caller)


def _unwrapped(pem: bytes) -> bytes:
    """A certificate's PEM without its whitespace: two copies of one certificate compare
    equal however their lines are wrapped. Compared as it is, never parsed."""
    return b"".join(pem.split())


class AccessPolicy:
    """Decides, per call, whether its caller may make it."""

    def __init__(
        self,
        node_id: str,
        own_certificates: Callable[[], Iterable[bytes]] = tuple,
        rules: dict[str, frozenset[str]] = RULES,
        *,
        local_socket: bool = False,
    ) -> None:
        """`local_socket`: the policy of the owner-only control socket, whose callers are
        the machine's owner; elsewhere a local (plaintext) caller is a stranger."""
        self.node_id = node_id
        self._local_socket = local_socket
        # This node's own certificates (PEM; LiveCredential.own_certificates): a caller
        # presenting one of them is this node's owner.
        self._own_certificates = own_certificates
        self._rules = rules
        # The coordinator plugs its revocation list in; other nodes trust certificates until
        # they expire.
        self.revoked: Callable[[str], bool] = lambda node_id: False

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller of a call, as its TLS session proved it. Its owner is who holds this
        node's own key, not whoever holds a certificate naming this node's id: TLS proved
        the caller holds the key of the certificate it presented, so a caller presenting one
        of this node's own certificates, byte for byte, holds this node's key."""
        auth = context.auth_context()
        security = auth.get("transport_security_type")
        if security == [b"local"] and self._local_socket:
            return Caller(None, is_local_owner=True)
        if security != [b"ssl"]:
            return Caller(None)
        names = auth.get("x509_subject_alternative_name", [])
        identity = Identity.from_names(name.decode(errors="replace") for name in names)
        presented = list(auth.get("x509_pem_cert", []))
        is_self = bool(
            identity is not None
            and identity.node_id == self.node_id
            and presented
            and _unwrapped(presented[0]) in {_unwrapped(own) for own in self._own_certificates()}
        )
        return Caller(identity, is_self=is_self)

    def refusal(self, method: str, caller: Caller) -> tuple[grpc.StatusCode, str] | None:
        """Why `caller` may not call `method`, as a status and a message; None if it may."""
        allowed = self._rules.get(method)
        if allowed is None:
            return grpc.StatusCode.UNIMPLEMENTED, f"no method {method} here"
        if caller.identity is None and not caller.is_local_owner and STRANGER not in allowed:
            return grpc.StatusCode.UNAUTHENTICATED, (
                "this port takes only join requests: dial the node's main port with a "
                "certificate of its cluster"
            )
        if caller.identity is not None and self.revoked(caller.identity.node_id):
            return grpc.StatusCode.UNAUTHENTICATED, (
                f"{caller.describe()} was revoked from this cluster: its id stays refused; "
                "join from a fresh data dir with a new token"
            )
        if not (allowed & caller.kinds):
            needs = " or ".join(_WHO[kind] for kind in sorted(allowed - {STRANGER}))
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"{method.rpartition('/')[2]} is not for {caller.describe()}: it takes {needs}"
            )
        return None
