"""Where users, keys and usage live: the ``Store`` protocol and ``open_store(url)``.

A store is shared by every server process (and, with PostgreSQL, every node), and
by the ``sftpd user ...`` commands while a server runs: it is read at every login,
so a change applies from the next login without a restart. All methods are
coroutines; an implementation must not block the event loop.

Example::

    store = await open_store("sqlite:///data/sftpd.db")
    await store.add_user(UserRecord(name="alice", password_hash=hash_password("...")))
    user = await store.get_user("alice")
    await store.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sftpd.store.outbox import Outbox

Admission = Literal["ok", "full", "blocked"]


class StoreError(Exception):
    """The store refused an operation (e.g. a duplicate user); message is user-facing."""


class StoreUnavailable(StoreError):
    """The database could not be reached or stayed locked past the busy timeout."""


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: str  # SHA256:... as OpenSSH prints it
    algorithm: str
    public_key: str  # one OpenSSH authorized_keys line, without options
    comment: str = ""
    allowed_from: tuple[str, ...] = ()  # CIDR networks the key is accepted from; (): any
    exempt: bool = False  # completes a login alone, whatever the policy (with allowed_from)


def key_record(row: Sequence[Any]) -> KeyRecord:
    """A KeyRecord from ``SELECT fingerprint, algorithm, public_key, comment,
    allowed_from, exempt``."""
    fp, algorithm, public_key, comment, allowed, exempt = row
    nets = tuple(allowed.split(",")) if allowed else ()
    return KeyRecord(fp, algorithm, public_key, comment, nets, bool(exempt))


@dataclass(frozen=True)
class AccessRecord:
    """Who may do what, from where and how fast, as stored (parsed by ``sftpd.core.permissions``
    and ``sftpd.core.limits``)."""

    permissions: str | None = None  # comma list; None: all
    paths: tuple[tuple[str, str], ...] = ()  # (virtual directory, comma list), by path
    allowed_from: tuple[str, ...] = ()  # CIDR networks; empty: anywhere
    expires_at: float | None = None  # epoch seconds; None: never
    upload_bps: int = 0  # bytes per second; 0: unlimited
    download_bps: int = 0


#: A folder's ledger account is this prefix and its name: no user name can start with it.
FOLDER_ACCOUNT_PREFIX = "@"


def folder_account(folder: str) -> str:
    """The ledger account (a row among the users) that counts a shared folder's usage."""
    return FOLDER_ACCOUNT_PREFIX + folder


@dataclass(frozen=True)
class FolderRecord:
    """A shared folder: a server directory with its own quota, mounted into users' trees."""

    name: str
    path: str  # absolute server path
    quota_bytes: int = 0  # 0: unlimited
    max_files: int | None = None
    used_bytes: int = 0
    used_files: int = 0


@dataclass(frozen=True)
class Mount:
    """Where a user sees a folder: ``vpath`` in their tree is the folder's root."""

    vpath: str
    folder: str
    path: str  # the folder's server path


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str | None = None
    quota_bytes: int | None = None  # None: the server's default; 0: unlimited
    disabled: bool = False
    keys: tuple[KeyRecord, ...] = field(default_factory=tuple)
    used_bytes: int = 0
    used_files: int = 0
    max_files: int | None = None  # None or 0: no limit
    access: AccessRecord = field(default_factory=AccessRecord)
    mounts: tuple[Mount, ...] = ()  # read-only here: set with Store.mount/unmount
    login_policy: str | None = None  # None: the server's default (sftpd/core/logins.py)
    totp_secret: str | None = field(default=None, repr=False)  # None: no second factor
    recovery_codes: int = 0  # single-use codes left


@dataclass(frozen=True)
class Strike:
    """An address's standing after one more authentication failure."""

    failures: int  # within the current observation window
    banned_until: float  # epoch seconds; 0 = not blocked
    newly_banned: bool  # this failure is the one that blocked it


@dataclass(frozen=True)
class Ban:
    addr: str
    failures: int
    banned_until: float


@dataclass(frozen=True)
class Usage:
    """A user's ledger row: committed usage, outstanding reservations and limits."""

    used: int
    files: int
    reserved: int
    quota: int  # effective byte quota; 0 = unlimited
    max_files: int  # 0 = no limit
    activity: int  # bumped by every change; lets a scan detect concurrent writers
    wanted: float = 0.0  # when a claim last waited for other holders' room (want_room)


def grant_for(u: Usage, want: int, need: int) -> int:
    """How much of a claim fits under the quota: up to ``want``, 0 if not even ``need``."""
    grant = want if not u.quota else min(want, u.quota - u.used - u.reserved)
    return grant if grant >= need and grant > 0 else 0


def file_refusal(u: Usage) -> str | None:
    """Why one more file may not be created ("files" or "quota"), or None."""
    if u.max_files and u.files >= u.max_files:
        return "files"
    if u.quota and u.used >= u.quota:  # others' reservations are not this file's bytes
        return "quota"
    return None


def next_strike(
    failures: int,
    window_start: float,
    banned_until: float,
    now: float,
    window: float,
    threshold: int,
    ban_time: float,
) -> tuple[Strike, float]:
    """An address's standing after one more failure, and its (possibly new) window start."""
    if window_start < now - window:
        failures, window_start = 0, now
    failures += 1
    newly = bool(threshold) and failures >= threshold and banned_until < now
    if newly:
        banned_until = now + ban_time
    return Strike(failures, banned_until if banned_until >= now else 0.0, newly), window_start


def access_columns(access: AccessRecord) -> tuple[object, ...]:
    """The user-row columns of ``access``: permissions, allowed_from, expires_at, upload_bps,
    download_bps (the path overrides have their own table)."""
    allowed = ",".join(access.allowed_from) or None
    return access.permissions, allowed, access.expires_at, access.upload_bps, access.download_bps


def access_record(columns: Sequence[Any], paths: tuple[tuple[str, str], ...]) -> AccessRecord:
    """The inverse of :func:`access_columns`."""
    permissions, allowed, expires_at, upload_bps, download_bps = columns
    return AccessRecord(
        permissions=permissions,
        paths=paths,
        allowed_from=tuple(allowed.split(",")) if allowed else (),
        expires_at=None if expires_at is None else float(expires_at),
        upload_bps=int(upload_bps or 0),
        download_bps=int(download_bps or 0),
    )


class Store(Outbox, Protocol):
    """Users, keys, usage, defences and the outbox (sftpd/store/outbox.py)."""

    async def get_user(self, name: str) -> UserRecord | None:
        """The user with their keys, or None."""

    async def list_users(self) -> list[UserRecord]: ...

    async def count_users(self) -> int: ...

    async def add_user(self, user: UserRecord) -> None:
        """Add a user and their keys; StoreError if the name is taken."""

    async def delete_user(self, name: str) -> bool: ...

    async def set_password(self, name: str, password_hash: str | None) -> bool: ...

    async def set_disabled(self, name: str, disabled: bool) -> bool: ...

    async def set_quota(self, name: str, quota_bytes: int | None) -> bool: ...

    async def add_key(self, name: str, key: KeyRecord) -> None:
        """Add a key; StoreError if the user is unknown or already has it."""

    async def set_max_files(self, name: str, max_files: int | None) -> bool: ...

    # -- logins (sftpd/core/logins.py) ---------------------------------------------

    async def set_login_policy(self, name: str, policy: str | None) -> bool: ...

    async def set_totp(self, name: str, secret: str | None, code_hashes: Sequence[str]) -> bool:
        """Enrol (or, with None, remove) a TOTP secret: its recovery codes replace any
        before, and no code has been used yet. False if the user is unknown."""

    async def use_totp_step(self, name: str, step: int) -> bool:
        """Mark time step ``step`` used if it is later than the last one used: True once
        per step and user, whichever node asks (a code is never accepted twice)."""

    async def use_recovery_code(self, name: str, code_hash: str) -> bool:
        """Remove the code if the user has it: True once."""

    # -- shared folders: each has a ledger account, folder_account(name) -----------

    async def add_folder(self, folder: FolderRecord) -> None:
        """Add a folder and its ledger account; StoreError if the name or path is taken."""

    async def get_folder(self, name: str) -> FolderRecord | None: ...

    async def list_folders(self) -> list[FolderRecord]: ...

    async def delete_folder(self, name: str) -> bool:
        """Delete a folder, its mounts and its ledger account (the files stay)."""

    async def mount(self, user: str, vpath: str, folder: str) -> None:
        """Show ``folder`` at ``vpath`` to ``user``; StoreError if either is unknown or
        ``vpath`` is taken."""

    async def unmount(self, user: str, vpath: str) -> bool: ...

    async def set_access(self, name: str, access: AccessRecord) -> bool:
        """Replace the user's permissions, path overrides and limits in one transaction."""

    async def get_access(self, names: list[str]) -> dict[str, AccessRecord]:
        """The access of each named user that exists, in one round trip."""

    # -- the quota ledger (see sftpd/core/quota.py for how it is used) ----------

    async def usage(self, name: str, default_quota: int) -> Usage | None: ...

    async def reserve(
        self, name: str, holder: str, want: int, need: int, default_quota: int
    ) -> int:
        """Atomically claim between ``need`` and ``want`` bytes for ``holder``.

        Grants as much as fits under the quota (``used + reserved + grant <= quota``),
        but 0 when not even ``need`` fits. The check and the claim are one transaction,
        so holders in other processes or on other nodes can never overshoot together.
        """

    async def apply(
        self, name: str, holder: str, *, used: int = 0, files: int = 0, reserved: int = 0
    ) -> None:
        """Add deltas to committed usage and to ``holder``'s reservation, in one step."""

    async def create_file(self, name: str, default_quota: int) -> str | None:
        """Count one new file; refuse with "quota" or "files" when a limit is reached."""

    async def want_room(self, name: str) -> None:
        """Say that a claim is waiting for room other holders reserved: each of them hands
        back what it does not use when it sees ``Usage.wanted`` change."""

    async def set_usage(self, name: str, used: int, files: int, if_activity: int) -> bool:
        """Store a scan result, unless anything changed or was reserved since ``if_activity``."""

    async def holders(self) -> list[str]:
        """Every holder with a reservation, a connection or a heartbeat on record."""

    async def drop_holder(self, holder: str) -> list[str]:
        """Delete a dead holder's reservations, connections and heartbeat; mark the users
        that had reservations dirty (they need a scan) and return them."""

    async def heartbeat(self, holder: str, now: float) -> None:
        """Record that ``holder`` (a live server process) was alive at ``now``."""

    async def holders_seen(self) -> dict[str, float]:
        """Each holder's last heartbeat."""

    async def dirty_users(self) -> list[str]:
        """Users whose usage needs a scan (a successful ``set_usage`` clears the mark)."""

    async def delete_key(self, name: str, fingerprint: str) -> bool: ...

    # -- shared defences (see sftpd/defender.py) ------------------------------------

    async def record_failure(
        self, addr: str, now: float, window: float, threshold: int, ban_time: float
    ) -> Strike:
        """Count one failure for ``addr`` and block it for ``ban_time`` at ``threshold``.

        Failures older than ``window`` seconds are forgotten. One transaction.
        """

    async def bans(self, now: float) -> list[Ban]:
        """Addresses blocked now, or with failures on record."""

    async def unban(self, addr: str) -> bool: ...

    async def admit(
        self, conn_id: str, holder: str, addr: str, limit: int, now: float
    ) -> Admission:
        """Register a connection in one round trip: "blocked" if ``addr`` is blocked at
        ``now``, "full" if it already has ``limit`` connections (nothing stored then),
        else "ok"."""

    async def start_session(self, conn_id: str, user: str, limit: int) -> bool:
        """Mark the connection authenticated; False if ``user`` already has ``limit``."""

    async def close_connection(self, conn_id: str) -> None: ...

    async def close(self) -> None: ...


async def open_store(url: str) -> Store:
    """Open (and migrate) the store at ``url``: ``sqlite:///path``, a plain path, or
    ``postgresql://user[:password]@host[:port]/database``."""
    if url.startswith(("postgresql://", "postgres://")):
        from sftpd.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") - 1 :] if url.startswith("sqlite:////") else url[10:]
    elif "://" in url:
        raise StoreError(f"unsupported database URL scheme: {url.split('://')[0]}")
    else:
        path = url
    from sftpd.store.sqlite import SqliteStore

    return await SqliteStore.open(Path(path))


__all__ = [
    "FOLDER_ACCOUNT_PREFIX",
    "AccessRecord",
    "Admission",
    "Ban",
    "FolderRecord",
    "KeyRecord",
    "Mount",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Strike",
    "Usage",
    "UserRecord",
    "access_columns",
    "access_record",
    "file_refusal",
    "folder_account",
    "grant_for",
    "next_strike",
    "open_store",
]
