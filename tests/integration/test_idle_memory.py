"""An idle volunteer keeps out of its memory what it does not need while it waits for work
(benchmarks/idle.py measures it): `cryptography`, which it uses only to join and renew, in a
child process (daemon/trust/keywork.py); aiohttp, which it uses only to run tasks in Docker
(what it asks Docker while idle is asked in a child process too, daemon/runtime/probe.py). A
data dir from before the certificate's facts were kept beside it still starts: it reads them
once, in a child process too, and keeps them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.trust.credentials import CA_FILE, NODE, facts_file, tls_dir
from daemon.trust.facts import CertificateFacts
from tests.integration.harness import (
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    unique_cluster,
    wait_until,
)
from tests.trust import authority, provision

pytestmark = pytest.mark.integration

# What a process that imported them has mapped: their compiled extensions.
HEAVY = {"cryptography": "/cryptography/hazmat/bindings/", "aiohttp": "/aiohttp/"}


def kept_in_memory(daemon: Daemon) -> set[str]:
    """The heavy packages whose code `daemon`'s process has mapped."""
    assert daemon.process is not None
    maps = Path(f"/proc/{daemon.process.pid}/maps").read_text()
    return {name for name, path in HEAVY.items() if path in maps}


def start_coordinator(daemons: Daemons, cluster: str) -> str:
    args = ["--role", "coordinator", "--listen", "127.0.0.1:0", "--cluster", cluster]
    return daemons.start("coordinator", *args, "--heartbeat", "0.5").address()


def volunteer_args(cluster: str) -> list[str]:
    return ["--role", "volunteer", "--listen", "127.0.0.1:0", "--cluster", cluster]


def facts_describe_the_certificate(data_dir: Path) -> bool:
    directory = tls_dir(data_dir)
    kept = CertificateFacts.from_json(facts_file(directory, NODE).read_text())
    return kept.describe(
        (directory / f"{NODE}.pem").read_bytes(), (directory / CA_FILE).read_bytes()
    )


def test_a_volunteer_that_joined_with_a_token_keeps_neither_cryptography_nor_aiohttp(
    daemons: Daemons, tmp_path: Path
) -> None:
    cluster = unique_cluster()
    address = start_coordinator(daemons, cluster)
    made = cli_json(
        "token", "create", "--role", "volunteer", "--data-dir", str(daemons.root / "coordinator")
    )
    volunteer = daemons.start("volunteer", *volunteer_args(cluster), "--token", made["token"])
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 15, "the volunteer to join")
    assert "joined cluster" in volunteer.log
    assert facts_describe_the_certificate(volunteer.data_dir), "the join kept the facts"
    assert kept_in_memory(volunteer) == set(), volunteer.log


def forget_the_facts(path: Path) -> None:
    """As a vcnode from before they were kept left a data dir."""
    path.unlink()


def forget_the_ca_hash(path: Path) -> None:
    """As a vcnode from before they held the CA's hash left them."""
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({key: kept[key] for key in kept if not key.startswith("ca_")}))


@pytest.mark.parametrize("aged", [forget_the_facts, forget_the_ca_hash])
def test_a_data_dir_from_before_the_facts_were_kept_starts_and_reads_them_once(
    daemons: Daemons, tmp_path: Path, aged: Callable[[Path], None]
) -> None:
    cluster = unique_cluster()
    address = start_coordinator(daemons, cluster)
    data_dir = tmp_path / "old-volunteer"
    provision(data_dir, ["volunteer"])
    aged(facts_file(tls_dir(data_dir), NODE))
    args = volunteer_args(cluster)

    first = daemons.add(Daemon(data_dir, args), provisioned=False)
    first.address()
    wait_until(lambda: first.node_id in list_volunteers(address), 15, "the old volunteer to join")
    assert facts_describe_the_certificate(data_dir), "the first start kept the facts"
    kept = json.loads(facts_file(tls_dir(data_dir), NODE).read_text())
    assert kept["dns_names"]
    assert kept["ca_hash"] == authority().ca_hash
    assert "cryptography" not in kept_in_memory(first)
    assert "pem once and kept what it says beside it" in first.log
    assert first.terminate() == 0, first.log

    again = daemons.add(Daemon(data_dir, args), provisioned=False)
    again.address()
    wait_until(lambda: again.node_id in list_volunteers(address), 15, "the volunteer to return")
    assert "cryptography" not in kept_in_memory(again)
    assert again.log.count("and kept what it says beside it") == 1, "read it again (same log)"
