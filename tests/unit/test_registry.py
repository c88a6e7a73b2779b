"""The volunteer registry state machine, with explicit times."""

from __future__ import annotations

from dataclasses import replace

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


def test_connect_makes_a_volunteer_online() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    _, volunteer = registry.connect(REGISTRATION, now=10.0)
    assert volunteer.state is VolunteerState.ONLINE
    assert volunteer.connected
    assert volunteer.first_seen == 10.0


def test_lost_after_three_missed_heartbeats_and_not_before() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    registry.heartbeat(token, Load(cpu_percent=5.0), now=1.0)
    assert registry.expire(now=3.99) == []
    [lost] = registry.expire(now=4.0)
    assert lost.state is VolunteerState.LOST
    assert registry.expire(now=10.0) == [], "reported once"


def test_a_lost_volunteer_comes_back_under_the_same_id() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    registry.connect(REGISTRATION, now=0.0)
    registry.expire(now=5.0)
    _, back = registry.connect(REGISTRATION, now=20.0)
    assert back.state is VolunteerState.ONLINE
    assert back.first_seen == 0.0
    assert [v.volunteer_id for v in registry.volunteers()] == ["v1"]


def test_a_replaced_session_no_longer_counts() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    old, _ = registry.connect(REGISTRATION, now=0.0)
    new, _ = registry.connect(REGISTRATION, now=1.0)
    assert registry.heartbeat(old, Load(), now=2.0) is None
    assert registry.disconnect(old, now=2.0) is None
    assert registry.get("v1") is not None
    assert registry.get("v1").connected  # type: ignore[union-attr]
    assert registry.heartbeat(new, Load(), now=2.0) is not None


def test_disconnect_keeps_the_state_until_expiry_decides() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    token, _ = registry.connect(REGISTRATION, now=0.0)
    gone = registry.disconnect(token, now=0.5)
    assert gone is not None
    assert gone.state is VolunteerState.ONLINE
    assert not gone.connected


def test_restore_gives_previously_online_volunteers_a_full_window() -> None:
    registry = VolunteerRegistry(heartbeat_seconds=1.0)
    _, volunteer = registry.connect(REGISTRATION, now=0.0)
    restarted = VolunteerRegistry(heartbeat_seconds=1.0)
    restarted.restore([volunteer], now=100.0)
    assert restarted.expire(now=102.9) == []
    assert [v.volunteer_id for v in restarted.expire(now=103.0)] == ["v1"]


def test_registration_problems_say_what_to_do() -> None:
    assert registration_problem(REGISTRATION, "lab", 1) is None
    other_cluster = registration_problem(replace(REGISTRATION, cluster="home"), "lab", 1)
    assert other_cluster is not None
    assert "start the volunteer with --cluster lab" in other_cluster
    newer = registration_problem(replace(REGISTRATION, protocol_version=2), "lab", 1)
    assert newer is not None
    assert "protocol version 2" in newer
    assert registration_problem(replace(REGISTRATION, volunteer_id=""), "lab", 1) is not None
