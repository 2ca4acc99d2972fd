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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class StoreError(Exception):
    """The store refused an operation (e.g. a duplicate user); message is user-facing."""


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: str  # SHA256:... as OpenSSH prints it
    algorithm: str
    public_key: str  # one OpenSSH authorized_keys line, without options
    comment: str = ""


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str | None = None
    quota_bytes: int | None = None  # None: the server's default; 0: unlimited
    disabled: bool = False
    keys: tuple[KeyRecord, ...] = field(default_factory=tuple)
    used_bytes: int = 0
    used_files: int = 0


class Store(Protocol):
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

    async def delete_key(self, name: str, fingerprint: str) -> bool: ...

    async def close(self) -> None: ...


async def open_store(url: str) -> Store:
    """Open (and migrate) the store at ``url``: ``sqlite:///path`` or a plain path."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") - 1 :] if url.startswith("sqlite:////") else url[10:]
    elif "://" in url:
        raise StoreError(f"unsupported database URL scheme: {url.split('://')[0]}")
    else:
        path = url
    from sftpd.store.sqlite import SqliteStore

    return await SqliteStore.open(Path(path))


__all__ = ["KeyRecord", "Store", "StoreError", "UserRecord", "open_store"]
