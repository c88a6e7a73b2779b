"""The README's "Running a pool on a LAN", word for word, on four hosts: network namespaces on
a bridge, each with a home of its own. The office machine runs the coordinator and manager,
two donated machines a volunteer each, and a laptop that runs no daemon submits a matrix
multiplication and fetches C, which must equal A·B computed here; then again with the
manager on the laptop, beside the person who submits. Nobody passes an address: everything
is found by `--cluster` alone, as on a real LAN, where loopback hides nothing; and nobody
gets in without a join token made on the office machine, as the README shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from splitters.blocks import generate
from tests.integration.harness import Daemon, Daemons, unique_cluster, wait_until
from tests.integration.lan import Host, lan

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.lan]

SIZE, SEED, BLOCKS = 256, 7, 2
WORKFLOW = f"""\
[workflow]
name = "product"
type = "matrix_multiplication"

[parameters]
size = {SIZE}
seed = {SEED}
blocks = {BLOCKS}
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    with lan(tmp_path / "lan", 4) as members:
        yield members


def start(daemons: Daemons, host: Host, *args: str) -> Daemon:
    """`vcnode daemon ARGS` on `host`, its data dir the default one there, with nothing
    but what ARGS say (no certificate put there for it)."""
    (host.home / "data").mkdir(parents=True, exist_ok=True)
    daemon = Daemon(host.data_dir, list(args), host.env, prefix=host.prefix, pass_data_dir=False)
    return daemons.add(daemon, provisioned=False)


def token(office: Host, *args: str) -> str:
    """`vcnode token create ARGS` on the office machine; the token it prints first."""
    made = office.run("token", "create", *args)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[0]


def online(laptop: Host, cluster: str) -> list[dict[str, object]]:
    result = laptop.run("volunteers", "--cluster", cluster, "--json")
    if result.returncode != 0:
        return []
    return [v for v in json.loads(result.stdout) if v["state"] == "online"]


@pytest.mark.parametrize("manager_on", ["office", "laptop"])
def test_the_readme_lan_section_runs_a_workflow_across_four_hosts(
    daemons: Daemons, hosts: list[Host], worker_image: str, manager_on: str
) -> None:
    office, donor_a, donor_b, laptop = hosts
    cluster = unique_cluster()
    # On the always-on machine (with the manager, or the scientist keeps that on the laptop):
    office_roles = "coordinator,manager" if manager_on == "office" else "coordinator"
    coordinator = start(daemons, office, *f"--role {office_roles} --cluster {cluster}".split())
    coordinator.address()
    volunteer_token = token(office, "--role", "volunteer", "--ttl", "7d")
    alice_token = token(office, "--role", "user", "--name", "alice")
    started = [coordinator]
    if manager_on == "laptop":
        manager_token = token(office, "--role", "manager")
        manager = f"--role manager --cluster {cluster} --token {manager_token}".split()
        started.append(start(daemons, laptop, *manager))
    # On each donated machine:
    donated = (
        f"--role volunteer --cluster {cluster} --token {volunteer_token} "
        "--max-cpus 2 --max-memory-mb 4096"
    ).split()
    # The second donor got the token without its addresses (say, read out over the phone):
    # it finds the coordinator's join port on mDNS, across the bridge.
    bare = [arg.partition("@")[0] if arg == volunteer_token else arg for arg in donated]
    volunteers = [start(daemons, donor_a, *donated), start(daemons, donor_b, *bare)]
    started += volunteers
    for daemon in started:
        daemon.address()
    logged_in = laptop.run("login", alice_token)
    assert logged_in.returncode == 0, logged_in.stderr
    ids = {volunteer.node_id for volunteer in volunteers}
    # From any machine: the laptop sees the pool by the cluster's name alone.
    wait_until(
        lambda: ids <= {str(v["id"]) for v in online(laptop, cluster)},
        30,
        "both volunteers online, seen from the laptop",
    )

    workflow = laptop.home / "product.toml"
    workflow.write_text(WORKFLOW)
    submitted = laptop.run(
        "submit", str(workflow), "--cluster", cluster, "--wait", "--json", timeout=300
    )
    logs = "\n".join(daemon.log for daemon in started)
    assert submitted.returncode == 0, f"{submitted.stderr}\n{logs}"
    workflow_id = json.loads(submitted.stdout)["workflow_id"]

    out = laptop.home / "out"
    fetched = laptop.run("results", workflow_id, "--cluster", cluster, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    a, b = generate(SIZE, SEED)
    assert np.allclose(np.load(out / "C.npy"), a @ b)
    [listed] = json.loads(laptop.run("workflows", "--cluster", cluster, "--json").stdout)
    assert listed["owner"] == "alice"
