"""The volunteer's SQLite state: its tasks, its cache of inputs and images, and an outbox of
results not yet delivered to their manager."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.models import TaskResult, TaskSpec
from daemon.store import PlainDatabase, PlainMigration, codecs
from volunteer_node.history import COLUMNS, Outcome, RanTask, select_since, to_row
from volunteer_node.lifecycle import Hold


def _initial_schema(db: sqlite3.Connection) -> None:
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


def _history_table(db: sqlite3.Connection) -> None:
    """One compact row per attempt that ended here (volunteer_node/history.py: RanTask): it
    outlives the pruning of `tasks` and `outbox` rows, so `vcnode history` reaches further."""
    db.execute(
        """CREATE TABLE history (
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            workflow_id TEXT NOT NULL,
            manager_id TEXT NOT NULL,
            user TEXT NOT NULL,
            image TEXT NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT NOT NULL,
            exit_code INTEGER,
            received_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL NOT NULL,
            cpu_seconds REAL,
            peak_memory_mb REAL,
            bytes_in INTEGER NOT NULL,
            bytes_out INTEGER NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )"""
    )
    db.execute("CREATE INDEX history_finished_at ON history (finished_at)")


# Plain sqlite3: the volunteer's few statements need nothing of sqlite-utils, whose imports
# would cost every volunteer ~4 MiB (daemon/store/database.py).
def _owner_state_table(db: sqlite3.Connection) -> None:
    # One row: the owner's pause (JSON of a lifecycle Hold, NULL when none) and drain.
    db.execute(
        """CREATE TABLE owner_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pause TEXT,
            draining INTEGER NOT NULL
        )"""
    )


MIGRATIONS = (
    PlainMigration("volunteer/0001_initial", _initial_schema),
    PlainMigration("volunteer/0002_history", _history_table),
    PlainMigration("volunteer/0003_owner_state", _owner_state_table),
)


class AttemptState(StrEnum):
    """Where one attempt at a task stands on this volunteer (the `tasks.state` column)."""

    ACCEPTED = "accepted"  # offered and taken: its inputs and image are being fetched
    READY = "ready"  # everything is here: it runs, or waits for a slot to run
    FINISHED = "finished"  # ended with a result (in the outbox until acknowledged)
    CANCELLED = "cancelled"  # by its coordinator, or as the volunteer stopped
    HANDED_BACK = "handed back"  # given back to the pool: drained, or paused too long
    ABANDONED = "abandoned"  # the volunteer's process died while it ran


_ENDED = (
    AttemptState.FINISHED,
    AttemptState.CANCELLED,
    AttemptState.HANDED_BACK,
    AttemptState.ABANDONED,
)


class VolunteerStore:
    FILE_NAME = "volunteer.db"

    def __init__(self, data_dir: Path) -> None:
        self.database = PlainDatabase(data_dir / self.FILE_NAME, MIGRATIONS)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def record_task(self, spec: TaskSpec, state: AttemptState) -> None:
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                """INSERT INTO tasks
                     (id, attempt, workflow_id, spec, state, received_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id, attempt) DO UPDATE SET state=excluded.state,
                     updated_at=excluded.updated_at""",
                (
                    spec.task_id,
                    spec.attempt,
                    spec.workflow_id,
                    codecs.dump(spec),
                    state.value,
                    now,
                    now,
                ),
            )

        await self.database.run(write)

    async def set_state(self, key: tuple[str, int], state: AttemptState) -> None:
        """Where an attempt recorded already stands now."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET state = ?, updated_at = ? WHERE id = ? AND attempt = ?",
                (state.value, time.time(), *key),
            )

        await self.database.run(write)

    async def abandon_unfinished(self) -> int:
        """After a restart: runs that were in progress died with the old process."""

        now = time.time()
        ended = tuple(state.value for state in _ENDED)

        def write(db: sqlite3.Connection) -> int:
            cut_short = db.execute(
                "SELECT spec, received_at FROM tasks WHERE state NOT IN (?, ?, ?, ?)", ended
            ).fetchall()
            # Each is in the owner's history too: it ran here, and ended with the process.
            for spec_json, received_at in cut_short:
                _insert_history(
                    db, _abandoned(codecs.task_spec_from_json(spec_json), received_at, now)
                )
            db.execute(
                "UPDATE tasks SET state = ?, updated_at = ? WHERE state NOT IN (?, ?, ?, ?)",
                (AttemptState.ABANDONED.value, now, *ended),
            )
            return len(cut_short)

        return await self.database.run(write)

    async def save_result(self, result: TaskResult, manager_address: str) -> None:
        """Keeps the result in the outbox until the coordinator acknowledges it."""
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET state = ?, result = ?, updated_at = ? "
                "WHERE id = ? AND attempt = ?",
                (
                    AttemptState.FINISHED.value,
                    codecs.dump(result),
                    now,
                    result.task_id,
                    result.attempt,
                ),
            )
            db.execute(
                """INSERT INTO outbox (task_id, attempt, manager_address, result, created_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (result.task_id, result.attempt, manager_address, codecs.dump(result), now),
            )

        await self.database.run(write)

    async def acknowledge(self, task_id: str, attempt: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE outbox SET delivered_at = ? "
                "WHERE task_id = ? AND attempt = ? AND delivered_at IS NULL",
                (time.time(), task_id, attempt),
            )

        await self.database.run(write)

    async def unacknowledged_results(self) -> list[TaskResult]:
        def read(db: sqlite3.Connection) -> list[TaskResult]:
            rows = db.execute(
                "SELECT result FROM outbox WHERE delivered_at IS NULL ORDER BY id"
            ).fetchall()
            return [r for r in (codecs.task_result_from_json(row[0]) for row in rows) if r]

        return await self.database.read(read)

    async def save_owner_state(self, pause: Hold | None, draining: bool) -> None:
        """The owner's pause and drain, kept across restarts."""
        saved = None if pause is None else json.dumps(_hold_data(pause))

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO owner_state (id, pause, draining) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET pause = excluded.pause, "
                "draining = excluded.draining",
                (saved, int(draining)),
            )

        await self.database.run(write)

    async def owner_state(self) -> tuple[Hold | None, bool]:
        def read(db: sqlite3.Connection) -> tuple[Hold | None, bool]:
            row = db.execute("SELECT pause, draining FROM owner_state WHERE id = 1").fetchone()
            if row is None:
                return None, False
            return (_hold_of(json.loads(row[0])) if row[0] else None), bool(row[1])

        return await self.database.read(read)

    async def record_ran(self, entry: RanTask) -> None:
        """Keeps what an ended attempt was and cost; recording it again replaces it."""

        await self.database.run(lambda db: _insert_history(db, entry))

    async def history(self, since: float) -> list[RanTask]:
        """The attempts that ended at or after `since`, in the order they ended."""
        return await self.database.read(lambda db: select_since(db, since))


def _insert_history(db: sqlite3.Connection, entry: RanTask) -> None:
    db.execute(
        f"INSERT OR REPLACE INTO history ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(COLUMNS))})",
        to_row(entry),
    )


def _abandoned(spec: TaskSpec, received_at: float, now: float) -> RanTask:
    return RanTask(
        task_id=spec.task_id,
        attempt=spec.attempt,
        workflow_id=spec.workflow_id,
        manager_id=spec.manager_id,
        user=spec.user,
        image=spec.image,
        outcome=Outcome.ABANDONED,
        error="the volunteer's process ended while it ran",
        exit_code=None,
        received_at=received_at,
        started_at=None,
        finished_at=now,
        cpu_seconds=None,
        peak_memory_mb=None,
        bytes_in=0,
        bytes_out=0,
    )


def _hold_data(hold: Hold) -> dict[str, object]:
    # JSON has no infinity: a pause until resumed is saved with no end.
    until = hold.until if math.isfinite(hold.until) else None
    return {"name": hold.name, "reason": hold.reason, "until": until, "since": hold.since}


def _hold_of(data: dict[str, Any]) -> Hold:
    until = data.get("until")
    return Hold(
        str(data["name"]),
        str(data["reason"]),
        math.inf if until is None else float(until),
        float(data.get("since", 0.0)),
    )
