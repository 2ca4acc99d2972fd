"""The embedded store: one SQLite file in WAL mode, queried from a worker thread.

The short write transactions of the transfer path (claim, settle, count a file)
run on the event loop itself when they can start at once: the hop to a thread
costs about 100 us, eight times the transaction, and a close waits for it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sftpd.store import (
    AccessRecord,
    Admission,
    Ban,
    FolderRecord,
    KeyRecord,
    Mount,
    StoreError,
    StoreUnavailable,
    Strike,
    Usage,
    UserRecord,
    access_columns,
    access_record,
    file_refusal,
    folder_account,
    grant_for,
    key_record,
    next_strike,
)
from sftpd.store.migrations import SQLITE_STEPS
from sftpd.store.sqlite_outbox import Riders, SqliteOutbox, insert_events, rows_of, settle
from sftpd.store.sqlite_outbox import transaction as _transaction

T = TypeVar("T")

CHECKPOINT_EVERY = 256  # inline commits between background WAL checkpoints
_SELECT_USERS = (
    "SELECT name, password_hash, quota_bytes, disabled, used_bytes, used_files, max_files,"
    " permissions, allowed_from, expires_at, upload_bps, download_bps, login_policy,"
    " totp_secret, (SELECT count(*) FROM recovery_codes r WHERE r.user = users.name)"
    " FROM users WHERE substr(name, 1, 1) != '@'"
)
_SELECT_FOLDERS = (
    "SELECT f.name, f.path, coalesce(u.quota_bytes, 0), u.max_files, u.used_bytes, u.used_files"
    " FROM folders f JOIN users u ON u.name = '@' || f.name"
)
_SELECT_ACCESS = (
    "SELECT name, permissions, allowed_from, expires_at, upload_bps, download_bps FROM users"
    " WHERE name IN (SELECT value FROM json_each(?))"
)
_USAGE = (
    "SELECT used_bytes, used_files, quota_bytes, max_files, activity, room_wanted,"
    " (SELECT coalesce(sum(bytes), 0) FROM reservations WHERE user = users.name)"
    " FROM users WHERE name=?"
)


class SqliteStore(SqliteOutbox):
    """``Store`` on SQLite. Safe for several processes: WAL, busy timeout, short transactions."""

    def __init__(self, conn: sqlite3.Connection, inline: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._inline = inline  # used on the event loop only; never waits for a lock
        self._inline_commits = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._riders: Riders = []  # events to record with the next usage write (outbox)
        self._rider_flush: asyncio.Handle | None = None
        self._rider_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        def connect(timeout: float) -> sqlite3.Connection:
            try:
                conn = sqlite3.connect(
                    path, timeout=timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open database {path}: {exc}") from None
            return conn

        def both() -> tuple[sqlite3.Connection, sqlite3.Connection]:
            conn = connect(10.0)
            try:
                _migrate(conn)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open database {path}: {exc}") from None
            inline = connect(0.0)
            inline.execute("PRAGMA wal_autocheckpoint=0")  # no checkpoint I/O on the loop
            return conn, inline

        return cls(*await asyncio.to_thread(both))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                try:
                    return fn(self._conn)
                except sqlite3.OperationalError as exc:
                    raise StoreUnavailable(f"database unavailable: {exc}") from None

        return await asyncio.to_thread(call)

    async def _run_short(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short write transaction on the loop if the database lock is free
        this instant (busy timeout 0), else in the thread like any other query."""
        done, result = self._try_now(fn)
        if not done:  # locked by someone else, or worse: let the thread say
            return await self._run(fn)
        return result  # type: ignore[return-value]

    def _try_now(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """Run a short write transaction on the loop now if the database lock is free this
        instant: (True, result), else (False, None) and nothing was written."""
        try:
            result = fn(self._inline)
        except sqlite3.OperationalError:
            if self._inline.in_transaction:
                self._inline.execute("ROLLBACK")
            return False, None
        self._inline_commits += 1
        if self._inline_commits % CHECKPOINT_EVERY == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.get_running_loop().create_task(self._checkpoint_wal())
        return True, result

    async def _checkpoint_wal(self) -> None:
        """Fold the WAL into the database file in the thread, which may fsync."""
        try:
            await self._run(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        except StoreError:
            pass  # the next one, or any other connection's autocheckpoint, catches up
        finally:
            self._checkpoint = None

    async def get_user(self, name: str) -> UserRecord | None:
        def q(c: sqlite3.Connection) -> UserRecord | None:
            row = c.execute(_SELECT_USERS + " AND name=?", (name,)).fetchone()
            if row is None:
                return None
            return _user(row, _keys(c, name), _paths(c, [name]).get(name, ()), _mounts(c, name))

        return await self._run(q)

    async def list_users(self) -> list[UserRecord]:
        def q(c: sqlite3.Connection) -> list[UserRecord]:
            rows = c.execute(_SELECT_USERS + " ORDER BY name").fetchall()
            paths = _paths(c, None)
            return [
                _user(row, _keys(c, row[0]), paths.get(row[0], ()), _mounts(c, row[0]))
                for row in rows
            ]

        return await self._run(q)

    async def count_users(self) -> int:
        return await self._run(
            lambda c: int(
                c.execute("SELECT count(*) FROM users WHERE substr(name, 1, 1) != '@'").fetchone()[
                    0
                ]
            )
        )

    async def add_user(self, user: UserRecord) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                try:
                    c.execute(
                        "INSERT INTO users"
                        " (name, password_hash, quota_bytes, disabled, max_files, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            user.name,
                            user.password_hash,
                            user.quota_bytes,
                            user.disabled,
                            user.max_files,
                            time.time(),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"user {user.name} already exists") from None
                for key in user.keys:
                    _insert_key(c, user.name, key)
                _write_access(c, user.name, user.access)

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

    async def set_max_files(self, name: str, max_files: int | None) -> bool:
        return await self._update("UPDATE users SET max_files=? WHERE name=?", (max_files, name))

    async def set_login_policy(self, name: str, policy: str | None) -> bool:
        return await self._update("UPDATE users SET login_policy=? WHERE name=?", (policy, name))

    async def set_totp(self, name: str, secret: str | None, code_hashes: Sequence[str]) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                found = c.execute(
                    "UPDATE users SET totp_secret=?, totp_step=0 WHERE name=?", (secret, name)
                ).rowcount
                c.execute("DELETE FROM recovery_codes WHERE user=?", (name,))
                c.executemany(
                    "INSERT INTO recovery_codes (user, code_hash) VALUES (?, ?)",
                    [(name, h) for h in code_hashes],
                )
                return found > 0

        return await self._run(q)

    async def use_totp_step(self, name: str, step: int) -> bool:
        return await self._update(
            "UPDATE users SET totp_step=? WHERE name=? AND totp_step < ?", (step, name, step)
        )

    async def use_recovery_code(self, name: str, code_hash: str) -> bool:
        return await self._update(
            "DELETE FROM recovery_codes WHERE user=? AND code_hash=?", (name, code_hash)
        )

    async def add_folder(self, folder: FolderRecord) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                try:
                    c.execute(
                        "INSERT INTO folders (name, path, created_at) VALUES (?, ?, ?)",
                        (folder.name, folder.path, time.time()),
                    )
                    c.execute(
                        "INSERT INTO users (name, quota_bytes, disabled, max_files, created_at)"
                        " VALUES (?, ?, 1, ?, ?)",
                        (folder_account(folder.name), folder.quota_bytes, folder.max_files,
                         time.time()),
                    )  # fmt: skip
                except sqlite3.IntegrityError:
                    raise StoreError(
                        f"folder {folder.name} or a folder at {folder.path} already exists"
                    ) from None

        await self._run(q)

    async def get_folder(self, name: str) -> FolderRecord | None:
        def q(c: sqlite3.Connection) -> FolderRecord | None:
            row = c.execute(_SELECT_FOLDERS + " WHERE f.name=?", (name,)).fetchone()
            return FolderRecord(*row) if row else None

        return await self._run(q)

    async def list_folders(self) -> list[FolderRecord]:
        return await self._run(
            lambda c: [
                FolderRecord(*row) for row in c.execute(_SELECT_FOLDERS + " ORDER BY f.name")
            ]
        )

    async def delete_folder(self, name: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                c.execute("DELETE FROM users WHERE name=?", (folder_account(name),))
                return c.execute("DELETE FROM folders WHERE name=?", (name,)).rowcount > 0

        return await self._run(q)

    async def mount(self, user: str, vpath: str, folder: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                if not c.execute("SELECT 1 FROM users WHERE name=?", (user,)).fetchone():
                    raise StoreError(f"no such user: {user}")
                if not c.execute("SELECT 1 FROM folders WHERE name=?", (folder,)).fetchone():
                    raise StoreError(f"no such folder: {folder}")
                try:
                    c.execute(
                        "INSERT INTO folder_mounts (user, vpath, folder) VALUES (?, ?, ?)",
                        (user, vpath, folder),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"{user} already has a folder at {vpath}") from None

        await self._run(q)

    async def unmount(self, user: str, vpath: str) -> bool:
        return await self._update(
            "DELETE FROM folder_mounts WHERE user=? AND vpath=?", (user, vpath)
        )

    async def set_access(self, name: str, access: AccessRecord) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                return _write_access(c, name, access)

        return await self._run(q)

    async def get_access(self, names: list[str]) -> dict[str, AccessRecord]:
        def q(c: sqlite3.Connection) -> dict[str, AccessRecord]:
            rows = c.execute(_SELECT_ACCESS, (json.dumps(names),)).fetchall()
            paths = _paths(c, names)
            return {row[0]: access_record(row[1:], paths.get(row[0], ())) for row in rows}

        return await self._run(q) if names else {}

    # -- quota ledger ----------------------------------------------------------

    async def usage(self, name: str, default_quota: int) -> Usage | None:
        return await self._run(lambda c: _usage(c, name, default_quota))

    async def reserve(
        self, name: str, holder: str, want: int, need: int, default_quota: int
    ) -> int:
        def q(c: sqlite3.Connection) -> int:
            with _transaction(c):
                u = _usage(c, name, default_quota)
                if u is None:
                    return 0
                grant = grant_for(u, want, need)
                if not grant:
                    return 0
                _add_reservation(c, name, holder, grant)
                return grant

        return await self._run_short(q)

    async def apply(
        self, name: str, holder: str, *, used: int = 0, files: int = 0, reserved: int = 0
    ) -> None:
        riders = self._take_riders()  # a close's event: one commit for both

        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                c.execute(
                    "UPDATE users SET used_bytes=used_bytes+?, used_files=used_files+?,"
                    " activity=activity+1 WHERE name=?",
                    (used, files, name),
                )
                if reserved < 0:  # the settle of every close: two statements, not four
                    _reduce_reservation(c, name, holder, -reserved)
                elif reserved:
                    _add_reservation(c, name, holder, reserved)
                insert_events(c, rows_of(riders))

        try:
            await self._run_short(q)
        except BaseException:
            for events, done in riders:  # they go alone at the end of the turn
                self.record_events_soon(events, done)
            raise
        settle(riders, None)

    async def create_file(self, name: str, default_quota: int) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            with _transaction(c):
                u = _usage(c, name, default_quota)
                if u is None:
                    return "quota"
                refusal = file_refusal(u)
                if refusal:
                    return refusal
                c.execute(
                    "UPDATE users SET used_files=used_files+1, activity=activity+1 WHERE name=?",
                    (name,),
                )
                return None

        return await self._run_short(q)

    async def want_room(self, name: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            with _transaction(c):
                c.execute("UPDATE users SET room_wanted=? WHERE name=?", (time.time(), name))

        await self._run_short(q)

    async def set_usage(self, name: str, used: int, files: int, if_activity: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                cur = c.execute(
                    "UPDATE users SET used_bytes=?, used_files=?, activity=activity+1, dirty=0"
                    " WHERE name=? AND activity=?"
                    " AND NOT EXISTS (SELECT 1 FROM reservations WHERE user=?)",
                    (used, files, name, if_activity, name),
                )
                return cur.rowcount > 0

        return await self._run(q)

    async def holders(self) -> list[str]:
        return await self._run(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT holder FROM reservations UNION SELECT holder FROM connections"
                    " UNION SELECT holder FROM holders"
                )
            ]
        )

    async def heartbeat(self, holder: str, now: float) -> None:
        await self._update(
            "INSERT INTO holders (holder, seen) VALUES (?, ?)"
            " ON CONFLICT (holder) DO UPDATE SET seen=excluded.seen",
            (holder, now),
        )

    async def holders_seen(self) -> dict[str, float]:
        return await self._run(
            lambda c: {h: float(t) for h, t in c.execute("SELECT holder, seen FROM holders")}
        )

    async def dirty_users(self) -> list[str]:
        return await self._run(
            lambda c: [r[0] for r in c.execute("SELECT name FROM users WHERE dirty=1")]
        )

    async def drop_holder(self, holder: str) -> list[str]:
        def q(c: sqlite3.Connection) -> list[str]:
            with _transaction(c):
                users = [
                    r[0]
                    for r in c.execute("SELECT user FROM reservations WHERE holder=?", (holder,))
                ]
                c.execute("DELETE FROM reservations WHERE holder=?", (holder,))
                c.execute("DELETE FROM connections WHERE holder=?", (holder,))
                c.execute("DELETE FROM holders WHERE holder=?", (holder,))
                c.execute(
                    "UPDATE deliveries SET lease_until=0, holder=NULL, attempts=attempts-1"
                    " WHERE holder=? AND state='pending'",
                    (holder,),
                )  # its claims were cut short: attempted by the next one, not counted
                c.executemany("UPDATE users SET dirty=1 WHERE name=?", [(u,) for u in users])
                return users

        return await self._run(q)

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

    # -- shared defences -------------------------------------------------------------

    async def record_failure(
        self, addr: str, now: float, window: float, threshold: int, ban_time: float
    ) -> Strike:
        def q(c: sqlite3.Connection) -> Strike:
            with _transaction(c):
                # Forget addresses that are neither blocked nor inside a window.
                c.execute(
                    "DELETE FROM defender WHERE banned_until < ? AND window_start < ?",
                    (now, now - window),
                )
                row = c.execute(
                    "SELECT failures, window_start, banned_until FROM defender WHERE addr=?",
                    (addr,),
                ).fetchone()
                failures, start, until = row if row else (0, now, 0.0)
                strike, start = next_strike(
                    failures, start, until, now, window, threshold, ban_time
                )
                c.execute(
                    "INSERT INTO defender (addr, failures, window_start, banned_until)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (addr) DO UPDATE SET"
                    " failures=excluded.failures, window_start=excluded.window_start,"
                    " banned_until=excluded.banned_until",
                    (addr, strike.failures, start, strike.banned_until or until),
                )
                return strike

        return await self._run(q)

    async def bans(self, now: float) -> list[Ban]:
        def q(c: sqlite3.Connection) -> list[Ban]:
            rows = c.execute(
                "SELECT addr, failures, banned_until FROM defender ORDER BY addr"
            ).fetchall()
            return [Ban(a, f, u if u > now else 0.0) for a, f, u in rows]

        return await self._run(q)

    async def unban(self, addr: str) -> bool:
        return await self._update("DELETE FROM defender WHERE addr=?", (addr,))

    async def admit(
        self, conn_id: str, holder: str, addr: str, limit: int, now: float
    ) -> Admission:
        def q(c: sqlite3.Connection) -> Admission:
            with _transaction(c):
                banned = c.execute(
                    "SELECT 1 FROM defender WHERE addr=? AND banned_until > ?", (addr, now)
                ).fetchone()
                if banned:
                    return "blocked"
                if limit:
                    (count,) = c.execute(
                        "SELECT count(*) FROM connections WHERE addr=?", (addr,)
                    ).fetchone()
                    if count >= limit:
                        return "full"
                c.execute(
                    "INSERT INTO connections (id, holder, addr, started) VALUES (?, ?, ?, ?)",
                    (conn_id, holder, addr, now),
                )
                return "ok"

        return await self._run(q)

    async def start_session(self, conn_id: str, user: str, limit: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            with _transaction(c):
                if limit:
                    (count,) = c.execute(
                        "SELECT count(*) FROM connections WHERE user=?", (user,)
                    ).fetchone()
                    if count >= limit:
                        return False
                c.execute("UPDATE connections SET user=? WHERE id=?", (user, conn_id))
                return True

        return await self._run(q)

    async def close_connection(self, conn_id: str) -> None:
        await self._update("DELETE FROM connections WHERE id=?", (conn_id,))

    async def _update(self, sql: str, args: tuple[object, ...]) -> bool:
        return await self._run(lambda c: c.execute(sql, args).rowcount > 0)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        self._inline.close()
        await self._run(lambda c: c.close())


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
            "INSERT INTO user_keys (user, fingerprint, algorithm, public_key, comment, added_at,"
            " allowed_from, exempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                key.fingerprint,
                key.algorithm,
                key.public_key,
                key.comment,
                time.time(),
                ",".join(key.allowed_from),
                int(key.exempt),
            ),
        )
    except sqlite3.IntegrityError:
        raise StoreError(f"user {name} already has key {key.fingerprint}") from None


def _usage(c: sqlite3.Connection, name: str, default_quota: int) -> Usage | None:
    row = c.execute(_USAGE, (name,)).fetchone()
    if row is None:
        return None
    used, files, quota, max_files, activity, wanted, reserved = row
    return Usage(
        used=used,
        files=files,
        reserved=reserved,
        quota=default_quota if quota is None else quota,
        max_files=max_files or 0,
        activity=activity,
        wanted=wanted,
    )


def _add_reservation(c: sqlite3.Connection, name: str, holder: str, delta: int) -> None:
    c.execute(
        "INSERT INTO reservations (user, holder, bytes, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (user, holder) DO UPDATE SET bytes=bytes+excluded.bytes,"
        " updated_at=excluded.updated_at",
        (name, holder, delta, time.time()),
    )
    c.execute("DELETE FROM reservations WHERE user=? AND holder=? AND bytes<=0", (name, holder))
    c.execute("UPDATE users SET activity=activity+1 WHERE name=?", (name,))


def _reduce_reservation(c: sqlite3.Connection, name: str, holder: str, n: int) -> None:
    """Take ``n`` back from a holder's claim (the caller bumps ``activity``); drop the
    row once nothing is left."""
    rows = c.execute(
        "UPDATE reservations SET bytes=bytes-?, updated_at=? WHERE user=? AND holder=?"
        " RETURNING bytes",
        (n, time.time(), name, holder),
    ).fetchall()  # to the end: a statement left running would block the COMMIT
    if rows and rows[0][0] <= 0:
        c.execute("DELETE FROM reservations WHERE user=? AND holder=?", (name, holder))


def _keys(c: sqlite3.Connection, name: str) -> tuple[KeyRecord, ...]:
    rows = c.execute(
        "SELECT fingerprint, algorithm, public_key, comment, allowed_from, exempt"
        " FROM user_keys WHERE user=? ORDER BY added_at",
        (name,),
    ).fetchall()
    return tuple(key_record(row) for row in rows)


def _write_access(c: sqlite3.Connection, name: str, access: AccessRecord) -> bool:
    found = c.execute(
        "UPDATE users SET permissions=?, allowed_from=?, expires_at=?, upload_bps=?,"
        " download_bps=? WHERE name=?",
        (*access_columns(access), name),
    ).rowcount
    if not found:
        return False
    c.execute("DELETE FROM path_permissions WHERE user=?", (name,))
    c.executemany(
        "INSERT INTO path_permissions (user, path, permissions) VALUES (?, ?, ?)",
        [(name, path, perms) for path, perms in access.paths],
    )
    return True


def _paths(
    c: sqlite3.Connection, names: list[str] | None
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Path overrides of the named users (None: of everyone), ordered by path."""
    sql = "SELECT user, path, permissions FROM path_permissions"
    args: tuple[str, ...] = ()
    if names is not None:
        sql += " WHERE user IN (SELECT value FROM json_each(?))"
        args = (json.dumps(names),)
    out: dict[str, list[tuple[str, str]]] = {}
    for user, path, perms in c.execute(sql + " ORDER BY user, path", args):
        out.setdefault(user, []).append((path, perms))
    return {user: tuple(rows) for user, rows in out.items()}


def _mounts(c: sqlite3.Connection, name: str) -> tuple[Mount, ...]:
    rows = c.execute(
        "SELECT m.vpath, m.folder, f.path FROM folder_mounts m JOIN folders f"
        " ON f.name = m.folder WHERE m.user=? ORDER BY m.vpath",
        (name,),
    ).fetchall()
    return tuple(Mount(*row) for row in rows)


def _user(
    row: tuple[object, ...],
    keys: tuple[KeyRecord, ...],
    paths: tuple[tuple[str, str], ...],
    mounts: tuple[Mount, ...] = (),
) -> UserRecord:
    name, pw, quota, disabled, used, files, max_files = row[:7]
    return UserRecord(
        name=str(name),
        password_hash=pw if isinstance(pw, str) else None,
        quota_bytes=quota if isinstance(quota, int) else None,
        disabled=bool(disabled),
        keys=keys,
        used_bytes=int(used),  # type: ignore[call-overload]
        used_files=int(files),  # type: ignore[call-overload]
        max_files=max_files if isinstance(max_files, int) else None,
        access=access_record(row[7:12], paths),
        mounts=mounts,
        login_policy=row[12] if isinstance(row[12], str) else None,
        totp_secret=row[13] if isinstance(row[13], str) else None,
        recovery_codes=int(row[14]),  # type: ignore[call-overload]
    )
