"""The pool forms, notices a dead volunteer, and survives a coordinator crash: real processes,
real gRPC on loopback, real SQLite files; once through mDNS and once with explicit addresses."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import (
    Daemons,
    list_volunteers,
    unique_cluster,
    volunteers_by_id,
    wait_until,
)

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5
# Expiry is checked every quarter interval and we poll every 50 ms: that is the slack.
LOST_WITHIN = 3 * HEARTBEAT + HEARTBEAT / 4 + 0.3


@pytest.mark.parametrize("discovery", ["mdns", "explicit"])
def test_pool_forms_detects_loss_and_survives_coordinator_restart(
    daemons: Daemons, discovery: str
) -> None:
    cluster = unique_cluster()
    common = ["--cluster", cluster, "--heartbeat", str(HEARTBEAT)]
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", *common
    )
    address = coordinator.address()
    port = address.rsplit(":", 1)[1]
    if discovery == "mdns":
        # Only --cluster: the coordinator is found on mDNS (kept on loopback by --listen).
        volunteer_args = ["--role", "volunteer", "--listen", "127.0.0.1:0", *common]
    else:
        volunteer_args = [
            "--role", "volunteer", "--listen", "127.0.0.1:0", "--no-mdns",
            "--coordinator", address, *common,
        ]  # fmt: skip

    started = time.monotonic()
    doomed = daemons.start("volunteer-a", *volunteer_args)
    survivor = daemons.start("volunteer-b", *volunteer_args)
    doomed.address()
    survivor.address()
    ids = {doomed.node_id, survivor.node_id}

    def both_online() -> bool:
        found = list_volunteers(address)
        return all(vid in found and found[vid].state == "online" for vid in ids)

    wait_until(both_online, 10, "both volunteers online")
    joined_after = time.monotonic() - started
    assert joined_after <= 3.0, f"volunteers took {joined_after:.2f} s to join (limit 3 s)"

    listing = volunteers_by_id(coordinator)  # the CLI a person or script would use
    assert {vid: listing[vid]["state"] for vid in ids} == dict.fromkeys(ids, "online")
    for volunteer in listing.values():
        assert volunteer["cpu_cores"] >= 1
        assert volunteer["memory_mb"] > 0
        assert volunteer["hostname"]
        # No --max-disk-mb: the default cache of fetched inputs is the cap tasks match.
        assert volunteer["limits"]["max_disk_mb"] == 20 * 1024

    doomed.kill()
    killed_at = time.monotonic()
    wait_until(
        lambda: list_volunteers(address)[doomed.node_id].state == "lost", 10, "killed one lost"
    )
    lost_after = time.monotonic() - killed_at
    assert lost_after <= LOST_WITHIN, f"lost after {lost_after:.2f} s (limit {LOST_WITHIN:.2f})"
    assert list_volunteers(address)[survivor.node_id].state == "online"

    coordinator.kill()
    restart_listen = "127.0.0.1:0" if discovery == "mdns" else f"127.0.0.1:{port}"
    restarted = daemons.start(
        "coordinator",
        "--role", "coordinator", "--listen", restart_listen, *common,
        data_dir=coordinator.data_dir,
    )  # fmt: skip
    new_address = restarted.address()
    registry = list_volunteers(new_address)
    assert set(registry) == ids, "the registry did not survive the restart"
    assert registry[doomed.node_id].state == "lost"

    restarted_at = time.time()
    wait_until(
        lambda: (
            (v := list_volunteers(new_address).get(survivor.node_id)) is not None
            and v.connected
            and v.last_seen >= restarted_at
        ),
        20,
        "the surviving volunteer to reconnect by itself",
    )
    final = volunteers_by_id(restarted)
    assert final[survivor.node_id]["state"] == "online"
    assert final[doomed.node_id]["state"] == "lost"

    for daemon in (survivor, restarted):
        assert daemon.terminate() == 0, daemon.log
