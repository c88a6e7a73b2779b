"""One cluster CA for the test session, and credentials made with it.

Most tests are about something else than joining: their daemons start with certificates
already in their data dirs, as if they had joined (`provision`), and the CLI presents an
admin credential, as if its user had logged in (`login`). The join itself (tokens, the join
port, revocation, strangers) is tested for real in test_trust.py and on the LAN.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from daemon.datadir import NODE_ID_FILE
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import ADMIN, CA_FILE, CA_KEY_FILE, NODE, USER, Credential, tls_dir
from daemon.trust.pki import Identity, cert_pem, key_pem


@cache
def authority() -> ClusterAuthority:
    return ClusterAuthority.load_or_create(Path(tempfile.mkdtemp(prefix="vcnode-test-ca-")), "")


@cache
def admin_credential() -> Credential:
    return authority().credential(Identity("test-admin", frozenset({"admin"}), user="admin"))


def credential(
    roles: Iterable[str],
    user: str | None = None,
    node_id: str | None = None,
    vouched: bool = False,
    owner: str | None = None,
) -> Credential:
    """A fresh credential of the session's cluster, for node `node_id` (else a made-up one)."""
    identity = Identity(node_id or uuid.uuid4().hex, frozenset(roles), user, vouched, owner)
    return authority().credential(identity)


def node_id_of(data_dir: Path) -> str:
    """The node id kept in `data_dir`, made there first if need be (as the daemon would)."""
    path = data_dir / NODE_ID_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def provision(
    data_dir: Path, roles: Iterable[str], vouched: bool = True, owner: str | None = None
) -> None:
    """Puts in `data_dir` what joining would have: a coordinator gets the session's CA (as a
    restored backup), any other node a certificate for its id and roles. A volunteer's is
    `vouched` (the tests' volunteers stand for the lab's own machines) unless told otherwise,
    and names `owner`; those two are for volunteers only, as a token's are."""
    directory = tls_dir(data_dir)
    if (directory / f"{NODE}.pem").exists() or (directory / CA_KEY_FILE).exists():
        return
    roles = frozenset(roles)
    ca = authority()
    directory.mkdir(parents=True, exist_ok=True)
    if "coordinator" in roles:
        (directory / CA_KEY_FILE).write_bytes(key_pem(ca.key))
        (directory / CA_FILE).write_bytes(cert_pem(ca.cert))
        return
    volunteer = "volunteer" in roles
    if owner is not None and not volunteer:
        raise ValueError(f"an owner is for volunteers, not {', '.join(sorted(roles))}")
    identity = Identity(node_id_of(data_dir), roles, vouched=vouched and volunteer, owner=owner)
    ca.credential(identity).save(directory, NODE)


def login(config_home: Path) -> None:
    """Where the CLI looks for a person's credential (XDG_CONFIG_HOME), an admin's."""
    admin_credential().save(config_home / "vcnode", USER)


__all__ = ["ADMIN", "admin_credential", "authority", "credential", "login", "provision"]
