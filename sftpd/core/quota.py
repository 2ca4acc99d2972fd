"""The quota ledger: reserve before bytes hit the disk, settle to the true size on close.

Usage is the sum of the apparent sizes (``st_size``) of a home's regular files,
each inode counted once, and the number of those inodes; a scan of the disk
(:func:`scan_home`) can always rebuild it.

How one server process keeps it exact without a database write per packet:

* the store holds, per user, committed ``used``/``files`` and, per process
  ("holder"), a reservation. A reservation is claimed atomically under the
  quota (:meth:`LedgerStore.reserve`), so processes and nodes sharing one store
  can never overshoot together, not even by one byte;
* :class:`QuotaLedger` (one per user per process) claims reservations in chunks
  (8 MiB, or what is left) into a local ``pool``; growth of a file draws from
  the pool into ``pending``; on close, ``pending`` is settled into ``used``
  and, once no file is open for writing, the pool is handed back;
* shrinking (truncate, remove, rename over a file) is written to the store at
  once, except what can be taken back from ``pending``;
* every open inode has one :class:`Inode` record with the size the ledger
  counts for it, shared by all handles on it in this process.

A process that dies leaves its reservation behind; the next start drops
reservations of dead holders and rescans the users that had one.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from typing import Protocol

from sftpd.core.errors import QuotaExceeded

CHUNK = 8 * 1024 * 1024


class UsageView(Protocol):
    """A user's ledger row as the store reports it (``sftpd.store.Usage``)."""

    @property
    def used(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def quota(self) -> int: ...
    @property
    def max_files(self) -> int: ...


class LedgerStore(Protocol):
    """What the ledger needs of ``sftpd.store.Store`` (see its docstrings)."""

    async def usage(self, name: str, default_quota: int) -> UsageView | None: ...

    async def reserve(
        self, name: str, holder: str, want: int, need: int, default_quota: int
    ) -> int: ...

    async def apply(
        self, name: str, holder: str, *, used: int = 0, files: int = 0, reserved: int = 0
    ) -> None: ...

    async def create_file(self, name: str, default_quota: int) -> str | None: ...


@dataclass
class Inode:
    """An inode open for writing: the size the ledger counts for it."""

    key: tuple[int, int]
    counted: int
    refs: int = 0
    detached: bool = False  # its last name was removed: it no longer counts


@dataclass
class QuotaLedger:
    """One user's ledger in this process."""

    user: str
    store: LedgerStore
    holder: str
    default_quota: int
    pool: int = 0
    pending: int = 0
    writers: int = 0
    inodes: dict[tuple[int, int], Inode] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- limits ------------------------------------------------------------------

    async def exceeded(self, reason: str = "quota") -> QuotaExceeded:
        """A QuotaExceeded whose one line says where the user stands."""
        from sftpd.units import format_size

        u = await self.store.usage(self.user, self.default_quota)
        if u is None:
            return QuotaExceeded()
        used = u.used + self.pending
        if reason == "files":
            return QuotaExceeded(f"file limit exceeded: {u.files:,} files of {u.max_files:,}")
        return QuotaExceeded(f"quota exceeded: {format_size(used)} used of {format_size(u.quota)}")

    async def check_not_full(self) -> None:
        """Refuse an upload at open when the user is already at the quota."""
        u = await self.store.usage(self.user, self.default_quota)
        if u and u.quota and u.used + self.pending >= u.quota and self.pool == 0:
            raise await self.exceeded()

    async def file_created(self) -> None:
        refusal = await self.store.create_file(self.user, self.default_quota)
        if refusal:
            raise await self.exceeded(refusal)

    async def file_removed(self, size: int) -> None:
        await self.shrink(size, files=1)

    # -- growth and shrinkage ----------------------------------------------------

    async def grow(self, n: int) -> None:
        """Account ``n`` more bytes, claiming from the store only when the pool is short."""
        if n <= self.pool:
            self.pool -= n
            self.pending += n
            return
        async with self._lock:
            short = n - self.pool
            if short > 0:
                granted = await self.store.reserve(
                    self.user, self.holder, max(short, CHUNK), short, self.default_quota
                )
                if not granted:
                    raise await self.exceeded()
                self.pool += granted
            self.pool -= n
            self.pending += n

    async def shrink(self, n: int, files: int = 0) -> None:
        """Account ``n`` fewer bytes (and ``files`` fewer files)."""
        back = min(n, max(self.pending, 0))
        self.pending -= back
        self.pool += back
        if n - back or files:
            await self.store.apply(self.user, self.holder, used=back - n, files=-files)

    async def settle(self) -> None:
        """Write pending growth into ``used``; hand the pool back when nothing is open."""
        release = self.pool if self.writers == 0 else 0
        if self.pending or release:
            pending, self.pending = self.pending, 0
            self.pool -= release
            await self.store.apply(
                self.user, self.holder, used=pending, reserved=-(pending + release)
            )

    # -- inodes open for writing -------------------------------------------------

    def open_inode(self, st: os.stat_result) -> Inode:
        key = (st.st_dev, st.st_ino)
        inode = self.inodes.get(key)
        if inode is None:
            inode = self.inodes[key] = Inode(key, st.st_size)
        inode.refs += 1
        self.writers += 1
        return inode

    async def close_inode(self, inode: Inode, final_size: int | None) -> None:
        if final_size is not None:
            await self.resize(inode, final_size)
        inode.refs -= 1
        self.writers -= 1
        if inode.refs == 0:
            self.inodes.pop(inode.key, None)
        await self.settle()

    async def resize(self, inode: Inode, size: int) -> None:
        """The inode now has ``size`` bytes: grow (may raise) or shrink to match."""
        if inode.detached:
            return
        delta = size - inode.counted
        if delta > 0:
            await self.grow(delta)
        elif delta < 0:
            await self.shrink(-delta)
        inode.counted = size

    def counted_size(self, st: os.stat_result) -> int:
        """What the ledger counts for a file: its open record's size, or its disk size."""
        inode = self.inodes.get((st.st_dev, st.st_ino))
        return inode.counted if inode else st.st_size

    def detach(self, st: os.stat_result) -> None:
        inode = self.inodes.get((st.st_dev, st.st_ino))
        if inode is not None:
            inode.detached = True


def scan_home(home: str) -> tuple[int, int]:
    """(bytes, files) of a home: regular files, each inode once, symlinks not followed.

    Blocking: call it in a thread.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [home]
    while stack:
        path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key not in seen:
                        seen.add(key)
                        total += st.st_size
    return total, len(seen)


def is_counted(st: os.stat_result) -> bool:
    """True for what usage counts: a regular file whose last name this is."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink <= 1
