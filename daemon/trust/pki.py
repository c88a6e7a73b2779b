"""The cluster's certificates: a CA, and node and user certificates that say who holds them.

Peers reach each other by IP addresses or by names mDNS gave, so a certificate never names a
host. It names what its holder is, as DNS names under `.vcnode` in its subject alternative
names: `<node id>.id.vcnode`, one `<role>.role.vcnode` per role, and `<name>.user.vcnode`
for a person. A volunteer's certificate may also say `vouched.trust.vcnode` (one of the lab's
own machines: trusted for result validation from the start) and `<name>.owner.vcnode` (the
person whose machine it is: two copies of one task never run on two machines of one owner).
A client dials with the name it expects as the TLS target name (a role, or one node's id), so
the handshake itself proves the server is that; a server reads the same names from the
client's certificate to decide what the caller may do.

`cryptography` is imported by the functions that make or check keys and certificates, not
with this module: every node reads the names, and a node that only runs (a volunteer) should
not keep the ~8 MiB that importing it costs (see daemon/trust/facts.py, daemon/trust/keywork.py).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from daemon.trust.facts import CertificateFacts, fingerprint

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    Key: TypeAlias = ec.EllipticCurvePrivateKey

# Who may hold a certificate. `admin` is a person who may see and do everything.
NODE_ROLES = ("coordinator", "manager", "volunteer")
PERSON_ROLES = ("user", "admin")
ROLES = NODE_ROLES + PERSON_ROLES

CA_LIFETIME = datetime.timedelta(days=3650)
CERTIFICATE_LIFETIME = datetime.timedelta(days=30)
# Clocks on a LAN drift: a certificate is valid from a little before it was made.
CLOCK_SKEW = datetime.timedelta(minutes=5)

_SUFFIX = ".vcnode"
# A DNS label: what a node id, a role or a user name must be to sit in a name.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
USER_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")

# Every node's certificate names this too: what a client dials when any member will do.
ANY_NODE = f"node{_SUFFIX}"


def id_name(node_id: str) -> str:
    """The TLS name that proves a peer is the node `node_id`."""
    return f"{node_id}.id{_SUFFIX}"


def role_name(role: str) -> str:
    """The TLS name that proves a peer serves `role`."""
    return f"{role}.role{_SUFFIX}"


def is_label(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None


def is_owner_name(text: str) -> bool:
    """A person's name that can sit in an `<owner>.owner.vcnode` name and read back."""
    return USER_NAME.fullmatch(text) is not None and is_label(text)


VOUCHED_NAME = f"vouched.trust{_SUFFIX}"


@dataclass(frozen=True)
class Identity:
    """What a certificate says about its holder."""

    node_id: str
    roles: frozenset[str]
    user: str | None = None
    # The cluster vouches for the holder (the lab's own machine): trusted from the start.
    vouched: bool = False
    # The person whose machine this is.
    owner: str | None = None

    def names(self) -> list[str]:
        names = [id_name(self.node_id), *(role_name(role) for role in sorted(self.roles))]
        if self.roles & set(NODE_ROLES):
            names.append(ANY_NODE)
        if self.user is not None:
            names.append(f"{self.user}.user{_SUFFIX}")
        if self.vouched:
            names.append(VOUCHED_NAME)
        if self.owner is not None:
            names.append(f"{self.owner}.owner{_SUFFIX}")
        return names

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Identity | None:
        """The identity that a certificate's DNS names spell, None when they spell none."""
        node_id: str | None = None
        user: str | None = None
        owner: str | None = None
        vouched = False
        roles: set[str] = set()
        for name in names:
            label, _, kind = name.removesuffix(_SUFFIX).partition(".")
            if not name.endswith(_SUFFIX) or not is_label(label):
                continue
            if kind == "id":
                node_id = label
            elif kind == "role" and label in ROLES:
                roles.add(label)
            elif kind == "user":
                user = label
            elif name == VOUCHED_NAME:
                vouched = True
            elif kind == "owner" and is_owner_name(label):
                owner = label
        if node_id is None:
            return None
        return cls(node_id=node_id, roles=frozenset(roles), user=user, vouched=vouched, owner=owner)


def new_key() -> Key:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> Key:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem)


def public_key_der(cert: x509.Certificate) -> bytes:
    """The key a certificate certifies, as DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ca_hash(ca: x509.Certificate) -> str:
    """The fingerprint a join token pins: sha256 of the CA's public key (as kubeadm's
    discovery hash), in lower-case base32 so it survives copy and paste. A node's own CA's
    is kept with its certificate's facts (daemon/trust/facts.py)."""
    digest = hashlib.sha256(public_key_der(ca)).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(cluster: str) -> tuple[Key, x509.Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vcnode cluster {cluster} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def certificate_request(key: Key, node_id: str) -> bytes:
    """A CSR (DER): proves the joining node holds `key`. The CA takes only the public key
    from it; what the certificate says comes from the token, never from the request."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def read_request(der: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of a CSR whose signature holds; ValueError otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    csr = x509.load_der_x509_csr(der)
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ValueError("the certificate request's key is not an EC P-256 key")
    return public_key


def issue(
    ca_key: Key,
    ca: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    identity: Identity,
    lifetime: datetime.timedelta = CERTIFICATE_LIFETIME,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + lifetime, ca.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in identity.names()]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _dns_names(cert: x509.Certificate) -> list[str] | None:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return names.get_values_for_type(x509.DNSName)


def identity_of(cert: x509.Certificate) -> Identity | None:
    names = _dns_names(cert)
    return None if names is None else Identity.from_names(names)


def facts_of(pem: bytes, ca_pem: bytes) -> CertificateFacts:
    """What the certificate `pem`, issued under the CA `ca_pem`, says of its holder, to keep
    beside it; ValueError when either is not a certificate."""
    cert = load_cert(pem)
    return CertificateFacts(
        certificate=fingerprint(pem),
        names=tuple(_dns_names(cert) or ()),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ca_certificate=fingerprint(ca_pem),
        ca_hash=ca_hash(load_cert(ca_pem)),
    )


def check_issued(ca: x509.Certificate, cert: x509.Certificate, key: Key) -> None:
    """Raises ValueError unless `cert` was signed by `ca` and certifies `key`."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as error:
        raise ValueError(f"the certificate was not issued by the cluster's CA ({error})") from None
    if cert.public_key() != key.public_key():
        raise ValueError("the certificate is not for this node's key")


def accept_certificate(
    ca_pem: bytes, cert_pem: bytes, key: bytes, pinned_ca_hash: str | None = None
) -> CertificateFacts:
    """The facts of `cert_pem` once it is shown to be a certificate `ca_pem` issued for the
    key `key` (PEM), and `ca_pem` (when `pinned_ca_hash` is given) the CA a join token
    names; ValueError saying which is not so otherwise."""
    try:
        ca = load_cert(ca_pem)
        cert = load_cert(cert_pem)
    except ValueError:
        raise ValueError("sent something that is not a certificate") from None
    if pinned_ca_hash is not None and ca_hash(ca) != pinned_ca_hash:
        raise ValueError("its CA is not the one the token names: not our cluster")
    check_issued(ca, cert, load_key(key))
    return facts_of(cert_pem, ca_pem)


def new_secret(nbytes: int) -> str:
    """Random lower-case base32 text (5 bits a character)."""
    return base64.b32encode(secrets.token_bytes(nbytes)).decode().rstrip("=").lower()
