"""Join tokens and the members that joined with them, in their own SQLite file.

Kept apart from the pool's state: who may join outlives any task, and its file is the one to
back up with the CA's key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.store import Database, Migration


@dataclass(frozen=True)
class Token:
    token_id: str
    # The digest of the secret (see daemon.trust.tokens.secret_key), never the secret.
    key: bytes
    roles: tuple[str, ...]
    name: str
    created_at: float
    expires_at: float
    uses: int  # 0: no limit
    joined: int = 0
    revoked: bool = False
    # For volunteer tokens: what their certificates say (see daemon.trust.pki.Identity).
    vouched: bool = False
    owner: str = ""  # "": no owner named


@dataclass(frozen=True)
class Member:
    node_id: str
    token_id: str
    roles: tuple[str, ...]
    name: str
    joined_at: float
    expires_at: float
    revoked: bool = False
    # As its token said; a renewal issues the certificate with these again.
    vouched: bool = False
    owner: str = ""


def _initial_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY,
            key BLOB NOT NULL,
            roles TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            uses INTEGER NOT NULL,
            joined INTEGER NOT NULL DEFAULT 0,
            revoked INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """CREATE TABLE members (
            node_id TEXT PRIMARY KEY,
            token_id TEXT NOT NULL,
            roles TEXT NOT NULL,
            name TEXT NOT NULL,
            joined_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX members_by_token ON members (token_id)")


def _vouched_owner(db: sqlite_utils.Database) -> None:
    """Volunteer tokens may vouch for their nodes and name their owner; members keep both."""
    for table in ("tokens", "members"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN vouched INTEGER NOT NULL DEFAULT 0")
        db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT ''")


MIGRATIONS = (
    Migration("membership/0001_initial", _initial_schema),
    Migration("membership/0002_vouched_owner", _vouched_owner),
)


def _row(item: Token | Member) -> dict[str, Any]:
    row = asdict(item)
    row["roles"] = ",".join(item.roles)
    row["revoked"] = int(item.revoked)
    row["vouched"] = int(item.vouched)
    return row


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "roles": tuple(row["roles"].split(",")),
        "revoked": bool(row["revoked"]),
        "vouched": bool(row["vouched"]),
    }


def _token(row: dict[str, Any]) -> Token:
    return Token(**_fields(row))


def _member(row: dict[str, Any]) -> Member:
    return Member(**_fields(row))


class MembershipStore:
    def __init__(self, data_dir: Path) -> None:
        self._db = Database(data_dir / "membership.db", MIGRATIONS)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def add_token(self, token: Token) -> None:
        await self._db.run(lambda db: db.table("tokens").insert(_row(token)))

    async def tokens(self) -> list[Token]:
        return await self._db.read(
            lambda db: [_token(row) for row in db["tokens"].rows_where(order_by="created_at")]
        )

    async def token(self, token_id: str) -> Token | None:
        def find(db: sqlite_utils.Database) -> Token | None:
            rows = list(db["tokens"].rows_where("token_id = ?", [token_id]))
            return _token(rows[0]) if rows else None

        return await self._db.read(find)

    async def member(self, node_id: str) -> Member | None:
        def find(db: sqlite_utils.Database) -> Member | None:
            rows = list(db["members"].rows_where("node_id = ?", [node_id]))
            return _member(rows[0]) if rows else None

        return await self._db.read(find)

    async def record_join(self, member: Member) -> None:
        """Counts the join against its token and records (or renews) the member, at once."""

        def record(db: sqlite_utils.Database) -> None:
            if member.token_id:
                db.execute(
                    "UPDATE tokens SET joined = joined + 1 WHERE token_id = ?", [member.token_id]
                )
            db.table("members").upsert(_row(member), pk="node_id")

        await self._db.run(record)

    async def renew(self, node_id: str, expires_at: float) -> None:
        await self._db.run(
            lambda db: db.execute(
                "UPDATE members SET expires_at = ? WHERE node_id = ?", [expires_at, node_id]
            )
        )

    async def revoke(self, token_id: str) -> list[str]:
        """Revokes the token and its members; returns the node ids of those members."""

        def revoke(db: sqlite_utils.Database) -> list[str]:
            db.execute("UPDATE tokens SET revoked = 1 WHERE token_id = ?", [token_id])
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT node_id FROM members WHERE token_id = ?", [token_id]
                ).fetchall()
            ]
            db.execute("UPDATE members SET revoked = 1 WHERE token_id = ?", [token_id])
            return ids

        return await self._db.run(revoke)

    async def revoked_members(self) -> set[str]:
        return await self._db.read(
            lambda db: {
                row[0] for row in db.execute("SELECT node_id FROM members WHERE revoked = 1")
            }
        )
