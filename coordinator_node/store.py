"""The coordinator's SQLite state: volunteers, tasks and an event log."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from coordinator_node.scheduler import EndedTask, ScheduledTask
from daemon.models import (
    EventKind,
    Load,
    OwnerLimits,
    Resources,
    TaskEvent,
    TaskState,
    TrustRecord,
    Verdict,
    Volunteer,
    VolunteerState,
)
from daemon.store import Database, Migration, codecs


def _initial_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE volunteers (
            id TEXT PRIMARY KEY,
            hostname TEXT NOT NULL,
            version TEXT NOT NULL,
            resources TEXT NOT NULL,
            limits TEXT NOT NULL,
            load TEXT NOT NULL,
            state TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL,
            manager_id TEXT NOT NULL,
            manager_address TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            volunteer_id TEXT,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX tasks_by_state ON tasks (state)")
    db.execute("CREATE INDEX tasks_by_workflow ON tasks (workflow_id)")
    db.execute(
        """CREATE TABLE leases (
            task_id TEXT PRIMARY KEY REFERENCES tasks(id),
            volunteer_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            granted_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            data TEXT NOT NULL
        )"""
    )


def _task_details(db: sqlite_utils.Database) -> None:
    """What the scheduler needs to resume after a restart, and the events' addressees."""
    db.execute("ALTER TABLE tasks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE tasks ADD COLUMN result TEXT")
    db.execute("ALTER TABLE events ADD COLUMN manager_id TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE events ADD COLUMN workflow_id TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX events_by_manager ON events (manager_id, id)")


def _task_runs(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE tasks ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0")


def _drop_never_written(db: sqlite_utils.Database) -> None:
    """Offers and their timeouts live in the scheduler, and each task's attempt budget is the
    scheduler's: the table and column made for them were never written."""
    db.execute("DROP TABLE leases")
    db.execute("ALTER TABLE tasks DROP COLUMN max_attempts")


def _trust(db: sqlite_utils.Database) -> None:
    """Trust records of volunteers' results, and the verdicts that made them (one per copy
    and attempt: a verdict reported twice counts once)."""
    db.execute("CREATE TABLE trust (volunteer_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE verdicts (
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            volunteer_id TEXT NOT NULL,
            manager_id TEXT NOT NULL,
            agreed INTEGER NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )"""
    )


MIGRATIONS = (
    Migration("coordinator/0001_initial", _initial_schema),
    Migration("coordinator/0002_task_details", _task_details),
    Migration("coordinator/0003_task_runs", _task_runs),
    Migration("coordinator/0004_drop_never_written", _drop_never_written),
    Migration("coordinator/0005_trust", _trust),
)


def _task_row(task: ScheduledTask) -> dict[str, Any]:
    return {
        "id": task.spec.task_id,
        "workflow_id": task.spec.workflow_id,
        "manager_id": task.manager_id,
        "manager_address": task.spec.manager_address,
        "state": task.state.value,
        "attempts": task.attempt,
        "failures": task.failures,
        "attempt_base": task.attempt_base,
        "volunteer_id": task.volunteer_id or None,
        "last_error": task.error or None,
        "result": codecs.dump(task.result) if task.result else None,
        "created_at": time.time(),
        "updated_at": time.time(),
    }


def _task_from_row(row: dict[str, Any]) -> ScheduledTask:
    return ScheduledTask(
        spec=codecs.task_spec_from_json(row["spec"]),
        manager_id=row["manager_id"],
        state=TaskState(row["state"]),
        attempt=row["attempts"],
        failures=row["failures"],
        attempt_base=row["attempt_base"],
        volunteer_id=row["volunteer_id"] or "",
        error=row["last_error"] or "",
        result=codecs.task_result_from_json(row["result"]),
    )


def _event_row(manager_id: str, event: TaskEvent) -> dict[str, Any]:
    payload = {
        "attempt": event.attempt,
        "volunteer_id": event.volunteer_id,
        "message": event.message,
        "percent": event.percent,
        "result": asdict(event.result) if event.result else None,
        "trust": asdict(event.trust) if event.trust else None,
    }
    return {
        "at": event.at,
        "kind": event.kind,
        "subject": event.task_id,
        "data": json.dumps(payload, default=codecs.json_default),
        "manager_id": manager_id,
        "workflow_id": event.workflow_id,
    }


def _event_from_row(row: dict[str, Any]) -> TaskEvent:
    payload = json.loads(row["data"])
    result = payload.get("result")
    trust = payload.get("trust")
    return TaskEvent(
        task_id=row["subject"],
        workflow_id=row["workflow_id"],
        kind=EventKind(row["kind"]),
        at=row["at"],
        attempt=payload.get("attempt", 0),
        volunteer_id=payload.get("volunteer_id", ""),
        message=payload.get("message", ""),
        percent=payload.get("percent", 0.0),
        result=codecs.task_result_from_data(result) if result else None,
        sequence=row["id"],
        trust=TrustRecord(**trust) if trust else None,
    )


def _volunteer_row(volunteer: Volunteer) -> dict[str, Any]:
    return {
        "id": volunteer.volunteer_id,
        "hostname": volunteer.hostname,
        "version": volunteer.version,
        "resources": json.dumps(asdict(volunteer.resources)),
        "limits": json.dumps(asdict(volunteer.limits)),
        "load": json.dumps(asdict(volunteer.load)),
        "state": volunteer.state.value,
        "first_seen": volunteer.first_seen,
        "last_seen": volunteer.last_seen,
    }


def _volunteer_from_row(row: dict[str, Any]) -> Volunteer:
    resources = json.loads(row["resources"])
    resources["images"] = tuple(resources.get("images", ()))
    return Volunteer(
        volunteer_id=row["id"],
        hostname=row["hostname"],
        version=row["version"],
        resources=Resources(**resources),
        limits=OwnerLimits(**json.loads(row["limits"])),
        load=Load(**json.loads(row["load"])),
        state=VolunteerState(row["state"]),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
    )


class CoordinatorStore:
    FILE_NAME = "coordinator.db"

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir / self.FILE_NAME, MIGRATIONS)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def delete_volunteers(self, volunteer_ids: Sequence[str]) -> None:
        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "DELETE FROM volunteers WHERE id = ?", [(v,) for v in volunteer_ids]
            )

        await self.database.run(write)

    async def save_volunteers(
        self, volunteers: Sequence[Volunteer], event: str | None = None
    ) -> None:
        """Upserts the records and, when `event` is given, logs it for each of them."""
        rows = [_volunteer_row(volunteer) for volunteer in volunteers]
        if not rows:
            return
        now = time.time()

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                """INSERT INTO volunteers
                   (id, hostname, version, resources, limits, load, state, first_seen, last_seen)
                   VALUES (:id, :hostname, :version, :resources, :limits, :load, :state,
                           :first_seen, :last_seen)
                   ON CONFLICT(id) DO UPDATE SET hostname=excluded.hostname,
                     version=excluded.version, resources=excluded.resources,
                     limits=excluded.limits, load=excluded.load, state=excluded.state,
                     last_seen=excluded.last_seen""",
                rows,
            )
            if event:
                db.conn.executemany(
                    "INSERT INTO events (at, kind, subject, data) VALUES (?, ?, ?, ?)",
                    [(now, event, row["id"], json.dumps({"state": row["state"]})) for row in rows],
                )

        await self.database.run(write)

    async def load_volunteers(self) -> list[Volunteer]:
        def read(db: sqlite_utils.Database) -> list[Volunteer]:
            return [_volunteer_from_row(row) for row in db["volunteers"].rows]

        return await self.database.read(read)

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        def read(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            where = "kind = ?" if kind else None
            return list(db["events"].rows_where(where, [kind] if kind else [], order_by="id"))

        return await self.database.read(read)

    async def save_tasks(
        self, tasks: Sequence[ScheduledTask], new_specs: Collection[str] = ()
    ) -> None:
        """Each task's state; its spec too (inserting the task if need be) only when its id
        is in `new_specs`: specs change on submission and reruns, states at every step."""
        if not tasks:
            return
        inserted = [
            {**_task_row(task), "spec": codecs.dump(task.spec)}
            for task in tasks
            if task.spec.task_id in new_specs
        ]
        updated = [_task_row(task) for task in tasks if task.spec.task_id not in new_specs]

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                """INSERT INTO tasks (id, workflow_id, manager_id, manager_address, spec, state,
                     attempts, failures, attempt_base, volunteer_id, last_error,
                     result, created_at, updated_at)
                   VALUES (:id, :workflow_id, :manager_id, :manager_address, :spec, :state,
                     :attempts, :failures, :attempt_base, :volunteer_id,
                     :last_error, :result, :created_at, :updated_at)
                   ON CONFLICT(id) DO UPDATE SET spec=excluded.spec, state=excluded.state,
                     attempts=excluded.attempts, failures=excluded.failures,
                     attempt_base=excluded.attempt_base,
                     volunteer_id=excluded.volunteer_id, last_error=excluded.last_error,
                     result=excluded.result, updated_at=excluded.updated_at""",
                inserted,
            )
            db.conn.executemany(
                """UPDATE tasks SET state=:state, attempts=:attempts, failures=:failures,
                     attempt_base=:attempt_base, volunteer_id=:volunteer_id,
                     last_error=:last_error, result=:result, updated_at=:updated_at
                   WHERE id=:id""",
                updated,
            )

        await self.database.run(write)

    async def load_tasks(self) -> tuple[list[ScheduledTask], list[tuple[str, EndedTask]]]:
        """The tasks not ended, whole and in the order they were first saved; of the others
        only what the scheduler keeps (their specs and results stay here)."""
        ended_states = [state.value for state in TaskState if state.finished]
        marks = ", ".join("?" * len(ended_states))

        def read(
            db: sqlite_utils.Database,
        ) -> tuple[list[ScheduledTask], list[tuple[str, EndedTask]]]:
            unfinished = [
                _task_from_row(row)
                for row in db["tasks"].rows_where(
                    f"state NOT IN ({marks})", ended_states, order_by="rowid"
                )
            ]
            ended = [
                (task_id, EndedTask(run or 0, attempts, TaskState(state)))
                for task_id, run, attempts, state in db.execute(
                    "SELECT id, json_extract(spec, '$.run'), attempts, state FROM tasks "
                    f"WHERE state IN ({marks})",
                    ended_states,
                )
            ]
            return unfinished, ended

        return await self.database.read(read)

    async def ended_copies(self, groups: Collection[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(manager, task copied, volunteer) of each ended copy in these groups of copies
        (manager id, task copied) that ran somewhere."""
        if not groups:
            return []
        wanted = set(groups)
        ended_states = [state.value for state in TaskState if state.finished]
        marks = ", ".join("?" * len(ended_states))

        def read(db: sqlite_utils.Database) -> list[tuple[str, str, str]]:
            rows = db.execute(
                "SELECT manager_id, json_extract(spec, '$.replica_of'), volunteer_id FROM tasks "
                f"WHERE state IN ({marks}) AND volunteer_id IS NOT NULL "
                "AND json_extract(spec, '$.replica_of') != ''",
                ended_states,
            ).fetchall()
            return [(m, r, v) for m, r, v in rows if (m, r) in wanted]

        return await self.database.read(read)

    async def append_events(self, events: Sequence[tuple[str, TaskEvent]]) -> list[TaskEvent]:
        """Stores (manager id, event) pairs; returns the events with their sequence numbers."""
        if not events:
            return []

        def write(db: sqlite_utils.Database) -> list[TaskEvent]:
            stored = []
            for manager_id, event in events:
                row = _event_row(manager_id, event)
                cursor = db.conn.execute(
                    """INSERT INTO events (at, kind, subject, data, manager_id, workflow_id)
                       VALUES (:at, :kind, :subject, :data, :manager_id, :workflow_id)""",
                    row,
                )
                stored.append(replace(event, sequence=int(cursor.lastrowid or 0)))
            return stored

        return await self.database.run(write)

    async def task_events(
        self, manager_id: str, workflow_id: str, after_sequence: int
    ) -> list[TaskEvent]:
        def read(db: sqlite_utils.Database) -> list[TaskEvent]:
            where = "manager_id = ? AND id > ?"
            args: list[Any] = [manager_id, after_sequence]
            if workflow_id:
                where += " AND workflow_id = ?"
                args.append(workflow_id)
            return [_event_from_row(r) for r in db["events"].rows_where(where, args, order_by="id")]

        return await self.database.read(read)

    # --- trust ----------------------------------------------------------------------------

    async def load_trust(self) -> list[tuple[str, TrustRecord]]:
        def read(db: sqlite_utils.Database) -> list[tuple[str, TrustRecord]]:
            return [
                (row["volunteer_id"], TrustRecord(**json.loads(row["record"])))
                for row in db["trust"].rows
            ]

        return await self.database.read(read)

    async def save_trust(self, records: Sequence[tuple[str, TrustRecord]]) -> None:
        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "INSERT OR REPLACE INTO trust (volunteer_id, record) VALUES (?, ?)",
                [(vid, json.dumps(asdict(record))) for vid, record in records],
            )

        await self.database.run(write)

    async def matching_verdicts(
        self, manager_id: str, verdicts: Sequence[Verdict]
    ) -> list[Verdict]:
        """The verdicts the coordinator's own records bear out, not known yet: each about a
        completed copy of one of this manager's tasks, run by the volunteer it names, at
        that attempt; "agreed" only where another volunteer's copy has the very same
        outputs, "disagreed" only where two other volunteers' copies agree with each other
        and not with it. A manager cannot vouch for or frame a volunteer on its word alone
        (copies that agree by a splitter's tolerance and not by sha256 earn no verdict
        here)."""

        def read(db: sqlite_utils.Database) -> list[Verdict]:
            borne_out = []
            for verdict in verdicts:
                row = db.execute(
                    "SELECT manager_id, volunteer_id, attempts, state, "
                    "json_extract(spec, '$.replica_of'), result FROM tasks WHERE id = ?",
                    [verdict.task_id],
                ).fetchone()
                if row is None:
                    continue
                owner, volunteer_id, attempts, state, replica_of, result = row
                if (owner, volunteer_id, attempts, state) != (
                    manager_id,
                    verdict.volunteer_id,
                    verdict.attempt,
                    TaskState.COMPLETED.value,
                ) or not replica_of:
                    continue
                if db.execute(
                    "SELECT 1 FROM verdicts WHERE task_id = ? AND attempt = ?",
                    [verdict.task_id, verdict.attempt],
                ).fetchone():
                    continue
                siblings = db.execute(
                    "SELECT volunteer_id, result FROM tasks WHERE manager_id = ? AND state = ? "
                    "AND json_extract(spec, '$.replica_of') = ? AND id != ? "
                    "AND volunteer_id IS NOT NULL AND volunteer_id != ?",
                    [manager_id, TaskState.COMPLETED.value, replica_of, verdict.task_id,
                     verdict.volunteer_id],
                ).fetchall()  # fmt: skip
                if _borne_out(verdict.agreed, _outputs_of(result), siblings):
                    borne_out.append(verdict)
            return borne_out

        return await self.database.read(read)

    async def save_verdicts(
        self,
        manager_id: str,
        verdicts: Sequence[Verdict],
        records: Sequence[tuple[str, TrustRecord]],
    ) -> None:
        """The verdicts counted and the trust records they made, in one transaction: a
        verdict is never marked counted without the record it moved."""

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                """INSERT OR IGNORE INTO verdicts
                   (task_id, attempt, volunteer_id, manager_id, agreed, at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [
                    (v.task_id, v.attempt, v.volunteer_id, manager_id, int(v.agreed), time.time())
                    for v in verdicts
                ],
            )
            db.conn.executemany(
                "INSERT OR REPLACE INTO trust (volunteer_id, record) VALUES (?, ?)",
                [(vid, json.dumps(asdict(record))) for vid, record in records],
            )

        await self.database.run(write)


def _outputs_of(result: str | None) -> dict[str, str] | None:
    """A stored result's outputs, name -> sha256; None without a result."""
    if not result:
        return None
    return {ref["name"]: ref["sha256"] for ref in json.loads(result)["outputs"]}


def _borne_out(agreed: bool, mine: dict[str, str] | None, siblings: list[Any]) -> bool:
    """Whether the completed sibling copies (volunteer, result) bear a verdict out."""
    if mine is None:
        return False
    answers: dict[str, dict[str, str]] = {}  # one answer per volunteer
    for volunteer_id, result in siblings:
        outputs = _outputs_of(result)
        if outputs is not None:
            answers[volunteer_id] = outputs
    if agreed:
        return any(outputs == mine for outputs in answers.values())
    others = [outputs for outputs in answers.values() if outputs != mine]
    return any(others.count(outputs) >= 2 for outputs in others)
