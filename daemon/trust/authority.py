"""The cluster's CA as the first coordinator keeps it: its key never leaves that data dir."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.datadir import write_atomically
from daemon.errors import DataDirError
from daemon.trust import pki
from daemon.trust.credentials import CA_FILE, CA_KEY_FILE, Credential

if TYPE_CHECKING:  # only a coordinator, which has a CA, imports `cryptography` (pki.py)
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class ClusterAuthority:
    key: pki.Key
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return pki.cert_pem(self.cert)

    @property
    def ca_hash(self) -> str:
        return pki.ca_hash(self.cert)

    @classmethod
    def load_or_create(cls, directory: Path, cluster: str) -> ClusterAuthority:
        """The CA kept in `directory`, made there when there is none yet."""
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_FILE
        try:
            return cls(pki.load_key(key_path.read_bytes()), pki.load_cert(cert_path.read_bytes()))
        except FileNotFoundError:
            if key_path.exists():
                raise DataDirError(
                    f"{cert_path} is missing but the CA key is there: restore it from a backup"
                ) from None
        except ValueError as error:
            raise DataDirError(
                f"the cluster CA in {directory} is unreadable ({error}); restore it from a backup"
            ) from None
        key, cert = pki.create_ca(cluster)
        # The key first: a CA certificate without its key could never issue anything.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(key_path, pki.key_pem(key), 0o600)
        write_atomically(cert_path, pki.cert_pem(cert))
        return cls(key, cert)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: pki.Identity,
        lifetime: datetime.timedelta = pki.CERTIFICATE_LIFETIME,
    ) -> bytes:
        return pki.cert_pem(pki.issue(self.key, self.cert, public_key, identity, lifetime))

    def credential(
        self, identity: pki.Identity, lifetime: datetime.timedelta = pki.CERTIFICATE_LIFETIME
    ) -> Credential:
        """A new key and its certificate, for a holder on this very host."""
        key = pki.new_key()
        return Credential(
            ca_pem=self.cert_pem,
            key_pem=pki.key_pem(key),
            cert_pem=self.issue(key.public_key(), identity, lifetime),
        )
