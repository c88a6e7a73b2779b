"""Why a queued task is not running, against each volunteer, grouped by reason."""

from __future__ import annotations

from dataclasses import replace

from cli.views import explanation_text
from daemon.models import (
    Load,
    OwnerLimits,
    ReasonGroup,
    ResourceRequest,
    Resources,
    TaskExplanation,
    TaskSpec,
    TrustRecord,
    Volunteer,
    VolunteerState,
)
from manager_node.why import why_fetching, why_waiting

SPEC = TaskSpec(
    task_id="wf.t",
    workflow_id="wf",
    image="vcnode/worker:1",
    command=("true",),
    resources=ResourceRequest(cpus=1, memory_mb=256, disk_mb=64),
    timeout_seconds=60,
    image_from_manager=True,
)


def volunteer(vid: str, **changes: object) -> Volunteer:
    base = Volunteer(
        volunteer_id=vid,
        hostname=vid,
        version="1",
        resources=Resources(
            cpu_cores=4, memory_mb=8192, disk_free_mb=10_000, docker_available=True
        ),
        limits=OwnerLimits(max_concurrent_tasks=1),
        state=VolunteerState.ONLINE,
        first_seen=0,
        last_seen=0,
        connected=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_each_volunteer_gets_the_first_rule_that_stops_it_grouped_most_first() -> None:
    small = OwnerLimits(max_disk_mb=50)
    pool = [
        volunteer("disk-1", limits=small),
        volunteer("disk-2", limits=small),
        volunteer("busy", load=Load(running_tasks=2)),
        volunteer("said-no"),
        volunteer("cheat", trust=TrustRecord(blocklisted=True)),
        volunteer("gone", state=VolunteerState.LOST, connected=False),
        volunteer("idle"),
    ]
    groups = why_waiting(SPEC, pool, {"said-no": "no image vcnode/worker:1 here"})
    assert groups[0] == ReasonGroup(
        "not enough disk: needs 64 MiB, may use 50", ("disk-1", "disk-2")
    )
    assert set(groups[1:]) == {
        ReasonGroup("busy until a slot frees (holds 2 tasks, runs 1 at once)", ("busy",)),
        ReasonGroup("declined it: no image vcnode/worker:1 here", ("said-no",)),
        ReasonGroup("blocklisted: its results disagreed with other volunteers'", ("cheat",)),
        ReasonGroup("lost: not connected", ("gone",)),
        ReasonGroup("free: the coordinator offers it at its next dispatch", ("idle",)),
    }


def test_a_copy_names_the_volunteers_that_ran_the_others() -> None:
    copy = replace(SPEC, task_id="wf.t~2", replica_of="wf.t", avoid_volunteers=("ran",))
    [group] = why_waiting(copy, [volunteer("ran")], {})
    assert group.reason == "ran another copy of this task (copies run on distinct volunteers)"


def test_an_empty_pool_gives_no_reasons() -> None:
    assert why_waiting(SPEC, [], {}) == []


def test_a_fetching_task_names_the_volunteer_that_holds_it() -> None:
    explained = TaskExplanation("wf.t", "t", "fetching", "", tuple(why_fetching("volunteer-7")))
    assert explanation_text(explained) == (
        "task t (fetching)\n"
        "  1 volunteer: holds it: fetching its inputs (and image), or waiting there for a "
        "free slot (or room within its owner's caps) (voluntee)"
    )
