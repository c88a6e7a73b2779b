"""Per-node SQLite state through sqlite-utils; every query runs on the database's own thread."""

from daemon.store.database import Database, Migration

__all__ = ["Database", "Migration"]
