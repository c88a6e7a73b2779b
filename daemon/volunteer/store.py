"""The volunteer's SQLite state: its tasks, its cache of inputs and images, and an outbox of
results not yet delivered to their manager."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from daemon.store import Database, Migration


def _initial_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE tasks (
            id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            workflow_id TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            received_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            result TEXT,
            PRIMARY KEY (id, attempt)
        )"""
    )
    db.execute(
        """CREATE TABLE cache (
            sha256 TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            size INTEGER NOT NULL,
            added_at REAL NOT NULL,
            last_used REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            manager_address TEXT NOT NULL,
            result TEXT NOT NULL,
            created_at REAL NOT NULL,
            delivered_at REAL
        )"""
    )


MIGRATIONS = (Migration("volunteer/0001_initial", _initial_schema),)


class VolunteerStore:
    FILE_NAME = "volunteer.db"

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir / self.FILE_NAME, MIGRATIONS)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def running_task_ids(self) -> tuple[str, ...]:
        def read(db: sqlite_utils.Database) -> tuple[str, ...]:
            rows = db.execute("SELECT id FROM tasks WHERE state = 'running' ORDER BY id")
            return tuple(row[0] for row in rows.fetchall())

        return await self.database.read(read)
