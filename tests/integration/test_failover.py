"""A volunteer whose coordinator dies joins another coordinator of its cluster by itself."""

from __future__ import annotations

import pytest

from tests.integration.harness import Daemons, list_volunteers, unique_cluster, wait_until

pytestmark = pytest.mark.integration


def test_volunteer_fails_over_to_another_coordinator_found_on_mdns(daemons: Daemons) -> None:
    cluster = unique_cluster()
    common = ["--listen", "127.0.0.1:0", "--cluster", cluster, "--heartbeat", "0.5"]
    first = daemons.start("coordinator-1", "--role", "coordinator", *common)
    second = daemons.start("coordinator-2", "--role", "coordinator", *common)
    coordinators = {first.address(): first, second.address(): second}
    volunteer = daemons.start("volunteer", "--role", "volunteer", *common)
    volunteer.address()

    def joined() -> str | None:
        for address in coordinators:
            found = list_volunteers(address).get(volunteer.node_id)
            if found is not None and found.connected:
                return address
        return None

    joined_address = wait_until(joined, 10, "the volunteer to join a coordinator")
    [other_address] = [a for a in coordinators if a != joined_address]
    coordinators[joined_address].kill()

    def joined_other() -> bool:
        found = list_volunteers(other_address).get(volunteer.node_id)
        return found is not None and found.connected and found.state == "online"

    wait_until(joined_other, 15, "the volunteer to fail over to the other coordinator")
    assert "joined coordinator" in volunteer.log
    assert volunteer.terminate() == 0
