"""A node's credential at start: made by its own CA on a coordinator, kept from an earlier
join elsewhere, or got now with the join token it was started with."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from daemon.datadir import write_atomically
from daemon.errors import ConfigError
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import (
    ADMIN,
    CA_FILE,
    CA_KEY_FILE,
    NODE,
    Credential,
    LiveCredential,
    facts_file,
    kept_facts,
    tls_dir,
)
from daemon.trust.join import join_cluster
from daemon.trust.keywork import KeyWorker
from daemon.trust.pki import CERTIFICATE_LIFETIME, Identity
from daemon.trust.tokens import JoinToken

log = logging.getLogger(__name__)


class NodeTrust:
    """The node's credential, live (renewed while it runs), and on a coordinator the CA that
    issues every certificate of the cluster."""

    def __init__(self, credential: Credential, authority: ClusterAuthority | None) -> None:
        self.live = LiveCredential(credential)
        self.authority = authority

    @property
    def credential(self) -> Credential:
        return self.live.current


async def _none_found() -> list[str]:
    return []


def admin_identity(node_id: str) -> Identity:
    return Identity(f"admin-{node_id[:12]}", frozenset({"admin"}), user="admin")


def _own_credentials(
    directory: Path, cluster: str, node_id: str, roles: tuple[str, ...],
    lifetime: datetime.timedelta,
) -> NodeTrust:  # fmt: skip
    if (directory / f"{NODE}.pem").exists() and not (directory / CA_KEY_FILE).exists():
        raise ConfigError(
            f"the data dir {directory.parent} joined a cluster as a member: a coordinator "
            "makes a cluster of its own, so start it from a data dir of its own"
        )
    authority = ClusterAuthority.load_or_create(directory, cluster)
    for stem, identity in (
        # The coordinator host's own volunteer is the admin's machine: vouched for.
        (NODE, Identity(node_id, frozenset(roles), vouched="volunteer" in roles)),
        (ADMIN, admin_identity(node_id)),
    ):
        held = Credential.load(directory, stem)
        if (
            held is None
            or held.ca_hash != authority.ca_hash
            or held.identity != identity
            or held.due_for_renewal()
        ):
            authority.credential(identity, lifetime).save(directory, stem)
    credential = Credential.load(directory, NODE)
    assert credential is not None
    return NodeTrust(credential, authority)


async def _keep_facts(directory: Path) -> None:
    """Keeps what the node's certificate says beside it when it was saved without (by a
    vcnode before these were kept, or before they held its CA's hash), read in a child
    process: read here, `cryptography` would stay in the memory of this run of the node
    (daemon/trust/keywork.py)."""
    try:
        cert_pem = await asyncio.to_thread((directory / f"{NODE}.pem").read_bytes)
        ca_pem = await asyncio.to_thread((directory / CA_FILE).read_bytes)
    except OSError:
        return  # not joined, or not ours to read: Credential.load says which
    if await asyncio.to_thread(kept_facts, directory, NODE, cert_pem, ca_pem) is not None:
        return
    async with KeyWorker() as keys:
        try:
            facts = await keys.facts_of(cert_pem, ca_pem)
        except ValueError:
            return  # not a certificate: Credential.load treats it as none
    try:
        await asyncio.to_thread(write_atomically, facts_file(directory, NODE), facts.to_json())
    except OSError as error:  # Credential.load reads the certificate itself, as before
        log.warning("cannot keep what %s/%s.pem says beside it: %s", directory, NODE, error)
        return
    log.info("read %s/%s.pem once and kept what it says beside it", directory, NODE)


async def establish(
    data_dir: Path,
    node_id: str,
    roles: tuple[str, ...],
    cluster: str,
    token_text: str | None,
    join_addresses: Callable[[], Awaitable[list[str]]] = _none_found,
    lifetime: datetime.timedelta = CERTIFICATE_LIFETIME,
) -> NodeTrust:
    """The node's credential. A node that must join asks `join_addresses` where its
    coordinator takes join requests now (mDNS), and tries those before the token's own."""
    directory = tls_dir(data_dir)
    if "coordinator" in roles:
        return await asyncio.to_thread(
            _own_credentials, directory, cluster, node_id, roles, lifetime
        )
    await _keep_facts(directory)
    held = await asyncio.to_thread(Credential.load, directory, NODE)
    token = JoinToken.parse(token_text) if token_text else None
    if held is not None and (token is None or token.ca_hash == held.ca_hash):
        if held.expired() and token is None:
            raise ConfigError(
                f"this node's certificate expired on {held.expires_at:%Y-%m-%d %H:%M} UTC "
                "(it was not renewed in time: was the node stopped?); its id cannot join again: "
                "start it from a fresh data dir with a new --token"
            )
        if not held.expired():
            _check_roles(held, roles)
            return NodeTrust(held, None)
    if token is None:
        raise ConfigError(
            f"this node has not joined cluster {cluster!r} yet: start it once with --token "
            "(on the coordinator's host, `vcnode token create --role "
            f"{','.join(roles)}` prints one)"
        )
    credential = await join_cluster(token, node_id, cluster, await join_addresses())
    _check_roles(credential, roles)
    await asyncio.to_thread(credential.save, directory, NODE)
    log.info("joined cluster %r with token %s", cluster, token.token_id)
    return NodeTrust(credential, None)


def _check_roles(credential: Credential, roles: tuple[str, ...]) -> None:
    missing = sorted(set(roles) - credential.identity.roles)
    if missing:
        granted = ", ".join(sorted(credential.identity.roles)) or "no role"
        raise ConfigError(
            f"this node's certificate grants {granted}, not {', '.join(missing)}: its id keeps "
            "the roles it joined with; start it from a fresh data dir with a token for those "
            "roles (`vcnode token create --role ...`)"
        )
