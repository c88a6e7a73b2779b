"""The volunteer registry state machine, with explicit times."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator_node.registry import VolunteerRegistry, registration_problem
from daemon.models import Load, OwnerLimits, Registration, Resources, VolunteerState

REGISTRATION = Registration(
    volunteer_id="v1",
    hostname="lab-1",
    cluster="lab",
    protocol_version=1,
    version="0.1.0",
    resources=Resources(cpu_cores=4, memory_mb=8192, disk_free_mb=1000),
    limits=OwnerLimits(),
)


def lost_ids(registry: VolunteerRegistry, now: float) -> list[str]:
    return [volunteer.volunteer_id for volunteer in registry.expire(now=now)]


def test_connect_makes_a_volunteer_online() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    _, volunteer = registry.connect(replace(REGISTRATION, running_task_ids=("t1", "t2")), now=10.0)
    assert volunteer.state is VolunteerState.ONLINE
    assert volunteer.connected
    assert (volunteer.first_seen, volunteer.last_seen) == (10.0, 10.0)
    assert volunteer.load.running_tasks == 2
    assert registry.get("v1") == volunteer


def test_a_heartbeat_refreshes_last_seen_and_load() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    beat = registry.heartbeat(token, Load(cpu_percent=42.0), now=2.5)
    assert beat is not None
    assert beat.last_seen == 2.5
    assert beat.load == Load(cpu_percent=42.0)
    assert beat.first_seen == 0.0
    assert registry.get("v1") == beat


@pytest.mark.parametrize(("heartbeat", "missed"), [(1.0, 3), (2.0, 5)])
def test_lost_only_after_the_missed_heartbeats_window(heartbeat: float, missed: int) -> None:
    registry = VolunteerRegistry(heartbeat_seconds=heartbeat, missed_heartbeats=missed)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    registry.heartbeat(token, Load(), now=1.0)
    window = heartbeat * missed
    assert lost_ids(registry, now=1.0 + window - 0.01) == []
    [lost] = registry.expire(now=1.0 + window + 0.01)
    assert lost.state is VolunteerState.LOST
    assert registry.get("v1") == lost
    assert registry.expire(now=1000.0) == [], "reported once"


def test_a_disconnected_volunteer_stays_online_until_its_window_ends() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    gone = registry.disconnect(token, now=0.5)
    assert gone is not None
    assert gone.state is VolunteerState.ONLINE
    assert not gone.connected
    assert lost_ids(registry, now=2.99) == []
    assert lost_ids(registry, now=3.01) == ["v1"]


def test_a_lost_volunteer_that_heartbeats_is_online_again() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    registry.expire(now=5.0)
    back = registry.heartbeat(token, Load(), now=20.0)
    assert back is not None
    assert back.state is VolunteerState.ONLINE
    assert (back.volunteer_id, back.first_seen, back.last_seen) == ("v1", 0.0, 20.0)
    assert lost_ids(registry, now=22.99) == [], "a fresh window from the heartbeat"
    assert lost_ids(registry, now=23.01) == ["v1"]


def test_a_lost_volunteer_that_reconnects_keeps_its_id_and_first_seen() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    registry.connect(REGISTRATION, now=0.0)
    registry.expire(now=5.0)
    _, back = registry.connect(replace(REGISTRATION, hostname="lab-1b"), now=20.0)
    assert back.state is VolunteerState.ONLINE
    assert back.connected
    assert (back.first_seen, back.last_seen, back.hostname) == (0.0, 20.0, "lab-1b")
    assert registry.volunteers() == [back]


def test_a_replaced_session_no_longer_counts() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    old, _ = registry.connect(REGISTRATION, now=0.0)
    new, current = registry.connect(REGISTRATION, now=1.0)
    assert not registry.is_current(old)
    assert registry.heartbeat(old, Load(cpu_percent=99.0), now=2.0) is None
    assert registry.disconnect(old, now=2.0) is None
    assert registry.get("v1") == current, "the stale token changed nothing"
    assert registry.heartbeat(new, Load(), now=2.0) is not None


def test_restore_gives_previously_online_volunteers_a_full_window() -> None:
    before = VolunteerRegistry(heartbeat_seconds=1.0)
    _, online = before.connect(REGISTRATION, now=0.0)
    _, gone = before.connect(replace(REGISTRATION, volunteer_id="v2"), now=0.0)
    lost = replace(gone, state=VolunteerState.LOST)
    restarted = VolunteerRegistry(heartbeat_seconds=1.0)
    restarted.restore([online, lost], now=100.0)
    assert restarted.get("v1") == replace(online, connected=False)
    assert lost_ids(restarted, now=102.99) == []
    assert lost_ids(restarted, now=103.01) == ["v1"], "the lost one is not reported again"
    assert restarted.get("v2") == replace(lost, connected=False)


def test_registration_problems_say_what_to_do() -> None:
    assert registration_problem(REGISTRATION, "lab", 1) is None
    other_cluster = registration_problem(replace(REGISTRATION, cluster="home"), "lab", 1)
    assert other_cluster is not None
    assert "'home'" in other_cluster
    assert "start the volunteer with --cluster lab" in other_cluster
    newer = registration_problem(replace(REGISTRATION, protocol_version=2), "lab", 1)
    assert newer is not None
    assert "protocol version 2" in newer
    assert "version 1" in newer
    no_id = registration_problem(replace(REGISTRATION, volunteer_id=""), "lab", 1)
    assert no_id is not None
    assert "empty volunteer_id" in no_id


def test_a_volunteer_that_says_goodbye_has_left_and_is_never_lost() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    left = registry.depart(token)
    assert left is not None
    assert left.state is VolunteerState.LEFT
    assert not left.connected
    assert lost_ids(registry, now=100.0) == [], "it is not expected to heartbeat"
    _, back = registry.connect(REGISTRATION, now=200.0)
    assert back.state is VolunteerState.ONLINE


def test_a_goodbye_from_a_replaced_session_changes_nothing() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    old, _ = registry.connect(REGISTRATION, now=0.0)
    _, current = registry.connect(REGISTRATION, now=1.0)
    assert registry.depart(old) is None
    assert registry.get("v1") == current


def test_a_volunteer_gone_longer_than_the_retention_is_forgotten() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0, retention_seconds=100.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    registry.connect(replace(REGISTRATION, volunteer_id="v2"), now=0.0)
    registry.disconnect(token, now=1.0)
    assert lost_ids(registry, now=5.0) == ["v1", "v2"]
    assert registry.forget_gone(now=100.0) == [], "gone, but not for long enough"
    # v2's stream is still open (a hung host): it is not forgotten while connected.
    assert registry.forget_gone(now=101.0) == ["v1"]
    assert registry.get("v1") is None
    assert [v.volunteer_id for v in registry.volunteers()] == ["v2"]
