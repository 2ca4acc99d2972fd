"""The shared store for several nodes: PostgreSQL through asyncpg.

Same semantics as the SQLite store. Every check-then-change is one transaction that
first locks what it depends on: the user's row (``SELECT ... FOR UPDATE``) for quota
reservations and file counts, the defender row for failures, and a transaction-scoped
advisory lock per address or user for the connection limits, so nodes can never
overshoot together. Migrations run under a session advisory lock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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
from sftpd.store.migrations import POSTGRES_STEPS
from sftpd.store.postgres_outbox import PostgresOutbox

T = TypeVar("T")
MIGRATION_LOCK = 0x5F7D0001  # advisory lock id held while migrating
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
_SELECT_USERS = (
    "SELECT name, password_hash, quota_bytes, disabled, used_bytes, used_files, max_files,"
    " permissions, allowed_from, expires_at, upload_bps, download_bps, login_policy,"
    ' totp_secret, (SELECT count(*) FROM recovery_codes r WHERE r."user" = users.name)'
    " AS recovery_codes FROM users WHERE left(name, 1) <> '@'"
)
_SELECT_FOLDERS = (
    "SELECT f.name, f.path, coalesce(u.quota_bytes, 0), u.max_files, u.used_bytes, u.used_files"
    " FROM folders f JOIN users u ON u.name = '@' || f.name"
)
_SELECT_ACCESS = (
    "SELECT name, permissions, allowed_from, expires_at, upload_bps, download_bps FROM users"
)
_USAGE = (
    "SELECT used_bytes, used_files, quota_bytes, max_files, activity, room_wanted,"
    ' (SELECT coalesce(sum(bytes), 0) FROM reservations WHERE "user" = users.name)'
    " FROM users WHERE name=$1"
)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(PostgresOutbox):
    """``Store`` on PostgreSQL; safe for any number of processes and nodes."""

    def __init__(self, pool: Any, url: str) -> None:
        self._pool = pool
        self._url = redact(url)

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=8, command_timeout=30)
        except (*_UNAVAILABLE, asyncpg.PostgresError, ValueError) as exc:
            raise StoreError(f"cannot open database {redact(url)}: {exc}") from None
        store = cls(pool, url)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async def q(c: Any) -> None:
            await c.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                version = await c.fetchval("SELECT max(version) FROM schema_version") or 0
                if version > len(POSTGRES_STEPS):
                    raise StoreError(f"database schema {version} is newer than this sftpd knows")
                for number, step in enumerate(POSTGRES_STEPS[version:], start=version + 1):
                    async with c.transaction():
                        await c.execute(step)
                        await c.execute("INSERT INTO schema_version VALUES ($1)", number)
            finally:
                await c.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

        await self._run(q)

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        try:
            async with self._pool.acquire() as c:
                return await fn(c)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"database {self._url} unavailable: {exc}") from None
        except (asyncpg.exceptions.LockNotAvailableError, asyncpg.exceptions.DiskFullError) as exc:
            raise StoreUnavailable(f"database {self._url} unavailable: {exc}") from None

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        async def q(c: Any) -> T:
            async with c.transaction():
                return await fn(c)

        return await self._run(q)

    async def _update(self, sql: str, *args: object) -> bool:
        async def q(c: Any) -> bool:
            status = await c.execute(sql, *args)
            return not status.endswith(" 0")

        return await self._run(q)

    # -- users -------------------------------------------------------------------

    async def get_user(self, name: str) -> UserRecord | None:
        async def q(c: Any) -> UserRecord | None:
            row = await c.fetchrow(_SELECT_USERS + " AND name=$1", name)
            if row is None:
                return None
            paths = (await _paths(c, [name])).get(name, ())
            return _user(row, await _keys(c, name), paths, await _mounts(c, name))

        return await self._run(q)

    async def list_users(self) -> list[UserRecord]:
        async def q(c: Any) -> list[UserRecord]:
            rows = await c.fetch(_SELECT_USERS + " ORDER BY name")
            paths = await _paths(c, None)
            return [
                _user(
                    row,
                    await _keys(c, row["name"]),
                    paths.get(row["name"], ()),
                    await _mounts(c, row["name"]),
                )
                for row in rows
            ]

        return await self._run(q)

    async def count_users(self) -> int:
        return await self._run(
            lambda c: c.fetchval("SELECT count(*) FROM users WHERE left(name, 1) <> '@'")
        )

    async def add_user(self, user: UserRecord) -> None:
        async def q(c: Any) -> None:
            try:
                await c.execute(
                    "INSERT INTO users"
                    " (name, password_hash, quota_bytes, disabled, max_files, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    user.name,
                    user.password_hash,
                    user.quota_bytes,
                    user.disabled,
                    user.max_files,
                    time.time(),
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"user {user.name} already exists") from None
            for key in user.keys:
                await _insert_key(c, user.name, key)
            await _write_access(c, user.name, user.access)

        await self._tx(q)

    async def delete_user(self, name: str) -> bool:
        return await self._update("DELETE FROM users WHERE name=$1", name)

    async def set_password(self, name: str, password_hash: str | None) -> bool:
        return await self._update(
            "UPDATE users SET password_hash=$1 WHERE name=$2", password_hash, name
        )

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        return await self._update("UPDATE users SET disabled=$1 WHERE name=$2", disabled, name)

    async def set_quota(self, name: str, quota_bytes: int | None) -> bool:
        return await self._update(
            "UPDATE users SET quota_bytes=$1 WHERE name=$2", quota_bytes, name
        )

    async def set_max_files(self, name: str, max_files: int | None) -> bool:
        return await self._update("UPDATE users SET max_files=$1 WHERE name=$2", max_files, name)

    async def set_login_policy(self, name: str, policy: str | None) -> bool:
        return await self._update("UPDATE users SET login_policy=$1 WHERE name=$2", policy, name)

    async def set_totp(self, name: str, secret: str | None, code_hashes: Sequence[str]) -> bool:
        async def q(c: Any) -> bool:
            async with c.transaction():
                status = await c.execute(
                    "UPDATE users SET totp_secret=$1, totp_step=0 WHERE name=$2", secret, name
                )
                await c.execute('DELETE FROM recovery_codes WHERE "user"=$1', name)
                await c.executemany(
                    'INSERT INTO recovery_codes ("user", code_hash) VALUES ($1, $2)',
                    [(name, h) for h in code_hashes],
                )
                return not str(status).endswith(" 0")

        return await self._run(q)

    async def use_totp_step(self, name: str, step: int) -> bool:
        return await self._update(
            "UPDATE users SET totp_step=$1 WHERE name=$2 AND totp_step < $1", step, name
        )

    async def use_recovery_code(self, name: str, code_hash: str) -> bool:
        return await self._update(
            'DELETE FROM recovery_codes WHERE "user"=$1 AND code_hash=$2', name, code_hash
        )

    async def add_folder(self, folder: FolderRecord) -> None:
        async def q(c: Any) -> None:
            try:
                await c.execute(
                    "INSERT INTO folders (name, path, created_at) VALUES ($1, $2, $3)",
                    folder.name,
                    folder.path,
                    time.time(),
                )
                await c.execute(
                    "INSERT INTO users (name, quota_bytes, disabled, max_files, created_at)"
                    " VALUES ($1, $2, TRUE, $3, $4)",
                    folder_account(folder.name),
                    folder.quota_bytes,
                    folder.max_files,
                    time.time(),
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(
                    f"folder {folder.name} or a folder at {folder.path} already exists"
                ) from None

        await self._tx(q)

    async def get_folder(self, name: str) -> FolderRecord | None:
        async def q(c: Any) -> FolderRecord | None:
            row = await c.fetchrow(_SELECT_FOLDERS + " WHERE f.name=$1", name)
            return FolderRecord(*row) if row else None

        return await self._run(q)

    async def list_folders(self) -> list[FolderRecord]:
        async def q(c: Any) -> list[FolderRecord]:
            return [FolderRecord(*r) for r in await c.fetch(_SELECT_FOLDERS + " ORDER BY f.name")]

        return await self._run(q)

    async def delete_folder(self, name: str) -> bool:
        async def q(c: Any) -> bool:
            await c.execute("DELETE FROM users WHERE name=$1", folder_account(name))
            return not (await c.execute("DELETE FROM folders WHERE name=$1", name)).endswith(" 0")

        return await self._tx(q)

    async def mount(self, user: str, vpath: str, folder: str) -> None:
        async def q(c: Any) -> None:
            if not await c.fetchval("SELECT 1 FROM users WHERE name=$1", user):
                raise StoreError(f"no such user: {user}")
            if not await c.fetchval("SELECT 1 FROM folders WHERE name=$1", folder):
                raise StoreError(f"no such folder: {folder}")
            try:
                await c.execute(
                    'INSERT INTO folder_mounts ("user", vpath, folder) VALUES ($1, $2, $3)',
                    user,
                    vpath,
                    folder,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"{user} already has a folder at {vpath}") from None

        await self._tx(q)

    async def unmount(self, user: str, vpath: str) -> bool:
        return await self._update(
            'DELETE FROM folder_mounts WHERE "user"=$1 AND vpath=$2', user, vpath
        )

    async def set_access(self, name: str, access: AccessRecord) -> bool:
        return await self._tx(lambda c: _write_access(c, name, access))

    async def get_access(self, names: list[str]) -> dict[str, AccessRecord]:
        async def q(c: Any) -> dict[str, AccessRecord]:
            rows = await c.fetch(_SELECT_ACCESS + " WHERE name = any($1::text[])", names)
            paths = await _paths(c, names)
            return {r["name"]: access_record(tuple(r)[1:], paths.get(r["name"], ())) for r in rows}

        return await self._run(q) if names else {}

    async def add_key(self, name: str, key: KeyRecord) -> None:
        async def q(c: Any) -> None:
            if not await c.fetchval("SELECT 1 FROM users WHERE name=$1", name):
                raise StoreError(f"no such user: {name}")
            await _insert_key(c, name, key)

        await self._tx(q)

    async def delete_key(self, name: str, fingerprint: str) -> bool:
        return await self._update(
            'DELETE FROM user_keys WHERE "user"=$1 AND fingerprint=$2', name, fingerprint
        )

    # -- quota ledger --------------------------------------------------------------

    async def usage(self, name: str, default_quota: int) -> Usage | None:
        return await self._run(lambda c: _usage(c, name, default_quota))

    async def reserve(
        self, name: str, holder: str, want: int, need: int, default_quota: int
    ) -> int:
        async def q(c: Any) -> int:
            u = await _usage(c, name, default_quota, lock=True)
            if u is None:
                return 0
            grant = grant_for(u, want, need)
            if not grant:
                return 0
            await _add_reservation(c, name, holder, grant)
            return grant

        return await self._tx(q)

    async def apply(
        self, name: str, holder: str, *, used: int = 0, files: int = 0, reserved: int = 0
    ) -> None:
        async def q(c: Any) -> None:
            await c.execute(
                "UPDATE users SET used_bytes=used_bytes+$1, used_files=used_files+$2,"
                " activity=activity+1 WHERE name=$3",
                used,
                files,
                name,
            )
            if reserved:
                await _add_reservation(c, name, holder, reserved)

        await self._tx(q)

    async def create_file(self, name: str, default_quota: int) -> str | None:
        async def q(c: Any) -> str | None:
            u = await _usage(c, name, default_quota, lock=True)
            if u is None:
                return "quota"
            refusal = file_refusal(u)
            if refusal:
                return refusal
            await c.execute(
                "UPDATE users SET used_files=used_files+1, activity=activity+1 WHERE name=$1",
                name,
            )
            return None

        return await self._tx(q)

    async def want_room(self, name: str) -> None:
        await self._run(
            lambda c: c.execute("UPDATE users SET room_wanted=$1 WHERE name=$2", time.time(), name)
        )

    async def set_usage(self, name: str, used: int, files: int, if_activity: int) -> bool:
        async def q(c: Any) -> bool:
            status = await c.execute(
                "UPDATE users SET used_bytes=$1, used_files=$2, activity=activity+1, dirty=FALSE"
                " WHERE name=$3 AND activity=$4"
                ' AND NOT EXISTS (SELECT 1 FROM reservations WHERE "user"=$3)',
                used,
                files,
                name,
                if_activity,
            )
            return not str(status).endswith(" 0")

        return await self._tx(q)

    async def holders(self) -> list[str]:
        rows = await self._run(
            lambda c: c.fetch(
                "SELECT holder FROM reservations UNION SELECT holder FROM connections"
                " UNION SELECT holder FROM holders"
            )
        )
        return [r["holder"] for r in rows]

    async def drop_holder(self, holder: str) -> list[str]:
        async def q(c: Any) -> list[str]:
            rows = await c.fetch('SELECT "user" FROM reservations WHERE holder=$1', holder)
            users = [r["user"] for r in rows]
            await c.execute("DELETE FROM reservations WHERE holder=$1", holder)
            await c.execute("DELETE FROM connections WHERE holder=$1", holder)
            await c.execute("DELETE FROM holders WHERE holder=$1", holder)
            await c.execute(
                "UPDATE deliveries SET lease_until=0, holder=NULL, attempts=attempts-1"
                " WHERE holder=$1 AND state='pending'",
                holder,
            )  # its claims were cut short: attempted by the next one, not counted
            await c.execute("UPDATE users SET dirty=TRUE WHERE name = ANY($1::text[])", users)
            return users

        return await self._tx(q)

    async def heartbeat(self, holder: str, now: float) -> None:
        await self._update(
            "INSERT INTO holders (holder, seen) VALUES ($1, $2)"
            " ON CONFLICT (holder) DO UPDATE SET seen=excluded.seen",
            holder,
            now,
        )

    async def holders_seen(self) -> dict[str, float]:
        rows = await self._run(lambda c: c.fetch("SELECT holder, seen FROM holders"))
        return {r["holder"]: float(r["seen"]) for r in rows}

    async def dirty_users(self) -> list[str]:
        rows = await self._run(lambda c: c.fetch("SELECT name FROM users WHERE dirty"))
        return [r["name"] for r in rows]

    # -- shared defences -----------------------------------------------------------------

    async def record_failure(
        self, addr: str, now: float, window: float, threshold: int, ban_time: float
    ) -> Strike:
        async def q(c: Any) -> Strike:
            await c.execute(
                "DELETE FROM defender WHERE banned_until < $1 AND window_start < $2",
                now,
                now - window,
            )
            await c.execute(
                "INSERT INTO defender (addr, failures, window_start) VALUES ($1, 0, $2)"
                " ON CONFLICT (addr) DO NOTHING",
                addr,
                now,
            )
            row = await c.fetchrow(
                "SELECT failures, window_start, banned_until FROM defender WHERE addr=$1"
                " FOR UPDATE",
                addr,
            )
            until = row["banned_until"]
            strike, start = next_strike(
                row["failures"], row["window_start"], until, now, window, threshold, ban_time
            )
            await c.execute(
                "UPDATE defender SET failures=$2, window_start=$3, banned_until=$4 WHERE addr=$1",
                addr,
                strike.failures,
                start,
                strike.banned_until or until,
            )
            return strike

        return await self._tx(q)

    async def bans(self, now: float) -> list[Ban]:
        rows = await self._run(
            lambda c: c.fetch("SELECT addr, failures, banned_until FROM defender ORDER BY addr")
        )
        return [
            Ban(r["addr"], r["failures"], r["banned_until"] if r["banned_until"] > now else 0.0)
            for r in rows
        ]

    async def unban(self, addr: str) -> bool:
        return await self._update("DELETE FROM defender WHERE addr=$1", addr)

    async def admit(
        self, conn_id: str, holder: str, addr: str, limit: int, now: float
    ) -> Admission:
        async def q(c: Any) -> Admission:
            if await c.fetchval(
                "SELECT 1 FROM defender WHERE addr=$1 AND banned_until > $2", addr, now
            ):
                return "blocked"
            if limit:
                await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "addr:" + addr)
                count = await c.fetchval("SELECT count(*) FROM connections WHERE addr=$1", addr)
                if count >= limit:
                    return "full"
            await c.execute(
                "INSERT INTO connections (id, holder, addr, started) VALUES ($1, $2, $3, $4)",
                conn_id,
                holder,
                addr,
                now,
            )
            return "ok"

        return await self._tx(q)

    async def start_session(self, conn_id: str, user: str, limit: int) -> bool:
        async def q(c: Any) -> bool:
            if limit:
                await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "user:" + user)
                count = await c.fetchval('SELECT count(*) FROM connections WHERE "user"=$1', user)
                if count >= limit:
                    return False
            await c.execute('UPDATE connections SET "user"=$1 WHERE id=$2', user, conn_id)
            return True

        return await self._tx(q)

    async def close_connection(self, conn_id: str) -> None:
        await self._update("DELETE FROM connections WHERE id=$1", conn_id)

    async def close(self) -> None:
        await self._pool.close()


async def _usage(c: Any, name: str, default_quota: int, lock: bool = False) -> Usage | None:
    if lock:  # serialise every check-then-change of this user's ledger, on every node
        await c.execute("SELECT 1 FROM users WHERE name=$1 FOR UPDATE", name)
    row = await c.fetchrow(_USAGE, name)
    if row is None:
        return None
    used, files, quota, max_files, activity, wanted, reserved = row
    return Usage(
        used=used,
        files=files,
        reserved=int(reserved),
        quota=default_quota if quota is None else quota,
        max_files=max_files or 0,
        activity=activity,
        wanted=wanted,
    )


async def _add_reservation(c: Any, name: str, holder: str, delta: int) -> None:
    await c.execute(
        'INSERT INTO reservations ("user", holder, bytes, updated_at) VALUES ($1, $2, $3, $4)'
        ' ON CONFLICT ("user", holder) DO UPDATE SET bytes=reservations.bytes+excluded.bytes,'
        " updated_at=excluded.updated_at",
        name,
        holder,
        delta,
        time.time(),
    )
    await c.execute(
        'DELETE FROM reservations WHERE "user"=$1 AND holder=$2 AND bytes<=0', name, holder
    )
    await c.execute("UPDATE users SET activity=activity+1 WHERE name=$1", name)


async def _insert_key(c: Any, name: str, key: KeyRecord) -> None:
    try:
        async with c.transaction():  # a savepoint, so a duplicate leaves the rest intact
            await c.execute(
                'INSERT INTO user_keys ("user", fingerprint, algorithm, public_key, comment,'
                " added_at, allowed_from, exempt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                name,
                key.fingerprint,
                key.algorithm,
                key.public_key,
                key.comment,
                time.time(),
                ",".join(key.allowed_from),
                key.exempt,
            )
    except asyncpg.UniqueViolationError:
        raise StoreError(f"user {name} already has key {key.fingerprint}") from None


async def _keys(c: Any, name: str) -> tuple[KeyRecord, ...]:
    rows = await c.fetch(
        "SELECT fingerprint, algorithm, public_key, comment, allowed_from, exempt"
        ' FROM user_keys WHERE "user"=$1 ORDER BY added_at',
        name,
    )
    return tuple(key_record(row) for row in rows)


async def _write_access(c: Any, name: str, access: AccessRecord) -> bool:
    status = await c.execute(
        "UPDATE users SET permissions=$1, allowed_from=$2, expires_at=$3, upload_bps=$4,"
        " download_bps=$5 WHERE name=$6",
        *access_columns(access),
        name,
    )
    if status.endswith(" 0"):
        return False
    await c.execute('DELETE FROM path_permissions WHERE "user"=$1', name)
    await c.executemany(
        'INSERT INTO path_permissions ("user", path, permissions) VALUES ($1, $2, $3)',
        [(name, path, perms) for path, perms in access.paths],
    )
    return True


async def _paths(c: Any, names: list[str] | None) -> dict[str, tuple[tuple[str, str], ...]]:
    """Path overrides of the named users (None: of everyone), ordered by path."""
    sql = 'SELECT "user", path, permissions FROM path_permissions'
    args: list[Any] = []
    if names is not None:
        sql += ' WHERE "user" = any($1::text[])'
        args = [names]
    out: dict[str, list[tuple[str, str]]] = {}
    for r in await c.fetch(sql + ' ORDER BY "user", path', *args):
        out.setdefault(r["user"], []).append((r["path"], r["permissions"]))
    return {user: tuple(rows) for user, rows in out.items()}


async def _mounts(c: Any, name: str) -> tuple[Mount, ...]:
    rows = await c.fetch(
        "SELECT m.vpath, m.folder, f.path FROM folder_mounts m JOIN folders f"
        ' ON f.name = m.folder WHERE m."user"=$1 ORDER BY m.vpath',
        name,
    )
    return tuple(Mount(*row) for row in rows)


def _user(
    row: Any,
    keys: tuple[KeyRecord, ...],
    paths: tuple[tuple[str, str], ...],
    mounts: tuple[Mount, ...] = (),
) -> UserRecord:
    return UserRecord(
        name=row["name"],
        password_hash=row["password_hash"],
        quota_bytes=row["quota_bytes"],
        disabled=bool(row["disabled"]),
        keys=keys,
        used_bytes=int(row["used_bytes"]),
        used_files=int(row["used_files"]),
        max_files=row["max_files"],
        access=access_record(tuple(row)[7:12], paths),
        mounts=mounts,
        login_policy=row["login_policy"],
        totp_secret=row["totp_secret"],
        recovery_codes=int(row["recovery_codes"]),
    )
