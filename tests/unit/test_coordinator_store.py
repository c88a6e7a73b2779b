"""The coordinator's records in real SQLite: exact round trips of volunteers and tasks, and an
event log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from coordinator_node.scheduler import EndedTask, ScheduledTask
from coordinator_node.store import MIGRATIONS, CoordinatorStore, _task_from_row
from daemon.models import (
    EventKind,
    FileRef,
    Load,
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TaskState,
    TrustRecord,
    Verdict,
    Volunteer,
    VolunteerState,
)
from daemon.store import Database

VOLUNTEER = Volunteer(
    volunteer_id="v1",
    hostname="lab-1",
    version="0.1.0",
    resources=Resources(
        cpu_cores=8,
        memory_mb=16384,
        disk_free_mb=120_000,
        gpus=1,
        docker_available=True,
        images=("vcnode/worker:1", "python:3.12-slim"),
    ),
    limits=OwnerLimits(
        max_cpus=4,
        max_memory_mb=8192,
        max_disk_mb=10_000,
        max_concurrent_tasks=2,
        allow_network=True,
        allow_process_runtime=True,
    ),
    state=VolunteerState.LOST,
    first_seen=1.1,
    last_seen=1_700_000_123.456,
    load=Load(cpu_percent=12.5, memory_percent=33.3, running_tasks=2),
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CoordinatorStore]:
    opened = CoordinatorStore(tmp_path)
    await opened.open()
    yield opened
    await opened.close()


async def test_a_volunteer_round_trips_exactly(store: CoordinatorStore) -> None:
    await store.save_volunteers([VOLUNTEER])
    [loaded] = await store.load_volunteers()
    assert loaded == VOLUNTEER
    assert isinstance(loaded.resources.images, tuple)


async def test_volunteers_survive_a_reopen(tmp_path: Path) -> None:
    other = replace(VOLUNTEER, volunteer_id="v2", resources=Resources(1, 512, 10))
    first = CoordinatorStore(tmp_path)
    await first.open()
    await first.save_volunteers([VOLUNTEER, other])
    await first.close()
    second = CoordinatorStore(tmp_path)
    await second.open()
    try:
        loaded = await second.load_volunteers()
    finally:
        await second.close()
    assert sorted(loaded, key=lambda v: v.volunteer_id) == [VOLUNTEER, other]


async def test_a_forgotten_volunteer_is_gone_from_the_store(store: CoordinatorStore) -> None:
    other = replace(VOLUNTEER, volunteer_id="v2")
    await store.save_volunteers([VOLUNTEER, other])
    await store.delete_volunteers(["v1"])
    assert [v.volunteer_id for v in await store.load_volunteers()] == ["v2"]


async def test_saving_again_updates_the_record(store: CoordinatorStore) -> None:
    await store.save_volunteers([VOLUNTEER])
    back = replace(VOLUNTEER, state=VolunteerState.ONLINE, last_seen=2e9, load=Load())
    await store.save_volunteers([back])
    assert await store.load_volunteers() == [back]


async def test_events_are_written_only_when_asked(store: CoordinatorStore) -> None:
    other = replace(VOLUNTEER, volunteer_id="v2", state=VolunteerState.ONLINE)
    await store.save_volunteers([VOLUNTEER, other])
    assert await store.events() == []
    await store.save_volunteers([VOLUNTEER, other], event="volunteer_seen")
    await store.save_volunteers([VOLUNTEER], event="volunteer_lost")
    seen = await store.events("volunteer_seen")
    assert [(row["subject"], json.loads(row["data"])) for row in seen] == [
        ("v1", {"state": "lost"}),
        ("v2", {"state": "online"}),
    ]
    assert [row["kind"] for row in await store.events()] == [
        "volunteer_seen",
        "volunteer_seen",
        "volunteer_lost",
    ]


async def test_a_task_keeps_its_spec_through_state_saves_until_a_new_spec(
    store: CoordinatorStore,
) -> None:
    spec = TaskSpec(
        task_id="wf.t",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
    )
    task = ScheduledTask(spec=spec, manager_id="m")
    await store.save_tasks([task], new_specs={"wf.t"})
    task.state, task.attempt, task.error = TaskState.FAILED, 2, "exited with code 1"
    await store.save_tasks([task])  # a state change: the spec is not written again
    assert await store.load_tasks() == (
        [],
        [("wf.t", EndedTask(run=0, attempt=2, state=TaskState.FAILED))],
    ), "an ended task loads as what the scheduler keeps of it"
    [full] = await store.database.read(
        lambda db: [_task_from_row(row) for row in db["tasks"].rows_where("id = ?", ["wf.t"])]
    )
    assert (full.spec, full.state, full.attempt, full.error) == (
        spec,
        TaskState.FAILED,
        2,
        "exited with code 1",
    ), "its spec and error stay in the store"

    rerun = replace(spec, run=1)
    task.spec, task.state, task.attempt_base = rerun, TaskState.QUEUED, 2
    await store.save_tasks([task], new_specs={"wf.t"})
    [loaded], ended = await store.load_tasks()
    assert ended == []
    assert (loaded.spec, loaded.state, loaded.attempt_base) == (rerun, TaskState.QUEUED, 2)


async def test_a_store_from_before_the_cleanup_keeps_its_tasks_and_loses_what_was_never_written(
    tmp_path: Path,
) -> None:
    old = Database(tmp_path / CoordinatorStore.FILE_NAME, MIGRATIONS[:3])
    await old.open()
    row = {
        "id": "wf.t", "workflow_id": "wf", "manager_id": "m", "manager_address": "h:1",
        "spec": json.dumps({"task_id": "wf.t"}), "state": "queued", "max_attempts": 0,
        "created_at": 1.0, "updated_at": 1.0,
    }  # fmt: skip
    await old.run(lambda db: db.table("tasks").insert(row))
    await old.close()

    store = CoordinatorStore(tmp_path)
    await store.open()
    tables, columns, ids = await store.database.read(
        lambda db: (
            db.table_names(),
            db.table("tasks").columns_dict,
            [r["id"] for r in db["tasks"].rows],
        )
    )
    await store.close()
    assert "leases" not in tables
    assert "max_attempts" not in columns
    assert ids == ["wf.t"]


def copy_of(
    task_id: str, volunteer_id: str, sha256: str, replica_of: str = "wf.t"
) -> ScheduledTask:
    spec = TaskSpec(
        task_id=task_id,
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
        replica_of=replica_of,
    )
    result = TaskResult(task_id, 1, 0, "", (FileRef("out.txt", sha256, 3),))
    return ScheduledTask(
        spec=spec,
        manager_id="m",
        state=TaskState.COMPLETED,
        attempt=1,
        volunteer_id=volunteer_id,
        result=result,
    )


async def test_verdicts_count_only_where_the_copies_bear_them_out_and_once(
    store: CoordinatorStore,
) -> None:
    honest, forged = "a" * 64, "f" * 64
    tasks = [
        copy_of("wf.t", "v1", honest),
        copy_of("wf.t~2", "cheat", forged),
        copy_of("wf.t~3", "v3", honest),
        copy_of("wf.solo", "v1", honest, replica_of=""),  # no copies: no verdict
    ]
    await store.save_tasks(tasks, new_specs={t.task_id for t in tasks})
    borne_out = [
        Verdict("wf.t", 1, "v1", agreed=True),  # v3's copy is the same
        Verdict("wf.t~2", 1, "cheat", agreed=False),  # v1 and v3 agree without it
    ]
    assert await store.matching_verdicts("m", borne_out) == borne_out
    not_borne_out = [
        Verdict("wf.t~2", 1, "cheat", agreed=True),  # nobody has its answer
        Verdict("wf.t", 1, "v1", agreed=False),  # only the cheat differs from it
        Verdict("wf.t", 2, "v1", agreed=True),  # another attempt
        Verdict("wf.t", 1, "v3", agreed=True),  # not who ran it
        Verdict("wf.solo", 1, "v1", agreed=False),  # not a copy of anything
        Verdict("nope", 1, "v1", agreed=False),  # no such task
    ]
    assert await store.matching_verdicts("m", not_borne_out) == []
    assert await store.matching_verdicts("another-manager", borne_out) == []
    await store.save_verdicts("m", borne_out, [("cheat", TrustRecord(disagreed=1))])
    assert await store.matching_verdicts("m", borne_out) == [], "a verdict counts once"
    assert dict(await store.load_trust()) == {"cheat": TrustRecord(disagreed=1)}


async def test_trust_records_and_completed_events_round_trip(tmp_path: Path) -> None:
    record = TrustRecord(
        agreed=3, disagreed=2, streak=0, vouched=False, last_disagreement_at=12.5,
        last_disagreement_task="wf.t~2", recent="aadd", blocklisted=True,
        blocklist_reason="2 of its last 4 results disagreed",
    )  # fmt: skip
    store = CoordinatorStore(tmp_path)
    await store.open()
    await store.save_trust([("v", record), ("w", TrustRecord(vouched=True))])
    event = TaskEvent("wf.t", "wf", EventKind.COMPLETED, at=1.0, volunteer_id="v", trust=record)
    await store.append_events([("m", event)])
    await store.close()
    store = CoordinatorStore(tmp_path)
    await store.open()
    assert dict(await store.load_trust()) == {"v": record, "w": TrustRecord(vouched=True)}
    [stored] = await store.task_events("m", "", 0)
    assert stored.trust == record
    await store.close()


async def test_the_volunteers_that_ran_ended_copies_are_found_for_groups_still_going(
    store: CoordinatorStore,
) -> None:
    ended = copy_of("wf.t", "v1", "a" * 64)
    other_group = copy_of("wf.u", "v2", "b" * 64, replica_of="wf.u")
    going = replace(copy_of("wf.t~2", "", "a" * 64), state=TaskState.QUEUED, result=None)
    await store.save_tasks([ended, other_group, going], new_specs={"wf.t", "wf.u", "wf.t~2"})
    assert await store.ended_copies({("m", "wf.t")}) == [("m", "wf.t", "v1")]
    assert await store.ended_copies({("another", "wf.t")}) == []
    assert await store.ended_copies(set()) == []
