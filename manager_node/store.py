"""The manager's SQLite state: workflows, their tasks, and the files they use and produce."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from daemon.store import Database, Migration


def _initial_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE workflows (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            state TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL REFERENCES workflows(id),
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            spec TEXT NOT NULL,
            depends_on TEXT NOT NULL DEFAULT '[]',
            attempts INTEGER NOT NULL DEFAULT 0,
            volunteer_id TEXT,
            error TEXT,
            result TEXT,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX tasks_by_workflow ON tasks (workflow_id)")
    db.execute(
        """CREATE TABLE files (
            workflow_id TEXT NOT NULL REFERENCES workflows(id),
            task_id TEXT,
            role TEXT NOT NULL CHECK (role IN ('input', 'output', 'result')),
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX files_by_workflow ON files (workflow_id)")


MIGRATIONS = (Migration("manager/0001_initial", _initial_schema),)


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    name: str
    state: str
    attempts: int
    error: str
    volunteer_id: str


@dataclass(frozen=True)
class WorkflowRow:
    workflow_id: str
    name: str
    type: str
    state: str
    created_at: float
    updated_at: float
    tasks: tuple[TaskRow, ...]


class ManagerStore:
    FILE_NAME = "manager.db"

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir / self.FILE_NAME, MIGRATIONS)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def workflows(self, workflow_id: str | None = None) -> list[WorkflowRow]:
        def read(db: sqlite_utils.Database) -> list[WorkflowRow]:
            where, args = ("id = ?", [workflow_id]) if workflow_id else (None, [])
            found = []
            for row in db["workflows"].rows_where(where, args, order_by="created_at"):
                tasks = tuple(
                    TaskRow(
                        task_id=task["id"],
                        name=task["name"],
                        state=task["state"],
                        attempts=task["attempts"],
                        error=task["error"] or "",
                        volunteer_id=task["volunteer_id"] or "",
                    )
                    for task in db["tasks"].rows_where(
                        "workflow_id = ?", [row["id"]], order_by="id"
                    )
                )
                found.append(
                    WorkflowRow(
                        workflow_id=row["id"],
                        name=row["name"],
                        type=row["type"],
                        state=row["state"],
                        created_at=row["created_at"],
                        updated_at=row["updated_at"],
                        tasks=tasks,
                    )
                )
            return found

        return await self.database.read(read)
