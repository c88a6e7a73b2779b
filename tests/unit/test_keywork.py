"""A node's key work in a child process (daemon/trust/keywork.py): the key and request it
makes are what a coordinator takes, and it accepts a certificate only when our CA issued it
for that key, saying why not otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.errors import NodeError
from daemon.trust import pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.keywork import KeyWorker

IDENTITY = pki.Identity("n1", frozenset({"volunteer"}), vouched=True, owner="alice")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("ca"), "unit")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> ClusterAuthority:
    return ClusterAuthority.load_or_create(tmp_path_factory.mktemp("other-ca"), "unit")


async def test_a_request_proves_the_new_key_and_its_certificate_is_accepted(
    ca: ClusterAuthority,
) -> None:
    keys = KeyWorker()
    async with keys:
        key_pem, request = await keys.new_request("n1")
        public_key = pki.read_request(request)
        assert public_key == pki.load_key(key_pem).public_key()
        cert_pem = ca.issue(public_key, IDENTITY)
        facts = await keys.accept(ca.cert_pem, cert_pem, key_pem, ca.ca_hash)
    assert facts == pki.facts_of(cert_pem, ca.cert_pem)
    assert facts.ca_hash == ca.ca_hash
    assert pki.Identity.from_names(facts.names) == IDENTITY
    assert keys._process is None, "the child is gone once the work is done"


async def test_a_certificate_not_ours_is_refused_with_the_reason(
    ca: ClusterAuthority, other_ca: ClusterAuthority
) -> None:
    async with KeyWorker() as keys:
        key_pem, request = await keys.new_request("n1")
        public_key = pki.read_request(request)
        ours = ca.issue(public_key, IDENTITY)
        with pytest.raises(ValueError, match="not the one the token names: not our cluster"):
            await keys.accept(other_ca.cert_pem, ours, key_pem, ca.ca_hash)
        theirs = other_ca.issue(public_key, IDENTITY)
        with pytest.raises(ValueError, match="was not issued by the cluster's CA"):
            await keys.accept(ca.cert_pem, theirs, key_pem, ca.ca_hash)
        for_another_key = ca.issue(pki.new_key().public_key(), IDENTITY)
        with pytest.raises(ValueError, match="is not for this node's key"):
            await keys.accept(ca.cert_pem, for_another_key, key_pem)
        with pytest.raises(ValueError, match="sent something that is not a certificate"):
            await keys.accept(ca.cert_pem, b"not a certificate", key_pem)
        # Refusals leave the child serving: the next address may send ours.
        assert await keys.accept(ca.cert_pem, ours, key_pem, ca.ca_hash)


async def test_what_a_certificate_saved_before_its_facts_says_is_read_in_the_child(
    ca: ClusterAuthority,
) -> None:
    cert_pem = ca.issue(pki.new_key().public_key(), IDENTITY)
    async with KeyWorker() as keys:
        assert await keys.facts_of(cert_pem, ca.cert_pem) == pki.facts_of(cert_pem, ca.cert_pem)
        with pytest.raises(ValueError, match=r"PEM|certificate"):
            await keys.facts_of(b"not a certificate", ca.cert_pem)
        with pytest.raises(ValueError, match=r"PEM|certificate"):
            await keys.facts_of(cert_pem, b"not a CA")


async def test_a_child_that_cannot_start_or_dies_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(NodeError, match=r"cannot start .*no-python to make this node's key"):
        async with KeyWorker():
            pass
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(NodeError, match=r"the process making this node's key failed \(exit code 1"):
        async with KeyWorker() as keys:
            await keys.new_request("n1")
