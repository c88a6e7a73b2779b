"""Per-node SQLite state, through sqlite-utils or plain sqlite3; every query runs on the
database's own thread."""

from daemon.store.database import Database, Migration, PlainDatabase, PlainMigration

__all__ = ["Database", "Migration", "PlainDatabase", "PlainMigration"]
