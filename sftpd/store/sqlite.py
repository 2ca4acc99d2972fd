"""The embedded store: one SQLite file in WAL mode, queried from a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sftpd.store import KeyRecord, StoreError, UserRecord
from sftpd.store.migrations import SQLITE_STEPS

T = TypeVar("T")
_SELECT_USERS = (
    "SELECT name, password_hash, quota_bytes, disabled, used_bytes, used_files FROM users"
)


class SqliteStore:
    """``Store`` on SQLite. Safe for several processes: WAL, busy timeout, short transactions."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        def connect() -> sqlite3.Connection:
            try:
                conn = sqlite3.connect(
                    path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=NORMAL")
                _migrate(conn)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open database {path}: {exc}") from None
            return conn

        return cls(await asyncio.to_thread(connect))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                return fn(self._conn)

        return await asyncio.to_thread(call)

    async def get_user(self, name: str) -> UserRecord | None:
        def q(c: sqlite3.Connection) -> UserRecord | None:
            row = c.execute(_SELECT_USERS + " WHERE name=?", (name,)).fetchone()
            return _user(row, _keys(c, name)) if row else None

        return await self._run(q)

    async def list_users(self) -> list[UserRecord]:
        def q(c: sqlite3.Connection) -> list[UserRecord]:
            rows = c.execute(_SELECT_USERS + " ORDER BY name").fetchall()
            return [_user(row, _keys(c, row[0])) for row in rows]

        return await self._run(q)

    async def count_users(self) -> int:
        return await self._run(lambda c: int(c.execute("SELECT count(*) FROM users").fetchone()[0]))

    async def add_user(self, user: UserRecord) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                try:
                    c.execute(
                        "INSERT INTO users (name, password_hash, quota_bytes, disabled, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            user.name,
                            user.password_hash,
                            user.quota_bytes,
                            user.disabled,
                            time.time(),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"user {user.name} already exists") from None
                for key in user.keys:
                    _insert_key(c, user.name, key)

        await self._run(q)

    async def delete_user(self, name: str) -> bool:
        return await self._update("DELETE FROM users WHERE name=?", (name,))

    async def set_password(self, name: str, password_hash: str | None) -> bool:
        return await self._update(
            "UPDATE users SET password_hash=? WHERE name=?", (password_hash, name)
        )

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        return await self._update("UPDATE users SET disabled=? WHERE name=?", (disabled, name))

    async def set_quota(self, name: str, quota_bytes: int | None) -> bool:
        return await self._update(
            "UPDATE users SET quota_bytes=? WHERE name=?", (quota_bytes, name)
        )

    async def add_key(self, name: str, key: KeyRecord) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                if not c.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                    raise StoreError(f"no such user: {name}")
                _insert_key(c, name, key)

        await self._run(q)

    async def delete_key(self, name: str, fingerprint: str) -> bool:
        return await self._update(
            "DELETE FROM user_keys WHERE user=? AND fingerprint=?", (name, fingerprint)
        )

    async def _update(self, sql: str, args: tuple[object, ...]) -> bool:
        return await self._run(lambda c: c.execute(sql, args).rowcount > 0)

    async def close(self) -> None:
        await self._run(lambda c: c.close())


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(SQLITE_STEPS):
            raise StoreError(f"database schema {version} is newer than this sftpd knows")
        for number, step in enumerate(SQLITE_STEPS[version:], start=version + 1):
            for statement in step.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")


def _insert_key(c: sqlite3.Connection, name: str, key: KeyRecord) -> None:
    try:
        c.execute(
            "INSERT INTO user_keys (user, fingerprint, algorithm, public_key, comment, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, key.fingerprint, key.algorithm, key.public_key, key.comment, time.time()),
        )
    except sqlite3.IntegrityError:
        raise StoreError(f"user {name} already has key {key.fingerprint}") from None


def _keys(c: sqlite3.Connection, name: str) -> tuple[KeyRecord, ...]:
    rows = c.execute(
        "SELECT fingerprint, algorithm, public_key, comment FROM user_keys"
        " WHERE user=? ORDER BY added_at",
        (name,),
    ).fetchall()
    return tuple(KeyRecord(*row) for row in rows)


def _user(row: tuple[object, ...], keys: tuple[KeyRecord, ...]) -> UserRecord:
    name, pw, quota, disabled, used, files = row
    return UserRecord(
        name=str(name),
        password_hash=pw if isinstance(pw, str) else None,
        quota_bytes=quota if isinstance(quota, int) else None,
        disabled=bool(disabled),
        keys=keys,
        used_bytes=int(used),  # type: ignore[call-overload]
        used_files=int(files),  # type: ignore[call-overload]
    )
