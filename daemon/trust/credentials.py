"""A key, its certificate and the cluster's CA, as files and as gRPC credentials.

Kept under `<data dir>/tls/` for nodes (`node.*`; on a coordinator also the CA's key and an
`admin.*` credential that the local CLI of the same OS user reads, as kubectl reads
admin.conf) and under `~/.config/vcnode/` for people (`vcnode login`). Keys are written
owner-only, atomically.

Beside each certificate, `<stem>.cert.json` keeps what it says (daemon/trust/facts.py): a
node reads who it is, when its certificate expires and its CA's hash from there, without
`cryptography`. A certificate saved before those were kept has them read once, on its first
load.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import cast

import grpc

from daemon.datadir import write_atomically
from daemon.trust import pki
from daemon.trust.facts import CertificateFacts

log = logging.getLogger(__name__)

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
NODE = "node"
ADMIN = "admin"
USER = "user"


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def facts_file(directory: Path, stem: str) -> Path:
    return directory / f"{stem}.cert.json"


def kept_facts(
    directory: Path, stem: str, cert_pem: bytes, ca_pem: bytes
) -> CertificateFacts | None:
    """The facts kept beside the certificate `cert_pem` (of the CA `ca_pem`); None when none
    are kept for those two."""
    try:
        facts = CertificateFacts.from_json(facts_file(directory, stem).read_bytes())
    except (OSError, ValueError):
        return None
    return facts if facts.describe(cert_pem, ca_pem) else None


@dataclass(frozen=True)
class Credential:
    """Who this process is to the cluster, and how it knows the cluster's other members.

    `facts`, what the certificate says, are read from it (with `cryptography`) unless given:
    whoever gives them read them from this very certificate and CA (fingerprints say so)."""

    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes
    facts: InitVar[CertificateFacts | None] = None
    _facts: CertificateFacts = field(init=False, repr=False, compare=False)

    def __post_init__(self, facts: CertificateFacts | None) -> None:
        if facts is None or not facts.describe(self.cert_pem, self.ca_pem):
            facts = pki.facts_of(self.cert_pem, self.ca_pem)
        object.__setattr__(self, "_facts", facts)

    @cached_property
    def identity(self) -> pki.Identity:
        identity = pki.Identity.from_names(self._facts.names)
        if identity is None:
            raise ValueError("the certificate names no vcnode identity")
        return identity

    @property
    def expires_at(self) -> datetime.datetime:
        return self._facts.not_after

    @property
    def lifetime(self) -> datetime.timedelta:
        return self._facts.not_after - self._facts.not_before

    @property
    def ca_hash(self) -> str:
        return self._facts.ca_hash

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return (now or datetime.datetime.now(datetime.UTC)) >= self.expires_at

    def due_for_renewal(self, now: datetime.datetime | None = None) -> bool:
        """True in the last third of the certificate's life."""
        now = now or datetime.datetime.now(datetime.UTC)
        return self.expires_at - now < self.lifetime / 3

    @cached_property
    def _channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return self._channel_credentials

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def save(self, directory: Path, stem: str) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(directory / CA_FILE, self.ca_pem)
        write_atomically(directory / f"{stem}.key", self.key_pem, 0o600)
        write_atomically(directory / f"{stem}.pem", self.cert_pem)
        write_atomically(facts_file(directory, stem), self._facts.to_json())

    @classmethod
    def load(cls, directory: Path, stem: str) -> Credential | None:
        """The credential saved as `stem` in `directory`; None when there is none or this
        user may not read it."""
        try:
            ca_pem = (directory / CA_FILE).read_bytes()
            key_pem = (directory / f"{stem}.key").read_bytes()
            cert_pem = (directory / f"{stem}.pem").read_bytes()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        kept = kept_facts(directory, stem, cert_pem, ca_pem)
        try:
            credential = cls(ca_pem, key_pem, cert_pem, kept)
        except ValueError:
            return None
        if kept is None:
            # Saved before the facts were kept beside it (or they were lost): this once they
            # were read with `cryptography`; from now on they are read from the file. A reader
            # that may not write there (another user's CLI) reads them again next time.
            with contextlib.suppress(OSError):
                write_atomically(facts_file(directory, stem), credential._facts.to_json())
                log.info("read %s/%s.pem once and kept what it says beside it", directory, stem)
        return credential


class LiveCredential:
    """A node's credential while it runs, renewed in place: channels opened after a renewal
    present the new certificate, and the server presents it from the next handshake on."""

    def __init__(self, credential: Credential) -> None:
        self._current = credential
        self._previous: Credential | None = None

    @property
    def current(self) -> Credential:
        return self._current

    def replace(self, credential: Credential) -> None:
        self._previous, self._current = self._current, credential

    def own_certificates(self) -> tuple[bytes, ...]:
        """The certificates (PEM) that are this node's own: whoever presents one over TLS
        holds its key, so is the node's owner (daemon/transport/access.py). The current one,
        and the one before the latest renewal: a CLI may have read the files just before the
        node renewed them."""
        previous = self._previous
        if previous is None:
            return (self._current.cert_pem,)
        return self._current.cert_pem, previous.cert_pem

    def server_credentials(self) -> grpc.ServerCredentials:
        served = self._current

        def configuration(credential: Credential) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(credential.key_pem, credential.cert_pem)], root_certificates=credential.ca_pem
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # gRPC asks before each handshake, on a thread of its own: None keeps what it has.
            nonlocal served
            current = self._current
            if current is served:
                return None
            served = current
            return configuration(current)

        # The stubs miss that the fetcher may return None (gRPC's docs: "no change").
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
        return grpc.dynamic_ssl_server_credentials(
            configuration(served), fetcher, require_client_authentication=True
        )
