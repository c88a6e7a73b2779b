"""What a node needs to know of certificates while it runs, without `cryptography`.

Importing `cryptography` costs a process ~8 MiB that it never gives back, and a volunteer
only needs a few facts: who its own certificate says it is and when it expires (kept beside
the certificate, see `CertificateFacts`), the key a peer's certificate certifies (read here
from the certificate's DER: to tell this node's owner from whoever names its id) and the
hash a join token pins. Making keys and checking signatures stays in daemon/trust/pki.py.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
from dataclasses import dataclass

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"

# DER tags met on the way from a certificate to its subjectPublicKeyInfo (RFC 5280 4.1).
_SEQUENCE = 0x30
_INTEGER = 0x02
_VERSION = 0xA0  # [0] EXPLICIT


def certificate_der(pem: bytes) -> bytes:
    """The DER of the first certificate in `pem`; ValueError when there is none."""
    start = pem.find(_BEGIN)
    end = pem.find(_END, start + len(_BEGIN))
    if start < 0 or end < 0:
        raise ValueError("not a PEM certificate")
    try:
        return base64.b64decode(b"".join(pem[start + len(_BEGIN) : end].split()), validate=True)
    except binascii.Error as error:
        raise ValueError(f"not a PEM certificate ({error})") from None


def _element(der: bytes, offset: int, limit: int) -> tuple[int, int, int]:
    """The DER element at `offset` (within `limit`): its tag, where its content starts and
    where it ends. Definite lengths only, as DER has them."""
    if offset + 2 > limit:
        raise ValueError("truncated DER")
    tag, first = der[offset], der[offset + 1]
    content = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or content + count > limit:
            raise ValueError("a DER length that is indefinite or out of range")
        length = int.from_bytes(der[content : content + count], "big")
        content += count
    if content + length > limit:
        raise ValueError("truncated DER")
    return tag, content, content + length


def subject_public_key_info(der: bytes) -> bytes:
    """The subjectPublicKeyInfo of a DER certificate, byte for byte as it sits in it."""
    tag, content, end = _element(der, 0, len(der))
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    tag, offset, end = _element(der, content, end)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    tag, _, after = _element(der, offset, end)
    if tag == _VERSION:
        offset = after
        tag, _, after = _element(der, offset, end)
    if tag != _INTEGER:
        raise ValueError("a certificate without a serial number")
    offset = after
    # signature algorithm, issuer, validity, subject, then the key.
    for _ in range(4):
        tag, _, offset = _element(der, offset, end)
        if tag != _SEQUENCE:
            raise ValueError("not a certificate")
    tag, _, after = _element(der, offset, end)
    if tag != _SEQUENCE:
        raise ValueError("a certificate without a public key")
    return der[offset:after]


def public_key_der(pem: bytes) -> bytes:
    """The key a certificate (PEM) certifies, as DER SubjectPublicKeyInfo."""
    return subject_public_key_info(certificate_der(pem))


def ca_hash(ca_pem: bytes) -> str:
    """The fingerprint a join token pins: sha256 of the CA's public key (as kubeadm's
    discovery hash), in lower-case base32 so it survives copy and paste."""
    digest = hashlib.sha256(public_key_der(ca_pem)).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def fingerprint(cert_pem: bytes) -> str:
    return hashlib.sha256(cert_pem).hexdigest()


@dataclass(frozen=True)
class CertificateFacts:
    """What one certificate says of its holder, read once with `cryptography` (when it is
    issued, or the first time a node meets a certificate saved before these were kept) and
    kept beside it. `certificate` is the certificate's fingerprint: facts about another
    certificate are never taken for these."""

    certificate: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime

    def describe(self, cert_pem: bytes) -> bool:
        return self.certificate == fingerprint(cert_pem)

    def to_json(self) -> str:
        return json.dumps(
            {
                "certificate_sha256": self.certificate,
                "dns_names": list(self.names),
                "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CertificateFacts:
        """ValueError when `text` is not what `to_json` writes."""
        try:
            kept = json.loads(text)
            names = kept["dns_names"]
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise TypeError("dns_names is not a list of names")
            facts = cls(
                certificate=str(kept["certificate_sha256"]),
                names=tuple(names),
                not_before=datetime.datetime.fromisoformat(kept["not_before"]),
                not_after=datetime.datetime.fromisoformat(kept["not_after"]),
            )
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a certificate's facts ({error})") from None
        if facts.not_before.tzinfo is None or facts.not_after.tzinfo is None:
            raise ValueError("not a certificate's facts (a time without its zone)")
        return facts
