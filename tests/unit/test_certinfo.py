"""What a node reads of certificates without `cryptography` (daemon/trust/certinfo.py) says
what `cryptography` reads, and the facts kept beside a certificate stand for that one only."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from daemon.trust import certinfo, pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.certinfo import CertificateFacts
from daemon.trust.credentials import NODE, Credential, facts_file, tls_dir

IDENTITIES = [
    pki.Identity("n1", frozenset({"volunteer"})),
    pki.Identity("n2", frozenset({"coordinator", "manager", "volunteer"})),
    pki.Identity("user-1", frozenset({"user"}), user="alice"),
    pki.Identity("n5", frozenset({"manager", "volunteer"}), vouched=True, owner="bob-2"),
]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("ca"), "unit")


def rsa_certificate() -> bytes:
    """A self-signed RSA certificate without extensions: another shape than ours."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_key_a_certificate_certifies_reads_as_cryptography_reads_it(
    ca: ClusterAuthority, identity: pki.Identity
) -> None:
    held = ca.credential(identity)
    assert held.public_key_der == pki.public_key_der(pki.load_cert(held.cert_pem))
    other = rsa_certificate()
    assert certinfo.public_key_der(other) == pki.public_key_der(pki.load_cert(other))


def test_the_ca_hash_reads_as_the_token_pins_it(ca: ClusterAuthority) -> None:
    assert certinfo.ca_hash(ca.cert_pem) == pki.ca_hash(ca.cert) == ca.ca_hash
    assert ca.credential(IDENTITIES[0]).ca_hash == ca.ca_hash


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",  # an empty SEQUENCE
        b"-----BEGIN CERTIFICATE-----\nAgEB\n-----END CERTIFICATE-----\n",  # an INTEGER
    ],
)
def test_what_is_not_a_certificate_has_no_key(pem: bytes) -> None:
    with pytest.raises(ValueError, match=r"PEM|DER|certificate"):
        certinfo.public_key_der(pem)


def test_a_certificate_cut_short_has_no_key(ca: ClusterAuthority) -> None:
    der = certinfo.certificate_der(ca.cert_pem)
    for length in (1, 2, 10, len(der) // 2, len(der) - 1):
        with pytest.raises(ValueError, match=r"DER|certificate"):
            certinfo.subject_public_key_info(der[:length])


def test_facts_read_back_as_they_were_kept(ca: ClusterAuthority) -> None:
    held = ca.credential(IDENTITIES[3])
    facts = pki.facts_of(held.cert_pem)
    cert = pki.load_cert(held.cert_pem)
    assert facts.not_before == cert.not_valid_before_utc
    assert facts.not_after == cert.not_valid_after_utc
    assert pki.Identity.from_names(facts.names) == IDENTITIES[3]
    assert CertificateFacts.from_json(facts.to_json()) == facts
    assert facts.describe(held.cert_pem)
    assert not facts.describe(ca.credential(IDENTITIES[3]).cert_pem), "another certificate"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"certificate_sha256": "ab"}',
        '{"certificate_sha256": "ab", "dns_names": "n1.id.vcnode", "not_before": '
        '"2026-01-01T00:00:00+00:00", "not_after": "2026-02-01T00:00:00+00:00"}',
        '{"certificate_sha256": "ab", "dns_names": [], "not_before": "2026-01-01T00:00:00", '
        '"not_after": "2026-02-01T00:00:00"}',
        '{"certificate_sha256": "ab", "dns_names": [], "not_before": "yesterday", '
        '"not_after": "2026-02-01T00:00:00+00:00"}',
    ],
)
def test_what_is_not_kept_facts_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"facts|format|isoformat"):
        CertificateFacts.from_json(text)


# --- a credential and the facts beside it ---------------------------------------------------


def test_a_saved_credential_keeps_its_facts_beside_it(ca: ClusterAuthority, tmp_path: Path) -> None:
    held = ca.credential(IDENTITIES[0])
    held.save(tmp_path, NODE)
    kept = CertificateFacts.from_json(facts_file(tmp_path, NODE).read_text())
    assert kept == pki.facts_of(held.cert_pem)
    loaded = Credential.load(tmp_path, NODE)
    assert loaded == held
    assert loaded is not None
    assert (loaded.identity, loaded.expires_at, loaded.lifetime) == (
        held.identity,
        held.expires_at,
        held.lifetime,
    )


LOADS_WITHOUT_CRYPTOGRAPHY = """
import sys
from pathlib import Path
from daemon.trust.credentials import Credential
held = Credential.load(Path(sys.argv[1]), "node")
assert held is not None
print(held.identity.node_id, held.expires_at.isoformat(), held.ca_hash)
print("cryptography" in sys.modules)
"""


def load_in_a_fresh_process(directory: Path) -> list[str]:
    """Loads the node credential in `directory` in a new interpreter: what it read, and
    whether it imported `cryptography`."""
    loaded = subprocess.run(
        [sys.executable, "-c", LOADS_WITHOUT_CRYPTOGRAPHY, str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout.split("\n")[:2]


def test_a_certificate_saved_before_its_facts_were_kept_has_them_read_once(
    ca: ClusterAuthority, tmp_path: Path
) -> None:
    """An old data dir: a certificate with nothing beside it. The first load reads it with
    `cryptography` and keeps its facts; the loads after read those, without `cryptography`."""
    directory = tls_dir(tmp_path)
    held = ca.credential(IDENTITIES[0])
    held.save(directory, NODE)
    facts_file(directory, NODE).unlink()

    said = f"n1 {held.expires_at.isoformat()} {ca.ca_hash}"
    assert load_in_a_fresh_process(directory) == [said, "True"]
    assert CertificateFacts.from_json(facts_file(directory, NODE).read_text()).describe(
        held.cert_pem
    )
    assert load_in_a_fresh_process(directory) == [said, "False"]


def test_facts_kept_for_another_certificate_are_not_taken_for_this_one(
    ca: ClusterAuthority, tmp_path: Path
) -> None:
    """The certificate was replaced by hand (or its facts were left from an earlier one):
    what it says is read from it again, never from the stale file."""
    ca.credential(IDENTITIES[0]).save(tmp_path, NODE)
    stale = facts_file(tmp_path, NODE).read_text()
    other = ca.credential(IDENTITIES[1])
    other.save(tmp_path, NODE)
    facts_file(tmp_path, NODE).write_text(stale)

    loaded = Credential.load(tmp_path, NODE)
    assert loaded is not None
    assert loaded.identity == IDENTITIES[1]
    assert json.loads(facts_file(tmp_path, NODE).read_text())["certificate_sha256"] == (
        certinfo.fingerprint(other.cert_pem)
    ), "rewritten for the certificate it sits beside"


def test_facts_that_do_not_read_are_read_again_from_the_certificate(
    ca: ClusterAuthority, tmp_path: Path
) -> None:
    held = ca.credential(IDENTITIES[2])
    held.save(tmp_path, NODE)
    facts_file(tmp_path, NODE).write_text("{half a file")
    loaded = Credential.load(tmp_path, NODE)
    assert loaded is not None
    assert loaded.identity == IDENTITIES[2]


def test_a_credential_whose_certificate_does_not_read_is_none(
    ca: ClusterAuthority, tmp_path: Path
) -> None:
    ca.credential(IDENTITIES[0]).save(tmp_path, NODE)
    (tmp_path / f"{NODE}.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    assert Credential.load(tmp_path, NODE) is None


def test_a_credential_given_facts_of_another_certificate_reads_its_own(
    ca: ClusterAuthority,
) -> None:
    held = ca.credential(IDENTITIES[0])
    wrong = pki.facts_of(ca.credential(IDENTITIES[1]).cert_pem)
    rebuilt = Credential(held.ca_pem, held.key_pem, held.cert_pem, wrong)
    assert rebuilt.identity == IDENTITIES[0]
