"""The owner's allow-lists of managers and images: the pure rule, its settings, the
coordinator's filter, the volunteer's own check, `status --why` and the wire."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from coordinator_node.scheduler import Candidate, Publish, Scheduler, SendOffer
from daemon.capacity import allow_problem, coordinator_allow_problem, image_allowed
from daemon.config import resolve
from daemon.errors import ConfigError
from daemon.models import (
    EventKind,
    OwnerLimits,
    Registration,
    ResourceRequest,
    Resources,
    TaskSpec,
    Volunteer,
    VolunteerState,
)
from daemon.transport import convert
from daemon.transport.caps import excess
from manager_node.why import why_waiting
from volunteer_node.policy import Situation, decline_reason

ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64
TASK = TaskSpec(
    task_id="wf.t",
    workflow_id="wf",
    image="vcnode/worker:1",
    command=("true",),
    resources=ResourceRequest(cpus=1, memory_mb=256),
    timeout_seconds=60,
    manager_id="mgr-a",
)
MACHINE = Resources(cpu_cores=4, memory_mb=8192, disk_free_mb=50_000, docker_available=True)


# --- the pure rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "ids", "allowed", "verdict"),
    [
        ("vcnode/worker:1", [], ["vcnode/*"], True),
        ("vcnode/worker:1", [], ["vcnode/worker:?"], True),
        ("ghcr.io/lab/tool:1", [], ["vcnode/*"], False),
        # Case counts: an image reference is case-sensitive.
        ("VCNODE/worker:1", [], ["vcnode/*"], False),
        ("anything:1", [ID_A], [ID_A], True),
        ("anything:1", [ID_B], [ID_A], False),
        # A digest entry never matches by name, and a pattern never by ID.
        ("anything:1", [], [ID_A], False),
        ("sha256:" + "a" * 64, [], ["vcnode/*"], False),
    ],
)
def test_image_patterns_match_names_and_digests_match_ids(
    image: str, ids: list[str], allowed: list[str], verdict: bool
) -> None:
    assert image_allowed(image, ids, allowed) is verdict


def test_empty_allow_lists_allow_everything() -> None:
    assert allow_problem(TASK, OwnerLimits(), "anyone", None) is None


def test_a_manager_outside_allow_managers_is_refused_naming_the_rule() -> None:
    limits = OwnerLimits(allow_managers=("mgr-a",))
    assert allow_problem(TASK, limits, "mgr-a", None) is None
    problem = allow_problem(TASK, limits, "mgr-b", None)
    assert problem is not None
    assert problem.resource == "manager"
    assert problem.message == "manager mgr-b is not in this volunteer's allow_managers"


def test_a_user_outside_allow_users_is_refused_naming_the_rule() -> None:
    limits = OwnerLimits(allow_users=("alice",))
    assert allow_problem(replace(TASK, user="alice"), limits, "m", None) is None
    problem = allow_problem(replace(TASK, user="bob"), limits, "m", None)
    assert problem is not None
    assert problem.message == "user bob is not in this volunteer's allow_users"
    # A workflow a node submitted names no user: no allow_users list takes it.
    problem = allow_problem(TASK, limits, "m", None)
    assert problem is not None
    assert problem.message == (
        "user (none: a node submitted it) is not in this volunteer's allow_users"
    )


def test_an_image_outside_allow_images_is_refused_naming_the_rule() -> None:
    limits = OwnerLimits(allow_images=("vcnode/other:*",))
    problem = allow_problem(TASK, limits, "mgr-a", None)
    assert problem is not None
    assert problem.message == "image vcnode/worker:1 is not in this volunteer's allow_images"


def test_a_digest_entry_checks_the_pinned_id_before_the_local_one() -> None:
    limits = OwnerLimits(allow_images=(ID_A,))
    # Pinned: the volunteer runs that ID and no other, whatever it holds under the name.
    assert allow_problem(replace(TASK, image_id=ID_A), limits, "m", ID_B) is None
    assert allow_problem(replace(TASK, image_id=ID_B), limits, "m", ID_A) is not None
    # Not pinned: the ID the volunteer holds under that name.
    assert allow_problem(TASK, limits, "m", ID_A) is None
    assert allow_problem(TASK, limits, "m", ID_B) is not None
    # Not pinned and not here: nothing to check the digest against.
    assert allow_problem(TASK, limits, "m", None) is not None


def test_the_coordinator_leaves_an_unpinned_task_to_a_digest_listing_volunteer() -> None:
    digests = OwnerLimits(allow_images=(ID_A,))
    assert coordinator_allow_problem(TASK, digests, "m") is None
    assert coordinator_allow_problem(replace(TASK, image_id=ID_B), digests, "m") is not None
    # Only patterns: the coordinator knows all it needs.
    assert coordinator_allow_problem(TASK, OwnerLimits(allow_images=("x/*",)), "m") is not None


# --- the volunteer's decision -------------------------------------------------------------

HERE = Situation(
    resources=MACHINE,
    limits=OwnerLimits(max_concurrent_tasks=2),
    running=0,
    runtime="docker",
    image_id=ID_A,
)


def test_the_volunteer_declines_an_image_outside_its_list() -> None:
    here = replace(HERE, limits=OwnerLimits(allow_images=("ghcr.io/lab/*",)))
    assert decline_reason(TASK, here) == (
        "image vcnode/worker:1 is not in this volunteer's allow_images"
    )
    assert decline_reason(replace(TASK, image="ghcr.io/lab/tool:1"), here) is None


def test_the_volunteer_checks_a_digest_against_the_image_it_resolved() -> None:
    here = replace(HERE, limits=OwnerLimits(allow_images=(ID_A,)))
    assert decline_reason(TASK, here) is None
    assert decline_reason(TASK, replace(here, image_id=ID_B)) is not None


def test_the_volunteer_declines_a_manager_outside_its_list_by_the_offers_manager() -> None:
    here = replace(HERE, limits=OwnerLimits(allow_managers=("mgr-b",)))
    assert decline_reason(TASK, here) == ("manager mgr-a is not in this volunteer's allow_managers")
    assert decline_reason(replace(TASK, manager_id="mgr-b"), here) is None


# --- settings -----------------------------------------------------------------------------


def test_allow_lists_come_from_toml_lists_flags_and_environment(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text(
        'role = "volunteer"\n[limits]\n'
        f'allow_images = ["vcnode/*", "{ID_A}"]\nallow_managers = ["mgr-a"]\n'
        'allow_users = ["alice", "bob"]\n'
    )
    config, _ = resolve({}, {}, file)
    assert config.limits.allow_images == ("vcnode/*", ID_A)
    assert config.limits.allow_managers == ("mgr-a",)
    assert config.limits.allow_users == ("alice", "bob")
    config, sources = resolve(
        {"limits.allow_managers": "mgr-b, mgr-c"},
        {"VCNODE_ALLOW_IMAGES": "ghcr.io/lab/*,vcnode/worker:1"},
        file,
    )
    assert config.limits.allow_managers == ("mgr-b", "mgr-c")
    assert config.limits.allow_images == ("ghcr.io/lab/*", "vcnode/worker:1")
    assert sources["limits.allow_managers"] == "flag --allow-managers"
    assert sources["limits.allow_images"] == "environment variable VCNODE_ALLOW_IMAGES"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"limits.allow_managers": "Mgr_A"},
            "--allow-managers: 'Mgr_A' is not a manager's node id",
        ),
        ({"limits.allow_images": "sha256:abc"}, "--allow-images: 'sha256:abc' is not an image ID"),
        ({"limits.allow_images": "vcnode/ worker"}, "not an image pattern"),
        ({"limits.allow_users": "alice,Bob"}, "--allow-users: 'Bob' is not a user name"),
        ({"limits.allow_images": ",".join(f"i{n}" for n in range(257))}, "at most 256 entries"),
    ],
)
def test_bad_allow_list_entries_are_refused_clearly(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({"roles": "volunteer", **flags}, {})
    assert message in str(caught.value)


def test_an_allow_list_that_is_not_a_list_of_strings_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('role = "volunteer"\n[limits]\nallow_images = [1, 2]\n')
    with pytest.raises(ConfigError, match=r"limits.allow_images\): expected a list of image"):
        resolve({}, {}, file)


# --- the coordinator's filter -------------------------------------------------------------


def candidate(vid: str, **limits: object) -> Candidate:
    return Candidate(vid, MACHINE, OwnerLimits(**limits))  # type: ignore[arg-type]


def test_the_scheduler_never_offers_a_task_outside_a_volunteers_allow_images() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(candidate("only-x", allow_images=("vcnode/x:*",)), [], 0.0)
    out = scheduler.submit("mgr-a", [replace(TASK, image="vcnode/y:1")], 0.0)
    assert not [i for i in out if isinstance(i, SendOffer)]
    [unschedulable] = [
        i.event.message
        for i in out
        if isinstance(i, Publish) and i.event.kind == EventKind.UNSCHEDULABLE
    ]
    assert "image vcnode/y:1 is not in this volunteer's allow_images" in unschedulable
    out = scheduler.submit("mgr-a", [replace(TASK, task_id="wf.x", image="vcnode/x:1")], 1.0)
    assert [(i.volunteer_id, i.task.task_id) for i in out if isinstance(i, SendOffer)] == [
        ("only-x", "wf.x")
    ]


def test_the_scheduler_goes_by_the_submitting_manager_not_the_specs_word() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(candidate("only-a", allow_managers=("mgr-a",)), [], 0.0)
    # mgr-b writes mgr-a into its spec: the scheduler goes by who submitted it.
    out = scheduler.submit("mgr-b", [replace(TASK, manager_id="mgr-a")], 0.0)
    assert not [i for i in out if isinstance(i, SendOffer)]
    assert scheduler.waiting() == 1
    out = scheduler.submit("mgr-a", [replace(TASK, task_id="wf.a", manager_id="")], 1.0)
    [offer] = [i for i in out if isinstance(i, SendOffer)]
    # The offer names the authenticated manager: what the volunteer checks again.
    assert (offer.volunteer_id, offer.task.manager_id) == ("only-a", "mgr-a")


def test_the_scheduler_offers_a_users_task_only_where_that_user_is_allowed() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(candidate("alices", allow_users=("alice",)), [], 0.0)
    out = scheduler.submit("mgr-a", [replace(TASK, user="bob")], 0.0)
    assert not [i for i in out if isinstance(i, SendOffer)]
    out = scheduler.submit("mgr-a", [replace(TASK, task_id="wf.a", user="alice")], 1.0)
    [offer] = [i for i in out if isinstance(i, SendOffer)]
    assert (offer.volunteer_id, offer.task.user) == ("alices", "alice")


def test_a_task_one_volunteer_does_not_allow_goes_to_another() -> None:
    scheduler = Scheduler()
    scheduler.volunteer_joined(candidate("picky", allow_managers=("mgr-z",)), [], 0.0)
    scheduler.volunteer_joined(candidate("open"), [], 0.0)
    out = scheduler.submit("mgr-a", [TASK], 0.0)
    assert [i.volunteer_id for i in out if isinstance(i, SendOffer)] == ["open"]


# --- status --why -------------------------------------------------------------------------


def volunteer(vid: str, **limits: object) -> Volunteer:
    return Volunteer(
        volunteer_id=vid,
        hostname=vid,
        version="1",
        resources=MACHINE,
        limits=OwnerLimits(**limits),  # type: ignore[arg-type]
        state=VolunteerState.ONLINE,
        first_seen=0,
        last_seen=0,
        connected=True,
    )


def test_status_why_names_the_allow_list_that_stops_a_volunteer() -> None:
    spec = replace(TASK, manager_id="", image_from_manager=True)
    groups = why_waiting(
        spec,
        [volunteer("only-y", allow_images=("vcnode/y:*",)), volunteer("free")],
        {},
    )
    reasons = {group.reason: group.volunteer_ids for group in groups}
    assert reasons["image vcnode/worker:1 is not in this volunteer's allow_images"] == ("only-y",)
    # The manager's own spec names no manager: the list is shown for the reader to check.
    [group] = why_waiting(spec, [volunteer("only-z", allow_managers=tuple("abcde"))], {})
    assert group.reason == "takes tasks only from managers a, b, c and 2 more"
    [group] = why_waiting(
        replace(spec, manager_id="mgr-a"), [volunteer("only-z", allow_managers=("mgr-z",))], {}
    )
    assert group.reason == "manager mgr-a is not in this volunteer's allow_managers"


# --- the wire -----------------------------------------------------------------------------


def test_allow_lists_read_back_from_json_are_tuples_again() -> None:
    limits = OwnerLimits(allow_managers=("mgr-a",), allow_users=("alice",))
    again = OwnerLimits(**json.loads(json.dumps(asdict(limits))))
    assert again == limits
    assert hash(again) == hash(limits)


def test_the_user_travels_in_the_spec() -> None:
    spec = replace(TASK, user="alice")
    assert convert.task_spec_from_proto(convert.task_spec_to_proto(spec)) == spec


def test_allow_lists_travel_in_the_registration_and_are_capped() -> None:
    limits = OwnerLimits(
        allow_managers=("mgr-a",), allow_images=("vcnode/*", ID_A), allow_users=("alice",)
    )
    registration = Registration("v" * 32, "lab-7", "lab", 1, "0.1", MACHINE, limits)
    message = convert.registration_to_proto(registration)
    assert excess(message) is None
    assert convert.registration_from_proto(message).limits == limits
    many = replace(limits, allow_images=tuple(f"i{n}" for n in range(257)))
    message = convert.registration_to_proto(replace(registration, limits=many))
    assert "OwnerLimits.allow_images holds 257 entries; at most 256" in (excess(message) or "")
    long = replace(limits, allow_managers=("m" * 129,))
    message = convert.registration_to_proto(replace(registration, limits=long))
    assert "OwnerLimits.allow_managers holds 129 characters" in (excess(message) or "")
