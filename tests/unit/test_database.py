"""The SQLite wrapper on a real file: migrations once, WAL, one transaction per run()."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlite_utils

from daemon.errors import DataDirError
from daemon.store import Database, Migration, PlainDatabase, PlainMigration


def counted_migrations(applied: list[str]) -> list[Migration]:
    """One migration that notes each time it runs in `applied`."""

    def create_items(db: sqlite_utils.Database) -> None:
        applied.append("0001_items")
        db.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")

    return [Migration("test/0001_items", create_items)]


MIGRATIONS = counted_migrations([])


def count_on_disk(path: Path, sql: str) -> int:
    """Counts through a connection of its own, so only committed rows are seen."""
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute(sql).fetchone()[0])
    finally:
        connection.close()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    opened = Database(tmp_path / "state.db", MIGRATIONS)
    await opened.open()
    yield opened
    await opened.close()


async def open_and_close(path: Path, migrations: list[Migration]) -> None:
    database = Database(path, migrations)
    await database.open()
    await database.close()


async def test_migrations_apply_once(tmp_path: Path) -> None:
    applied: list[str] = []
    path = tmp_path / "state.db"
    await open_and_close(path, counted_migrations(applied))
    await open_and_close(path, counted_migrations(applied))
    assert applied == ["0001_items"]
    assert count_on_disk(path, "SELECT COUNT(*) FROM schema_migrations") == 1


async def test_a_new_migration_applies_on_the_next_open(tmp_path: Path) -> None:
    applied: list[str] = []
    path = tmp_path / "state.db"
    await open_and_close(path, counted_migrations(applied))

    def create_more(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE more (x INTEGER)")

    later = Migration("test/0002_more", create_more)
    await open_and_close(path, [*counted_migrations(applied), later])
    assert applied == ["0001_items"]
    assert count_on_disk(path, "SELECT COUNT(*) FROM schema_migrations") == 2
    assert count_on_disk(path, "SELECT COUNT(*) FROM more") == 0


async def test_wal_mode_is_on(database: Database) -> None:
    mode = await database.read(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"


async def test_run_commits(database: Database) -> None:
    def work(db: sqlite_utils.Database) -> int:
        db.execute("INSERT INTO items (name) VALUES ('a')")
        return 7

    assert await database.run(work) == 7
    assert count_on_disk(database.path, "SELECT COUNT(*) FROM items") == 1


async def test_an_exception_inside_run_rolls_back(database: Database) -> None:
    class Boom(Exception):
        pass

    def work(db: sqlite_utils.Database) -> None:
        db.execute("INSERT INTO items (name) VALUES ('a')")
        raise Boom

    with pytest.raises(Boom):
        await database.run(work)
    assert (
        await database.read(lambda db: db.execute("SELECT COUNT(*) FROM items").fetchone()[0]) == 0
    )
    assert count_on_disk(database.path, "SELECT COUNT(*) FROM items") == 0


async def test_a_corrupt_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"\x00garbage, not SQLite\xff" * 512)
    database = Database(path, MIGRATIONS)
    try:
        with pytest.raises(DataDirError, match="move it aside to start afresh") as caught:
            await database.open()
        assert f"state file {path} is unusable" in str(caught.value)
    finally:
        await database.close()


async def test_a_plain_database_hands_work_the_connection_itself_with_the_same_guarantees(
    tmp_path: Path,
) -> None:
    """What a volunteer uses: no sqlite-utils, the same migrations, WAL and transactions."""
    applied: list[str] = []

    def create_items(db: sqlite3.Connection) -> None:
        applied.append("0001_items")
        db.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")

    path = tmp_path / "plain.db"
    migrations = [PlainMigration("test/0001_items", create_items)]
    for _ in range(2):
        database = PlainDatabase(path, migrations)
        await database.open()
        await database.close()
    assert applied == ["0001_items"]

    database = PlainDatabase(path, migrations)
    await database.open()
    try:
        assert await database.read(lambda db: isinstance(db, sqlite3.Connection))
        mode = await database.read(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"

        def insert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO items (name) VALUES ('a')")
            raise KeyError("boom")

        with pytest.raises(KeyError):
            await database.run(insert)
        assert count_on_disk(path, "SELECT COUNT(*) FROM items") == 0
        await database.run(lambda db: db.execute("INSERT INTO items (name) VALUES ('b')"))
        assert count_on_disk(path, "SELECT COUNT(*) FROM items") == 1
    finally:
        await database.close()
