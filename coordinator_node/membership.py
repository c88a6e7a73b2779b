"""Who belongs to the cluster: tokens are made here, traded for certificates, and revoked.

The coordinator that made the cluster holds its CA (daemon/trust/authority.py). A join
spends one use of a token, binds the joining node's id to the roles the token grants, and
issues a certificate that says so; what the joining node asks for counts for nothing but its
public key and its id. Revoking a token refuses its members at once here (the access policy
asks `is_revoked` on every call) and everywhere else when their certificates expire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable, Sequence

from coordinator_node.membership_store import Member, MembershipStore, Token
from daemon.trust import pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.tokens import ID_CHARS, SECRET_CHARS, JoinToken, proof_holds

DEFAULT_TOKEN_TTL = 24 * 3600.0
MAX_TOKEN_TTL = 365 * 24 * 3600.0
# A token for nodes grants some of these; a coordinator is never made by a token.
JOINABLE_NODE_ROLES = ("manager", "volunteer")
# Who the admin credential in a coordinator's data dir is (see daemon/trust/bootstrap.py).
BUILT_IN_ADMIN = "admin"


class JoinRefused(Exception):
    """A join or a renewal the coordinator will not grant; the message says why."""


class TokenProblem(ValueError):
    """A token that cannot be made as asked."""


def token_problem(
    roles: Sequence[str],
    name: str,
    ttl: float,
    uses: int,
    vouched: bool = False,
    owner: str = "",
) -> str | None:
    if not roles:
        return "a token needs a role: volunteer, manager, user or admin"
    people = [role for role in roles if role in pki.PERSON_ROLES]
    if people:
        if len(roles) != 1:
            return "a token for a person (user or admin) grants that role alone"
        if name == BUILT_IN_ADMIN:
            return f"{name!r} is the name of the coordinator host's own admin: choose another"
        if not pki.USER_NAME.fullmatch(name):
            return (
                f"a {people[0]} token needs --name: a lower-case name of up to 32 letters, "
                "digits and dashes, starting with a letter"
            )
    else:
        unknown = sorted(set(roles) - set(JOINABLE_NODE_ROLES))
        if unknown:
            return (
                f"a token cannot grant {', '.join(unknown)}: "
                "roles are volunteer, manager, user or admin"
            )
        if name:
            return "--name is for user and admin tokens"
    granted = ", ".join(roles)
    if vouched and "volunteer" not in roles:
        return (
            f"--vouched is for volunteer tokens (the lab's own machines, trusted with results "
            f"from the start), not {granted}: add volunteer to --role or leave --vouched out"
        )
    if owner and "volunteer" not in roles:
        return (
            f"--owner names the person whose machine a volunteer is, and a {granted} token "
            "runs no tasks: add volunteer to --role or leave --owner out"
        )
    if owner and not pki.is_owner_name(owner):
        return (
            f"--owner {owner[:40]!r} is not a person's name: lower-case letters, digits and "
            "dashes, up to 32, starting with a letter and not ending with a dash"
        )
    if not 0 < ttl <= MAX_TOKEN_TTL:
        return f"a token lives more than 0 s and at most {MAX_TOKEN_TTL / 86400:.0f} days"
    if uses < 0:
        return "--uses is a count of joins (0: any number until it expires)"
    return None


class Membership:
    def __init__(
        self,
        store: MembershipStore,
        authority: ClusterAuthority,
        cluster: str,
        clock: Callable[[], float] = time.time,
        lifetime: datetime.timedelta = pki.CERTIFICATE_LIFETIME,
    ) -> None:
        self._store = store
        self.authority = authority
        self.cluster = cluster
        self._clock = clock
        self._lifetime = lifetime
        self._revoked: set[str] = set()
        self._changing = asyncio.Lock()

    async def open(self, own: Iterable[pki.Identity] = ()) -> None:
        """Loads the revocations, and records `own` (this coordinator's own identities,
        issued here without a token) as members, so no token can claim their ids."""
        self._revoked = await self._store.revoked_members()
        for identity in own:
            await self._store.record_join(
                Member(
                    identity.node_id,
                    "",
                    tuple(sorted(identity.roles)),
                    identity.user or "",
                    self._clock(),
                    float("inf"),
                    vouched=identity.vouched,
                    owner=identity.owner or "",
                )
            )

    def is_revoked(self, node_id: str) -> bool:
        return node_id in self._revoked

    @property
    def revoked(self) -> frozenset[str]:
        return frozenset(self._revoked)

    async def create_token(
        self,
        roles: Sequence[str],
        name: str = "",
        ttl: float = DEFAULT_TOKEN_TTL,
        uses: int = 0,
        join_addresses: Sequence[str] = (),
        vouched: bool = False,
        owner: str = "",
    ) -> tuple[JoinToken, Token]:
        """A token for `roles`; a volunteer token may vouch for its nodes (the lab's own
        machines) and name their `owner`, both said in the certificates it is traded for."""
        problem = token_problem(roles, name, ttl, uses, vouched, owner)
        if problem:
            raise TokenProblem(problem)
        join = JoinToken(
            token_id=pki.new_secret(5)[:ID_CHARS],
            secret=pki.new_secret(17)[:SECRET_CHARS],
            ca_hash=self.authority.ca_hash,
            addresses=tuple(join_addresses),
        )
        now = self._clock()
        token = Token(
            token_id=join.token_id,
            key=join.key,
            roles=tuple(roles),
            name=name,
            created_at=now,
            expires_at=now + ttl,
            uses=uses,
            vouched=vouched,
            owner=owner,
        )
        await self._store.add_token(token)
        return join, token

    async def tokens(self) -> list[Token]:
        return await self._store.tokens()

    async def join(
        self, token_id: str, request: bytes, proof: bytes, node_id: str, cluster: str = ""
    ) -> tuple[bytes, bytes]:
        """(CA certificate, certificate) for a node that proves it holds token `token_id`
        and means to join this cluster (`cluster` empty: whichever it is)."""
        # One change at a time: a token's uses, an id's first claim and a revocation are
        # checked and recorded with nothing in between.
        async with self._changing:
            return await self._join(token_id, request, proof, node_id, cluster)

    async def _join(
        self, token_id: str, request: bytes, proof: bytes, node_id: str, cluster: str
    ) -> tuple[bytes, bytes]:
        token = await self._store.token(token_id)
        if token is None or not proof_holds(token.key, request, proof):
            raise JoinRefused(
                "the join token is not one this coordinator made, or its secret does not "
                "match: check you copied all of it"
            )
        if cluster and cluster != self.cluster:
            # Refused before anything is recorded: the corrected retry joins.
            raise JoinRefused(
                f"this coordinator keeps cluster {self.cluster!r}, not {cluster!r}: start the "
                f"node with --cluster {self.cluster}"
            )
        now = self._clock()
        if token.revoked:
            raise JoinRefused(f"join token {token_id} was revoked: ask for a new one")
        if now >= token.expires_at:
            raise JoinRefused(f"join token {token_id} has expired: ask for a new one")
        if token.uses and token.joined >= token.uses:
            raise JoinRefused(f"join token {token_id} has been used up: ask for a new one")
        if not pki.is_label(node_id):
            raise JoinRefused(
                f"node id {node_id[:80]!r} is not lower-case letters, digits and dashes"
            )
        existing = await self._store.member(node_id)
        if existing is not None and existing.revoked:
            raise JoinRefused(f"node {node_id} was revoked from this cluster")
        if existing is not None:
            # For good, even once its certificate lapsed: whoever holds an id is trusted as
            # that node (its tasks, its sessions), so no token may claim it again.
            raise JoinRefused(
                f"node {node_id} has already joined this cluster: start it from the data dir "
                "that holds its certificate, or from a fresh data dir"
            )
        try:
            public_key = pki.read_request(request)
        except ValueError as error:
            raise JoinRefused(str(error)) from None
        person = token.roles[0] in pki.PERSON_ROLES
        identity = pki.Identity(
            node_id,
            frozenset(token.roles),
            token.name if person else None,
            vouched=token.vouched,
            owner=token.owner or None,
        )
        cert = self.authority.issue(public_key, identity, self._lifetime)
        expires_at = pki.load_cert(cert).not_valid_after_utc.timestamp()
        await self._store.record_join(
            Member(
                node_id,
                token_id,
                token.roles,
                token.name,
                now,
                expires_at,
                vouched=token.vouched,
                owner=token.owner,
            )
        )
        return self.authority.cert_pem, cert

    async def renew(self, identity: pki.Identity, request: bytes) -> bytes:
        """A new certificate for `identity`, as the caller's current certificate proved it,
        vouched for and owned as its member record says (as it joined)."""
        async with self._changing:
            return await self._renew(identity, request)

    async def _renew(self, identity: pki.Identity, request: bytes) -> bytes:
        if self.is_revoked(identity.node_id):
            raise JoinRefused(f"node {identity.node_id} was revoked from this cluster")
        try:
            public_key = pki.read_request(request)
        except ValueError as error:
            raise JoinRefused(str(error)) from None
        member = await self._store.member(identity.node_id)
        if member is not None:
            # Without a record (the CA restored without its membership file), the
            # certificate is renewed as it is.
            identity = dataclasses.replace(
                identity, vouched=member.vouched, owner=member.owner or None
            )
        cert = self.authority.issue(public_key, identity, self._lifetime)
        expires_at = pki.load_cert(cert).not_valid_after_utc.timestamp()
        await self._store.renew(identity.node_id, expires_at)
        return cert

    async def revoke(self, token_id: str) -> list[str]:
        """Revokes a token and every member that joined with it; returns their node ids."""
        async with self._changing:
            if await self._store.token(token_id) is None:
                raise TokenProblem(f"no token {token_id[:40]!r}: `vcnode token list` shows them")
            revoked = await self._store.revoke(token_id)
            self._revoked.update(revoked)
            return revoked
