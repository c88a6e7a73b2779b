"""What a node's own certificate says, kept beside it (`tls/<stem>.cert.json`) so that a node
knows it without `cryptography`.

Importing `cryptography` costs a process ~8 MiB that it never gives back, and a volunteer
that waits for work only needs a few facts of its own credential: who its certificate says
it is, when it expires, and the hash a join token pins of its CA. `cryptography` reads them
(daemon/trust/pki.py: `facts_of`) where a certificate is issued or accepted, in process on a
coordinator or a CLI, in the short-lived child of daemon/trust/keywork.py on any other node,
and they are saved with the certificate. Nothing here reads a certificate: the facts are
bound to the certificate and the CA they were read from by the sha256 of their bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass


def fingerprint(data: bytes) -> str:
    """The sha256 of a file's bytes, which ties kept facts to that very file."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CertificateFacts:
    """What one certificate says of its holder, and the hash of the CA it was issued under,
    as `cryptography` read them. `certificate` and `ca_certificate` are the fingerprints of
    the certificate and the CA they were read from: facts about other files are never taken
    for these (`describe`)."""

    certificate: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    ca_certificate: str
    # sha256 of the CA's public key, as a join token pins it (daemon.trust.pki.ca_hash).
    ca_hash: str

    def describe(self, cert_pem: bytes, ca_pem: bytes) -> bool:
        return self.certificate == fingerprint(cert_pem) and self.ca_certificate == fingerprint(
            ca_pem
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "certificate_sha256": self.certificate,
                "dns_names": list(self.names),
                "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(),
                "ca_sha256": self.ca_certificate,
                "ca_hash": self.ca_hash,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CertificateFacts:
        """ValueError when `text` is not what `to_json` writes (facts kept by an earlier
        vcnode, without the CA's, included: they are read again)."""
        try:
            kept = json.loads(text)
            names = kept["dns_names"]
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise TypeError("dns_names is not a list of names")
            texts = [kept[key] for key in ("certificate_sha256", "ca_sha256", "ca_hash")]
            if not all(isinstance(value, str) and value for value in texts):
                raise TypeError("a fingerprint or the CA hash is not a text")
            facts = cls(
                certificate=kept["certificate_sha256"],
                names=tuple(names),
                not_before=datetime.datetime.fromisoformat(kept["not_before"]),
                not_after=datetime.datetime.fromisoformat(kept["not_after"]),
                ca_certificate=kept["ca_sha256"],
                ca_hash=kept["ca_hash"],
            )
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a certificate's facts ({error})") from None
        if facts.not_before.tzinfo is None or facts.not_after.tzinfo is None:
            raise ValueError("not a certificate's facts (a time without its zone)")
        return facts
