"""The coordinator's SQLite state: volunteers, tasks, leases and an event log."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.models import Load, OwnerLimits, Resources, Volunteer, VolunteerState
from daemon.store import Database, Migration


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


MIGRATIONS = (Migration("coordinator/0001_initial", _initial_schema),)


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
