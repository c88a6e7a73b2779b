"""The manager's SQLite state: workflows, their tasks, and the files they use and produce."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.models import (
    CopyStatus,
    FileRef,
    TaskResult,
    TaskSpec,
    TaskStatusRow,
    WorkflowStatus,
)
from daemon.store import Database, Migration, codecs
from manager_node.validation import (
    COPY_SEPARATOR,
    Copy,
    CopyState,
    Validation,
    copy_id,
    new_validation,
)
from manager_node.validation import Verdict as CopyVerdict
from manager_node.workflow import TaskStatus, WorkflowTask, workflow_counts
from workflows.graph import OnFailure, UpstreamInput
from workflows.validation_policy import NO_VALIDATION, Mode, ValidationPolicy


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


def _meta(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _workflow_error(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE workflows ADD COLUMN error TEXT NOT NULL DEFAULT ''")


def _upstream_inputs(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE tasks ADD COLUMN upstream TEXT NOT NULL DEFAULT '[]'")


def _on_failure(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE workflows ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'skip'")


def _owner(db: sqlite_utils.Database) -> None:
    """Who submitted each workflow: users see and act on their own only."""
    db.execute("ALTER TABLE workflows ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX files_by_sha256 ON files (sha256)")


def _validation(db: sqlite_utils.Database) -> None:
    """Each replicated task's validation: its policy, its copies and their verdicts."""
    db.execute("ALTER TABLE tasks ADD COLUMN validation TEXT")


def _files_by_task(db: sqlite_utils.Database) -> None:
    """A task's files found without a scan (its outputs are recorded once), and what status
    shows of its validation in columns (see _summary)."""
    db.execute("CREATE INDEX files_by_task ON files (task_id)")
    db.execute("ALTER TABLE tasks ADD COLUMN copies INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE tasks ADD COLUMN agreeing INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE tasks ADD COLUMN validation_outcome TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE tasks ADD COLUMN extra_seconds REAL NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE tasks ADD COLUMN copy_seconds REAL NOT NULL DEFAULT 0")


def _attempt_logs(db: sqlite_utils.Database) -> None:
    """Every attempt's logs, kept as its result arrives (`vcnode logs --attempt N`), by the
    id the coordinator ran it under: the task's, or a copy's (`<task>~<n>`)."""
    db.execute(
        """CREATE TABLE attempt_logs (
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            workflow_id TEXT NOT NULL,
            volunteer_id TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            logs TEXT NOT NULL DEFAULT '[]',
            note TEXT NOT NULL DEFAULT '',
            at REAL NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )"""
    )
    db.execute("CREATE INDEX attempt_logs_by_workflow ON attempt_logs (workflow_id)")
    # What was kept before: the last result of each task, and each copy's.
    db.execute(
        """INSERT OR IGNORE INTO attempt_logs
           SELECT id, json_extract(result, '$.attempt'), workflow_id,
                  COALESCE(volunteer_id, ''), COALESCE(json_extract(result, '$.error'), ''),
                  COALESCE(json_extract(result, '$.logs'), '[]'),
                  COALESCE(json_extract(result, '$.log_note'), ''), updated_at
           FROM tasks WHERE result IS NOT NULL AND validation IS NULL"""
    )
    db.execute(
        f"""INSERT OR IGNORE INTO attempt_logs
           SELECT CASE json_extract(copy.value, '$.number') WHEN 1 THEN tasks.id
                  ELSE tasks.id || '{COPY_SEPARATOR}' || json_extract(copy.value, '$.number') END,
                  json_extract(copy.value, '$.result.attempt'), tasks.workflow_id,
                  COALESCE(json_extract(copy.value, '$.volunteer_id'), ''),
                  COALESCE(json_extract(copy.value, '$.result.error'), ''),
                  COALESCE(json_extract(copy.value, '$.result.logs'), '[]'),
                  COALESCE(json_extract(copy.value, '$.result.log_note'), ''), tasks.updated_at
           FROM tasks, json_each(tasks.validation, '$.copies') AS copy
           WHERE tasks.validation IS NOT NULL
             AND json_extract(copy.value, '$.result') IS NOT NULL"""
    )


MIGRATIONS = (
    Migration("manager/0001_initial", _initial_schema),
    Migration("manager/0002_meta", _meta),
    Migration("manager/0003_workflow_error", _workflow_error),
    Migration("manager/0004_upstream_inputs", _upstream_inputs),
    Migration("manager/0005_on_failure", _on_failure),
    Migration("manager/0006_owner", _owner),
    Migration("manager/0007_validation", _validation),
    Migration("manager/0008_files_by_task", _files_by_task),
    Migration("manager/0009_attempt_logs", _attempt_logs),
)
COORDINATOR_SEQUENCE = "coordinator_sequence"


@dataclass(frozen=True)
class NewTask:
    spec: TaskSpec
    name: str
    depends_on: tuple[str, ...]
    upstream: tuple[UpstreamInput, ...] = ()
    validation: ValidationPolicy = NO_VALIDATION


@dataclass(frozen=True)
class TimelineRow:
    task_id: str
    name: str
    state: str
    attempts: int
    volunteer_id: str
    error: str
    # When its last result's run began and ended (0 before it has one).
    started_at: float
    finished_at: float
    # When its state last changed.
    updated_at: float


# Every log blob a task's result or an attempt refers to, of the workflows chosen by
# `{where}` (on column workflow_id): select (sha256, size).
_LOGS = """SELECT json_extract(log.value, '$.sha256') AS sha256,
   json_extract(log.value, '$.size') AS size
   FROM tasks, json_each(tasks.result, '$.logs') AS log
   WHERE tasks.result IS NOT NULL AND {where} UNION ALL
   SELECT json_extract(log.value, '$.sha256'), json_extract(log.value, '$.size')
   FROM attempt_logs, json_each(attempt_logs.logs) AS log WHERE {where}"""


@dataclass(frozen=True)
class AttemptLog:
    """An attempt that ended, and its logs: `task_id` is the task's, or its copy's."""

    task_id: str
    attempt: int
    volunteer_id: str
    error: str
    logs: tuple[FileRef, ...]
    note: str

    @property
    def outcome(self) -> str:
        return f"failed: {self.error}" if self.error else "completed"


@dataclass(frozen=True)
class StoredTask:
    """A task as `vcnode logs` looks for it."""

    task_id: str
    name: str
    state: str
    error: str
    result: TaskResult | None
    # Of a replicated task: the state of each copy it made (copy n at n - 1), and whose
    # result stands (0: none).
    copies: tuple[str, ...] = ()
    accepted: int = 0


def _dump_validation(validation: Validation | None) -> str | None:
    if validation is None:
        return None
    return json.dumps(
        {
            "policy": asdict(validation.policy),
            "copies": [
                {
                    **asdict(replace(copy, result=None)),
                    # The task's own result keeps the tails of what its volunteer wrote.
                    "result": asdict(
                        replace(copy.result, inline_outputs=(), stdout_tail="", stderr_tail="")
                    )
                    if copy.result
                    else None,
                }
                for copy in validation.copies
            ],
            "accepted": validation.accepted,
            "outcome": validation.outcome,
            "failed": validation.failed,
        },
        separators=(",", ":"),
    )


def _load_validation(task_id: str, text: str | None) -> Validation | None:
    if not text:
        return None
    data = json.loads(text)
    policy = data["policy"]
    copies = [
        Copy(
            number=item["number"],
            state=CopyState(item["state"]),
            volunteer_id=item["volunteer_id"],
            attempt=item["attempt"],
            result=codecs.task_result_from_data(item["result"]) if item["result"] else None,
            answer=item["answer"],
            verdict=CopyVerdict(item["verdict"]),
            probation=item.get("probation", False),
        )
        for item in data["copies"]
    ]
    return Validation(
        task_id,
        ValidationPolicy(**{**policy, "mode": Mode(policy["mode"])}),
        copies,
        accepted=data["accepted"],
        outcome=data["outcome"],
        failed=data["failed"],
    )


@dataclass(frozen=True)
class _Cost:
    extra_copies: int = 0
    extra_seconds: float = 0.0
    run_seconds: float = 0.0


def _summary(validation: Validation | None) -> tuple[int, int, str, float, float]:
    """What status shows of a task's validation, kept in columns beside its JSON so that a
    status of 100,000 tasks reads no JSON: copies, agreeing, outcome, extra and all run
    seconds."""
    if validation is None or not validation.copies:
        return 0, 0, "", 0.0, 0.0
    copies = validation.copies
    standing = validation.copy(validation.accepted)
    agreeing = sum(c.verdict is CopyVerdict.AGREED for c in copies) or int(standing is not None)
    first = standing or copies[0]
    return (
        len(copies),
        agreeing,
        validation.outcome,
        sum(c.run_seconds for c in copies if c is not first),
        sum(c.run_seconds for c in copies),
    )


def _status_row(row: dict[str, Any], detailed: bool) -> tuple[TaskStatusRow, _Cost]:
    """A task's status line, and what its validation cost."""
    status = TaskStatusRow(
        task_id=row["id"],
        name=row["name"],
        state=row["state"],
        attempts=row["attempts"],
        error=row["error"] or "",
        volunteer_id=row["volunteer_id"] or "",
        copies=row["copies"],
        agreeing=row["agreeing"],
        validation=row["validation_outcome"],
    )
    if detailed and (validation := _load_validation(row["id"], row["validation"])):
        details = tuple(_copy_status(row["id"], c) for c in validation.copies)
        status = replace(status, copy_details=details)
    cost = _Cost(
        extra_copies=max(0, row["copies"] - 1),
        extra_seconds=row["extra_seconds"],
        run_seconds=row["copy_seconds"],
    )
    return status, cost


def _copy_status(task_id: str, copy: Copy) -> CopyStatus:
    result = copy.result
    return CopyStatus(
        number=copy.number,
        task_id=copy_id(task_id, copy.number),
        state=copy.state.value,
        volunteer_id=copy.volunteer_id,
        attempt=copy.attempt,
        verdict=copy.verdict.value,
        outputs=result.outputs if result else (),
        run_seconds=copy.run_seconds,
        error=result.error if result else "",
    )


def _dump_upstream(upstream: tuple[UpstreamInput, ...]) -> str:
    return json.dumps([[u.name, u.task, u.output] for u in upstream])


def _load_upstream(text: str) -> tuple[UpstreamInput, ...]:
    return tuple(UpstreamInput(name, task, output) for name, task, output in json.loads(text))


@dataclass(frozen=True)
class StoredRun:
    """An unfinished workflow as saved: enough to rebuild its WorkflowRun after a restart."""

    workflow_id: str
    type: str
    state: str
    tasks: tuple[WorkflowTask, ...]
    specs: dict[str, TaskSpec]
    on_failure: OnFailure = OnFailure.SKIP


class ManagerStore:
    FILE_NAME = "manager.db"

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir / self.FILE_NAME, MIGRATIONS)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def workflows(
        self, workflow_id: str | None = None, task: str = ""
    ) -> list[WorkflowStatus]:
        """Workflows with their tasks; with `task` (a name or id), that task's row alone,
        with its copies."""

        def read(db: sqlite_utils.Database) -> list[WorkflowStatus]:
            where, args = ("id = ?", [workflow_id]) if workflow_id else (None, [])
            found = []
            for row in db["workflows"].rows_where(where, args, order_by="created_at"):
                rows = [
                    _status_row(task_row, detailed=task in (task_row["id"], task_row["name"]))
                    for task_row in db["tasks"].rows_where(
                        "workflow_id = ?", [row["id"]], order_by="id"
                    )
                ]
                tasks = tuple(status for status, _ in rows)
                states = Counter(status.state for status in tasks)
                costs = [cost for _, cost in rows]
                found.append(
                    WorkflowStatus(
                        workflow_id=row["id"],
                        name=row["name"],
                        type=row["type"],
                        state=row["state"],
                        created_at=row["created_at"],
                        updated_at=row["updated_at"],
                        counts=workflow_counts({**states, "total": len(tasks)}),
                        tasks=tuple(t for t in tasks if task in ("", t.task_id, t.name)),
                        error=row["error"],
                        owner=row["owner"],
                        extra_copies=sum(cost.extra_copies for cost in costs),
                        extra_run_seconds=sum(cost.extra_seconds for cost in costs),
                        run_seconds=sum(cost.run_seconds for cost in costs),
                    )
                )
            return found

        return await self.database.read(read)

    async def create_workflow(
        self,
        workflow_id: str,
        name: str,
        workflow_type: str,
        parameters: dict[str, Any],
        tasks: list[NewTask],
        inputs: list[FileRef],
        on_failure: OnFailure = OnFailure.SKIP,
        owner: str = "",
    ) -> None:
        now = time.time()

        def write(db: sqlite_utils.Database) -> None:
            db.execute(
                "INSERT INTO workflows "
                "(id, name, type, state, spec, on_failure, created_at, updated_at, owner) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (
                    workflow_id,
                    name,
                    workflow_type,
                    json.dumps(parameters, default=str),
                    on_failure.value,
                    now,
                    now,
                    owner,
                ),
            )
            db.conn.executemany(
                "INSERT INTO tasks (id, workflow_id, name, state, spec, depends_on, upstream, "
                "validation, updated_at) VALUES (?, ?, ?, 'waiting', ?, ?, ?, ?, ?)",
                [
                    (
                        t.spec.task_id,
                        workflow_id,
                        t.name,
                        codecs.dump(t.spec),
                        json.dumps(list(t.depends_on)),
                        _dump_upstream(t.upstream),
                        _dump_validation(new_validation(t.spec.task_id, t.validation)),
                        now,
                    )
                    for t in tasks
                ],
            )
            self._insert_files(db, workflow_id, None, "input", inputs)

        await self.database.run(write)

    @staticmethod
    def _insert_files(
        db: sqlite_utils.Database,
        workflow_id: str,
        task_id: str | None,
        role: str,
        refs: list[FileRef],
    ) -> None:
        db.conn.executemany(
            "INSERT INTO files (workflow_id, task_id, role, name, sha256, size) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(workflow_id, task_id, role, r.name, r.sha256, r.size) for r in refs],
        )

    async def save_tasks(
        self,
        tasks: list[WorkflowTask],
        sequence: int | None = None,
        workflow: tuple[str, str] | None = None,
    ) -> None:
        """The tasks' states and, with `sequence`, the coordinator event that changed them as
        followed, and with `workflow` (id, state) the new state of their workflow: one
        transaction, so a restart resumes after it or replays it whole."""

        def write(db: sqlite_utils.Database) -> None:
            for task in tasks:
                self._write_task(db, task)
            if sequence is not None:
                self._write_meta(db, COORDINATOR_SEQUENCE, str(sequence))
            if workflow is not None:
                self._write_workflow_state(db, *workflow)

        await self.database.run(write)

    def _write_task(self, db: sqlite_utils.Database, task: WorkflowTask) -> None:
        db.execute(
            "UPDATE tasks SET state = ?, attempts = ?, volunteer_id = ?, error = ?, "
            "result = ?, validation = ?, copies = ?, agreeing = ?, validation_outcome = ?, "
            "extra_seconds = ?, copy_seconds = ?, updated_at = ? WHERE id = ?",
            (
                task.status.value,
                task.attempts,
                task.volunteer_id or None,
                task.message or None,
                codecs.dump(task.result) if task.result else None,
                _dump_validation(task.validation),
                *_summary(task.validation),
                time.time(),
                task.task_id,
            ),
        )
        if task.status is TaskStatus.COMPLETED and task.outputs:
            recorded = db.execute(
                "SELECT 1 FROM files WHERE task_id = ? AND role = 'output' LIMIT 1",
                (task.task_id,),
            ).fetchone()
            if recorded is None:  # saved again later (a late copy's event): once is enough
                workflow_id = db.execute(
                    "SELECT workflow_id FROM tasks WHERE id = ?", (task.task_id,)
                ).fetchone()[0]
                self._insert_files(db, workflow_id, task.task_id, "output", list(task.outputs))

    async def save_upstream_inputs(self, spec: TaskSpec, files: tuple[FileRef, ...]) -> None:
        """The task's spec once its upstream inputs are known, and those files as its inputs
        (so volunteers may still fetch them after a restart)."""

        def write(db: sqlite_utils.Database) -> None:
            db.execute("UPDATE tasks SET spec = ? WHERE id = ?", (codecs.dump(spec), spec.task_id))
            db.execute("DELETE FROM files WHERE task_id = ? AND role = 'input'", (spec.task_id,))
            self._insert_files(db, spec.workflow_id, spec.task_id, "input", list(files))

        await self.database.run(write)

    async def set_workflow_state(self, workflow_id: str, state: str, error: str = "") -> None:
        await self.database.run(
            lambda db: self._write_workflow_state(db, workflow_id, state, error)
        )

    @staticmethod
    def _write_workflow_state(
        db: sqlite_utils.Database, workflow_id: str, state: str, error: str = ""
    ) -> None:
        db.execute(
            "UPDATE workflows SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            (state, error, time.time(), workflow_id),
        )

    async def add_results(self, workflow_id: str, refs: list[FileRef]) -> None:
        await self.database.run(
            lambda db: self._insert_files(db, workflow_id, None, "result", refs)
        )

    async def files(self, workflow_id: str, role: str) -> list[FileRef]:
        def read(db: sqlite_utils.Database) -> list[FileRef]:
            rows = db.execute(
                "SELECT name, sha256, size FROM files WHERE workflow_id = ? AND role = ? "
                "ORDER BY rowid",
                (workflow_id, role),
            ).fetchall()
            return [FileRef(name, sha256, size) for name, sha256, size in rows]

        return await self.database.read(read)

    async def blob_owners(self, sha256: str) -> set[str]:
        """The owners of the workflows a blob belongs to (input, output or result)."""

        def read(db: sqlite_utils.Database) -> set[str]:
            rows = db.execute(
                "SELECT DISTINCT workflows.owner FROM files JOIN workflows "
                "ON files.workflow_id = workflows.id WHERE files.sha256 = ?",
                [sha256],
            )
            return {row[0] for row in rows.fetchall()}

        return await self.database.read(read)

    async def workflow_owner(self, workflow_id: str) -> str | None:
        """Who submitted the workflow; None when there is no such workflow."""

        def read(db: sqlite_utils.Database) -> str | None:
            row = db.execute("SELECT owner FROM workflows WHERE id = ?", [workflow_id]).fetchone()
            return None if row is None else str(row[0])

        return await self.database.read(read)

    async def workflow_state(self, workflow_id: str) -> str | None:
        """The workflow's state, or None if there is no such workflow."""

        def read(db: sqlite_utils.Database) -> str | None:
            row = db.execute("SELECT state FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
            return str(row[0]) if row else None

        return await self.database.read(read)

    async def referenced_blobs(self) -> set[str]:
        """Every blob a record here refers to: files of workflows, exported image archives."""

        def read(db: sqlite_utils.Database) -> set[str]:
            # Outputs of copies count too: they are compared until their task is decided;
            # and tasks' logs.
            rows = db.execute(
                f"""SELECT sha256 FROM files UNION
                   SELECT substr(value, 1, instr(value, ':') - 1) FROM meta
                   WHERE key LIKE 'image:%' UNION
                   SELECT json_extract(output.value, '$.sha256')
                   FROM tasks, json_each(tasks.validation, '$.copies') AS copy,
                        json_each(copy.value, '$.result.outputs') AS output
                   WHERE tasks.validation IS NOT NULL UNION
                   SELECT sha256 FROM ({_LOGS.format(where="1")})"""
            ).fetchall()
            return {row[0] for row in rows}

        return await self.database.read(read)

    async def history(self, workflow_id: str) -> list[tuple[str, str, str, float]]:
        """(task id, state, its last word, when) of the workflow's ended tasks, in order."""

        def read(db: sqlite_utils.Database) -> list[tuple[str, str, str, float]]:
            rows = db.execute(
                "SELECT id, state, COALESCE(error, ''), updated_at FROM tasks "
                "WHERE workflow_id = ? AND state IN ('completed', 'failed', 'cancelled', "
                "'skipped') ORDER BY updated_at, id",
                (workflow_id,),
            ).fetchall()
            return [tuple(row) for row in rows]

        return await self.database.read(read)

    async def timeline(self, workflow_id: str, limit: int) -> list[TimelineRow]:
        """Up to `limit` of the workflow's tasks, with their state, volunteer and run times
        (their last result's): those held by a volunteer and those that failed first, then
        the latest to change; in task order. The dashboard's timeline."""

        def read(db: sqlite_utils.Database) -> list[TimelineRow]:
            rows = db.execute(
                "SELECT id, name, state, attempts, COALESCE(volunteer_id, ''), "
                "COALESCE(error, ''), COALESCE(json_extract(result, '$.started_at'), 0), "
                "COALESCE(json_extract(result, '$.finished_at'), 0), updated_at "
                "FROM tasks WHERE workflow_id = ? ORDER BY "
                "CASE state WHEN 'running' THEN 0 WHEN 'fetching' THEN 0 "
                "WHEN 'failed' THEN 1 ELSE 2 END, updated_at DESC LIMIT ?",
                (workflow_id, limit),
            ).fetchall()
            return sorted((TimelineRow(*row) for row in rows), key=lambda row: row.task_id)

        return await self.database.read(read)

    async def summaries(self, workflow_id: str | None = None) -> list[WorkflowStatus]:
        """Workflows with their counts and without their tasks, newest first: what a list
        shows, at the cost of one count per state, however many tasks there are."""

        def read(db: sqlite_utils.Database) -> list[WorkflowStatus]:
            args = [workflow_id] if workflow_id else []
            where, tasks_where = ("WHERE id = ?", "WHERE workflow_id = ?") if args else ("", "")
            counts: dict[str, Counter[str]] = {}
            tally = db.execute(
                f"SELECT workflow_id, state, COUNT(*) FROM tasks {tasks_where} "
                "GROUP BY workflow_id, state",
                args,
            )
            for owner_id, state, count in tally.fetchall():
                counts.setdefault(owner_id, Counter())[state] = count
            rows = db.execute(
                "SELECT id, name, type, state, created_at, updated_at, error, owner "
                f"FROM workflows {where} ORDER BY created_at DESC",
                args,
            ).fetchall()
            found = []
            for wid, name, kind, state, created_at, updated_at, error, owner in rows:
                states = counts.get(wid, Counter())
                found.append(
                    WorkflowStatus(
                        workflow_id=wid,
                        name=name,
                        type=kind,
                        state=state,
                        created_at=created_at,
                        updated_at=updated_at,
                        counts=workflow_counts({**states, "total": states.total()}),
                        error=error,
                        owner=owner,
                    )
                )
            return found

        return await self.database.read(read)

    async def ended_since(self, workflow_id: str, since: float) -> int:
        """How many of the workflow's tasks completed or failed from `since` on."""

        def read(db: sqlite_utils.Database) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM tasks WHERE workflow_id = ? "
                "AND state IN ('completed', 'failed') AND updated_at >= ?",
                (workflow_id, since),
            ).fetchone()
            return int(row[0])

        return await self.database.read(read)

    async def failures(
        self, workflow_id: str, limit: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        """(id, name, reason) of up to `limit` failed tasks, and how many failed in all."""

        def read(db: sqlite_utils.Database) -> tuple[list[tuple[str, str, str]], int]:
            total = db.execute(
                "SELECT COUNT(*) FROM tasks WHERE workflow_id = ? AND state = 'failed'",
                (workflow_id,),
            ).fetchone()[0]
            rows = db.execute(
                "SELECT id, name, COALESCE(error, '') FROM tasks "
                "WHERE workflow_id = ? AND state = 'failed' ORDER BY id LIMIT ?",
                (workflow_id, limit),
            ).fetchall()
            return [tuple(row) for row in rows], int(total)

        return await self.database.read(read)

    async def forget_outputs(self, task_ids: list[str]) -> None:
        """The recorded outputs of tasks whose result is in doubt again."""

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "DELETE FROM files WHERE task_id = ? AND role = 'output'",
                [(task_id,) for task_id in task_ids],
            )

        await self.database.run(write)

    async def find_task(self, workflow_id: str, task: str) -> StoredTask | None:
        """The workflow's task named `task` or with that id."""

        def read(db: sqlite_utils.Database) -> StoredTask | None:
            row = db.execute(
                "SELECT id, name, state, COALESCE(error, ''), result, validation FROM tasks "
                "WHERE workflow_id = ? AND (id = ? OR name = ?) LIMIT 1",
                (workflow_id, task, task),
            ).fetchone()
            if row is None:
                return None
            task_id, name, state, error, result, validation = row
            found = StoredTask(task_id, name, state, error, codecs.task_result_from_json(result))
            if validation:
                data = json.loads(validation)
                copies = tuple(str(copy["state"]) for copy in data["copies"])
                found = replace(found, copies=copies, accepted=data["accepted"])
            return found

        return await self.database.read(read)

    async def task_names(self, workflow_id: str, limit: int) -> list[str]:
        """The names of the workflow's first `limit` tasks."""

        def read(db: sqlite_utils.Database) -> list[str]:
            rows = db.execute(
                "SELECT name FROM tasks WHERE workflow_id = ? ORDER BY rowid LIMIT ?",
                (workflow_id, limit),
            ).fetchall()
            return [row[0] for row in rows]

        return await self.database.read(read)

    async def save_attempt(
        self, workflow_id: str, task_id: str, volunteer_id: str, result: TaskResult
    ) -> None:
        """An attempt's end, with its logs (`task_id` is the task's, or a copy's); the same
        attempt told again (a replayed event) is written again."""

        def write(db: sqlite_utils.Database) -> None:
            db.execute(
                "INSERT OR REPLACE INTO attempt_logs (task_id, attempt, workflow_id, "
                "volunteer_id, error, logs, note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    result.attempt,
                    workflow_id,
                    volunteer_id,
                    result.error,
                    json.dumps([asdict(ref) for ref in result.logs]),
                    result.log_note,
                    time.time(),
                ),
            )

        await self.database.run(write)

    async def attempts(self, task_id: str) -> list[AttemptLog]:
        """The ended attempts of a task (or of a copy, by its id) whose logs are kept, in
        order."""

        def read(db: sqlite_utils.Database) -> list[AttemptLog]:
            rows = db.execute(
                "SELECT attempt, volunteer_id, error, logs, note FROM attempt_logs "
                "WHERE task_id = ? ORDER BY attempt",
                (task_id,),
            ).fetchall()
            return [
                AttemptLog(
                    task_id,
                    attempt,
                    volunteer_id,
                    error,
                    tuple(FileRef(**ref) for ref in json.loads(logs)),
                    note,
                )
                for attempt, volunteer_id, error, logs, note in rows
            ]

        return await self.database.read(read)

    async def blobs_only_of(self, workflow_id: str) -> list[FileRef]:
        """The blobs this workflow's files and logs are and nothing else refers to (no
        other workflow's file or log, no exported image archive): those deleting it frees."""
        mine = _LOGS.format(where="workflow_id = :workflow")
        others = _LOGS.format(where="workflow_id != :workflow")

        def read(db: sqlite_utils.Database) -> list[FileRef]:
            rows = db.execute(
                f"""SELECT sha256, MAX(size) FROM (
                       SELECT sha256, size FROM files WHERE workflow_id = :workflow
                       UNION ALL {mine})
                   WHERE sha256 IS NOT NULL
                     AND sha256 NOT IN (SELECT sha256 FROM files WHERE workflow_id != :workflow)
                     AND sha256 NOT IN (
                       SELECT sha256 FROM ({others}) WHERE sha256 IS NOT NULL)
                     AND sha256 NOT IN (
                       SELECT substr(value, 1, instr(value, ':') - 1) FROM meta
                       WHERE key LIKE 'image:%')
                     AND sha256 NOT IN (
                       SELECT json_extract(output.value, '$.sha256')
                       FROM tasks, json_each(tasks.validation, '$.copies') AS copy,
                            json_each(copy.value, '$.result.outputs') AS output
                       WHERE tasks.validation IS NOT NULL AND tasks.workflow_id != :workflow)
                   GROUP BY sha256""",
                {"workflow": workflow_id},
            ).fetchall()
            return [FileRef(sha256, sha256, size) for sha256, size in rows]

        return await self.database.read(read)

    async def forget_workflow(self, workflow_id: str) -> None:
        """Removes the workflow, its tasks and its file records, in one transaction."""

        def write(db: sqlite_utils.Database) -> None:
            for table in ("files", "tasks", "attempt_logs"):
                db.execute(f"DELETE FROM {table} WHERE workflow_id = ?", (workflow_id,))
            db.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))

        await self.database.run(write)

    async def shareable_blobs(self) -> set[str]:
        """Blobs volunteers and clients may download: task inputs and merged results."""

        def read(db: sqlite_utils.Database) -> set[str]:
            rows = db.execute("SELECT sha256 FROM files WHERE role IN ('input', 'result')")
            return {row[0] for row in rows.fetchall()}

        return await self.database.read(read)

    async def unfinished_runs(self) -> list[StoredRun]:
        def read(db: sqlite_utils.Database) -> list[StoredRun]:
            return [
                _stored_run(db, workflow)
                for workflow in db["workflows"].rows_where(
                    "state IN ('queued', 'running', 'merging')", order_by="created_at"
                )
            ]

        return await self.database.read(read)

    async def run(self, workflow_id: str) -> StoredRun | None:
        def read(db: sqlite_utils.Database) -> StoredRun | None:
            rows = list(db["workflows"].rows_where("id = ?", [workflow_id]))
            return _stored_run(db, rows[0]) if rows else None

        return await self.database.read(read)

    async def rerun_tasks(self, tasks: list[WorkflowTask], specs: list[TaskSpec]) -> None:
        """Tasks put back by `--resume`, with their new run's specs, in one transaction."""

        def write(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "UPDATE tasks SET spec = ? WHERE id = ?",
                [(codecs.dump(spec), spec.task_id) for spec in specs],
            )
            for task in tasks:
                self._write_task(db, task)

        await self.database.run(write)

    async def meta(self, key: str) -> str | None:
        def read(db: sqlite_utils.Database) -> str | None:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        return await self.database.read(read)

    async def set_meta(self, key: str, value: str) -> None:
        await self.database.run(lambda db: self._write_meta(db, key, value))

    @staticmethod
    def _write_meta(db: sqlite_utils.Database, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _stored_run(db: sqlite_utils.Database, workflow: dict[str, Any]) -> StoredRun:
    tasks, specs = [], {}
    for row in db["tasks"].rows_where("workflow_id = ?", [workflow["id"]], order_by="rowid"):
        spec = codecs.task_spec_from_json(row["spec"])
        specs[spec.task_id] = spec
        result = codecs.task_result_from_json(row["result"])
        status = TaskStatus(row["state"])
        tasks.append(
            WorkflowTask(
                task_id=row["id"],
                name=row["name"],
                depends_on=tuple(json.loads(row["depends_on"])),
                upstream=_load_upstream(row["upstream"]),
                status=status,
                attempts=row["attempts"],
                volunteer_id=row["volunteer_id"] or "",
                message=row["error"] or "",
                outputs=result.outputs if result and status is TaskStatus.COMPLETED else (),
                result=result,
                validation=_load_validation(row["id"], row["validation"]),
            )
        )
    return StoredRun(
        workflow["id"],
        workflow["type"],
        workflow["state"],
        tuple(tasks),
        specs,
        OnFailure(workflow["on_failure"]),
    )
