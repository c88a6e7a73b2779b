"""What a node's own certificate says, kept beside it (daemon/trust/facts.py) so that the node
knows it without `cryptography`: it is what `cryptography` reads, it reads back as kept, and
it stands for that certificate and that CA only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.trust import pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import CA_FILE, NODE, Credential, facts_file, tls_dir
from daemon.trust.facts import CertificateFacts, fingerprint

IDENTITIES = [
    pki.Identity("n1", frozenset({"volunteer"})),
    pki.Identity("n2", frozenset({"coordinator", "manager", "volunteer"})),
    pki.Identity("user-1", frozenset({"user"}), user="alice"),
    pki.Identity("n5", frozenset({"manager", "volunteer"}), vouched=True, owner="bob-2"),
]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("ca"), "unit")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("other-ca"), "unit")


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_facts_are_what_cryptography_reads_and_read_back_as_kept(
    ca: ClusterAuthority, identity: pki.Identity
) -> None:
    held = ca.credential(identity)
    facts = pki.facts_of(held.cert_pem, held.ca_pem)
    cert = pki.load_cert(held.cert_pem)
    assert facts.not_before == cert.not_valid_before_utc
    assert facts.not_after == cert.not_valid_after_utc
    assert pki.Identity.from_names(facts.names) == identity
    assert CertificateFacts.from_json(facts.to_json()) == facts
    assert facts.describe(held.cert_pem, held.ca_pem)


def test_the_kept_ca_hash_is_the_one_a_token_pins(ca: ClusterAuthority) -> None:
    held = ca.credential(IDENTITIES[0])
    assert pki.facts_of(held.cert_pem, held.ca_pem).ca_hash == pki.ca_hash(ca.cert) == ca.ca_hash
    assert held.ca_hash == ca.ca_hash
    assert len(held.ca_hash) == 52


def test_facts_stand_for_their_certificate_and_their_ca_only(
    ca: ClusterAuthority, other_ca: ClusterAuthority
) -> None:
    held = ca.credential(IDENTITIES[3])
    facts = pki.facts_of(held.cert_pem, held.ca_pem)
    assert not facts.describe(ca.credential(IDENTITIES[3]).cert_pem, held.ca_pem), "another one"
    assert not facts.describe(held.cert_pem, other_ca.cert_pem), "another CA"
    assert facts.certificate == fingerprint(held.cert_pem)
    assert facts.ca_certificate == fingerprint(ca.cert_pem)


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
        # As the vcnode before kept them, without the CA's: read again, not taken.
        '{"certificate_sha256": "ab", "dns_names": [], "not_before": '
        '"2026-01-01T00:00:00+00:00", "not_after": "2026-02-01T00:00:00+00:00"}',
        '{"certificate_sha256": "ab", "dns_names": [], "not_before": '
        '"2026-01-01T00:00:00+00:00", "not_after": "2026-02-01T00:00:00+00:00", '
        '"ca_sha256": "cd", "ca_hash": 7}',
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
    assert kept == pki.facts_of(held.cert_pem, held.ca_pem)
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
        held.cert_pem, held.ca_pem
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
        fingerprint(other.cert_pem)
    ), "rewritten for the certificate it sits beside"


def test_facts_kept_under_another_ca_do_not_give_its_hash(
    ca: ClusterAuthority, other_ca: ClusterAuthority, tmp_path: Path
) -> None:
    """ca.pem was replaced (a restored backup of another cluster's): the CA hash a token is
    checked against is read from the CA that is there, not from facts of the one before."""
    ca.credential(IDENTITIES[0]).save(tmp_path, NODE)
    (tmp_path / CA_FILE).write_bytes(other_ca.cert_pem)
    loaded = Credential.load(tmp_path, NODE)
    assert loaded is not None
    assert loaded.ca_hash == other_ca.ca_hash != ca.ca_hash
    assert json.loads(facts_file(tmp_path, NODE).read_text())["ca_hash"] == other_ca.ca_hash


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
    wrong = pki.facts_of(ca.credential(IDENTITIES[1]).cert_pem, ca.cert_pem)
    rebuilt = Credential(held.ca_pem, held.key_pem, held.cert_pem, wrong)
    assert rebuilt.identity == IDENTITIES[0]
