"""Which credential a client command presents, and `vcnode login`, which stores a person's.

Looked for in order: the data dir named with --data-dir (its admin credential on a
coordinator's host, else the node's own), the person's login (`~/.config/vcnode`, written by
`vcnode login`), then the default data dir's admin and node credentials. Whoever may read
a node's key is that node's owner, so the local CLI of the same OS user needs no login (as
kubectl reads admin.conf on a control-plane host).
"""

from __future__ import annotations

import os
from pathlib import Path

from daemon.config import default_data_dir
from daemon.errors import AccessDeniedError
from daemon.trust.credentials import ADMIN, NODE, USER, Credential, tls_dir


def client_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vcnode"


def _places(data_dir: Path | None) -> list[tuple[Path, str]]:
    places = []
    if data_dir is not None:
        places += [(tls_dir(data_dir), ADMIN), (tls_dir(data_dir), NODE)]
    places.append((client_dir(), USER))
    default = tls_dir(default_data_dir())
    places += [(default, ADMIN), (default, NODE)]
    return places


def client_credential(data_dir: Path | None) -> Credential:
    for directory, stem in _places(data_dir):
        credential = Credential.load(directory, stem)
        if credential is None:
            continue
        if credential.expired():
            again = (
                "run `vcnode login` with a new token"
                if stem == USER
                else "start its daemon: a running node renews it"
            )
            raise AccessDeniedError(
                f"the credential in {directory} expired on "
                f"{credential.expires_at:%Y-%m-%d %H:%M} UTC: {again}"
            )
        return credential
    raise AccessDeniedError(
        "this machine holds no credential for a vcnode cluster: run `vcnode login TOKEN` "
        "with a token from the cluster's admin (`vcnode token create --role user --name "
        "NAME` on the coordinator's host), or run the command there"
    )
