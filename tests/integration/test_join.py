"""Where a node with a token finds its coordinator's join port: the token's addresses, or
mDNS when those are gone (a coordinator that moved, a token written down without them)."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import (
    Daemons,
    list_volunteers,
    run_cli,
    unique_cluster,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_token_without_addresses_joins_through_the_join_port_mdns_announces(
    daemons: Daemons,
) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--heartbeat", "0.5"]
    coordinator = daemons.start("coordinator", "--role", "coordinator", *common)
    address = coordinator.address()
    made = run_cli(
        "token", "create", "--role", "volunteer", "--data-dir", str(coordinator.data_dir),
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    assert "@127.0.0.1:" in token, "the token names where the coordinator took joins"
    bare = token.partition("@")[0]

    volunteer = daemons.start("volunteer", "--role", "volunteer", *common, "--token", bare)
    volunteer.address()
    wait_until(lambda: volunteer.node_id in list_volunteers(address), 15, "the volunteer to join")
    assert "joined cluster" in volunteer.log
