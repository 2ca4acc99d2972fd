"""Rebuild usage from the disk: after a crash (at start) and on demand (``sftpd quota scan``).

A scan runs in a worker thread, so a home of 100,000 files does not stall other
sessions. Its result is stored only if nothing changed the user's usage while it
ran and no upload holds a reservation (``Store.set_usage``), so a scan can never
count in-flight bytes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from sftpd.config import Settings
from sftpd.core.quota import scan_home
from sftpd.core.uploads import leftovers
from sftpd.store import FOLDER_ACCOUNT_PREFIX, Store, folder_account

log = logging.getLogger("sftpd.reconcile")


def new_holder_id() -> str:
    """Identifies this process's reservations: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_tag(holder: str) -> str:
    """The random part of a holder id: short, unique, safe in a file name."""
    return holder.rsplit(":", 1)[-1]


def holder_is_dead(holder: str) -> bool:
    """True for a holder of this host whose process is gone (others are left alone)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no such process
    return state in ("Z", "X")  # a zombie no one reaped is dead too


@dataclass(frozen=True)
class ScanResult:
    user: str
    used: int
    files: int
    stored: bool  # False: the user was busy; the result was not stored


async def account_dir(store: Store, settings: Settings, account: str) -> Path:
    """The directory a ledger account counts: a user's home, or a shared folder's path."""
    if account.startswith(FOLDER_ACCOUNT_PREFIX):
        folder = await store.get_folder(account.removeprefix(FOLDER_ACCOUNT_PREFIX))
        if folder is None:
            raise LookupError(f"no such folder: {account}")
        return Path(folder.path)
    return settings.homes_dir / account


async def scan_user(store: Store, settings: Settings, user: str, tries: int = 3) -> ScanResult:
    """Scan one home (or a folder, by its ledger account) and store the result if nobody
    wrote meanwhile."""
    home = await account_dir(store, settings, user)
    used = files = 0
    for attempt in range(tries):
        before = await store.usage(user, settings.default_quota)
        if before is None:
            raise LookupError(f"no such user: {user}")
        used, files = await asyncio.to_thread(scan_home, str(home)) if home.is_dir() else (0, 0)
        if await store.set_usage(user, used, files, before.activity):
            if (before.used, before.files) != (used, files):
                log.info(
                    "usage reconciled",
                    extra={"user": user, "was": before.used, "now": used, "files": files},
                )
            return ScanResult(user, used, files, True)
        await asyncio.sleep(0.2 * (attempt + 1))
    return ScanResult(user, used, files, False)


async def reconcile_dead_holders(
    store: Store, settings: Settings, me: str = ""
) -> list[ScanResult]:
    """Drop what dead processes held and rescan the users concerned.

    A holder is dead if it is a process of this host that no longer runs, or if its
    heartbeat is older than ``node_timeout`` (a process on another node, or a frozen
    one). Users whose scan could not be stored (busy) stay marked and are tried again.
    """
    now = time.time()
    seen = await store.holders_seen()
    for holder in await store.holders():
        if holder == me:
            continue
        last = seen.get(holder)
        if holder_is_dead(holder) or (last is not None and now - last > settings.node_timeout):
            dropped = await store.drop_holder(holder)
            log.info("dead holder released", extra={"holder": holder, "users": len(dropped)})
    results = []
    for user in sorted(await store.dirty_users()):
        try:
            results.append(await scan_user(store, settings, user, tries=1))
        except LookupError:
            continue
    return results


async def remove_leftover_uploads(store: Store, settings: Settings) -> list[str]:
    """Remove temporary files of atomic uploads whose server process is gone (a crash), then
    rescan the homes and folders they were in. Returns the paths removed."""
    live = {holder_tag(h) for h in await store.holders_seen()}
    folders = {f.path: folder_account(f.name) for f in await store.list_folders()}
    tops = [str(settings.homes_dir), *folders]

    def sweep() -> list[str]:
        removed = []
        for path in leftovers((t for t in tops if os.path.isdir(t)), live):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
        return removed

    removed = await asyncio.to_thread(sweep)
    accounts = {_account_of(path, settings, folders) for path in removed} - {None}
    for account in sorted(a for a in accounts if a):
        with contextlib.suppress(LookupError):
            await scan_user(store, settings, account)
    if removed:
        log.info("leftover uploads removed", extra={"files": len(removed)})
    return removed


def _account_of(path: str, settings: Settings, folders: dict[str, str]) -> str | None:
    """The ledger account a path is counted in: a folder's, or the home's user."""
    for top, account in folders.items():
        if path.startswith(top.rstrip("/") + "/"):
            return account
    rel = os.path.relpath(path, settings.homes_dir)
    return None if rel.startswith("..") else rel.split(os.sep, 1)[0]
