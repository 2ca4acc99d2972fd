"""QuotaLedger's write path: group commit and deferral, on a real SQLite store.

The store is real; a thin gate in front of ``apply`` holds a write in flight (or
fails it) so that the interleavings the server meets under load happen on cue.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sftpd.core.errors import QuotaExceeded
from sftpd.core.quota import CHUNK, SHRUNK_XATTR, QuotaLedger, note_shrink, noted_shrink
from sftpd.store import Store, UserRecord, open_store


class GatedStore:
    """A real store whose ``apply`` waits at a gate, or fails while ``down``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.down = False
        self.refused = 0  # writes refused while down

    async def apply(self, *args: Any, **kwargs: Any) -> None:
        if self.down:
            self.refused += 1
            raise OSError("database is locked")
        self.entered.set()
        await self.gate.wait()
        await self.store.apply(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[GatedStore]:
    real = await open_store(str(tmp_path / "sftpd.db"))
    await real.add_user(UserRecord("alice", quota_bytes=100 << 20))
    yield GatedStore(real)
    await real.close()


def stat_of(tmp_path: Path, name: str, size: int = 0) -> os.stat_result:
    p = tmp_path / name
    p.touch()
    os.truncate(p, size)
    return os.stat(p)


@pytest.fixture
async def ledger(store: GatedStore) -> AsyncIterator[QuotaLedger]:
    """Alice's ledger in this process, with one session open."""
    ledger = QuotaLedger("alice", store, "test", 0)
    ledger.session_opened()
    yield ledger
    await ledger.session_closed()


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def used(store: GatedStore) -> int:
    u = await store.store.usage("alice", 0)
    assert u is not None
    return u.used


async def test_a_close_waits_for_the_write_that_carries_its_bytes(
    store: GatedStore, ledger: QuotaLedger, tmp_path: Path
) -> None:
    a = ledger.open_inode(stat_of(tmp_path, "a"))
    b = ledger.open_inode(stat_of(tmp_path, "b"))
    await ledger.resize(a, 1000)
    await ledger.resize(b, 2000)
    store.gate.clear()
    close_a = asyncio.create_task(ledger.close_inode(a, stat_of(tmp_path, "a", 1000)))
    await asyncio.wait_for(
        store.entered.wait(), 5
    )  # a's write is in flight and carries b's 2,000 bytes too
    close_b = asyncio.create_task(ledger.close_inode(b, stat_of(tmp_path, "b", 2000)))
    for _ in range(20):  # b's close does no I/O of its own: a few loop turns finish it if free
        await asyncio.sleep(0)
    assert not close_b.done(), "b's close was acknowledged before its bytes were stored"
    store.gate.set()
    await asyncio.gather(close_a, close_b)
    assert await used(store) == 3000


async def test_a_store_that_cannot_write_defers_without_failing_the_close(
    store: GatedStore, ledger: QuotaLedger, tmp_path: Path
) -> None:
    a = ledger.open_inode(stat_of(tmp_path, "a"))
    await ledger.resize(a, 4096)
    store.down = True
    await ledger.close_inode(a, stat_of(tmp_path, "a", 4096))  # acknowledged: no exception
    assert ledger.pending == 4096 and await used(store) == 0
    refused = store.refused

    async def retried_twice() -> bool:
        return store.refused >= refused + 2

    await until(retried_twice, "no retry while the store was down")
    assert ledger.pending == 4096  # the refused retries kept the bytes pending
    store.down = False

    async def landed() -> bool:
        return await used(store) == 4096

    await until(landed, "the deferred write never landed")
    assert ledger.pending == 0


async def test_claims_double_while_granted_in_full_and_start_over_near_the_quota(
    ledger: QuotaLedger, store: GatedStore
) -> None:
    """Alice has 100 MiB. Claims of 8, 16, 32 MiB are granted in full; the next wants 64
    and gets the 44 that are left, so the claim size starts over; then nothing is left."""
    MiB = 1 << 20
    reserved = []
    for _ in range(4):
        await ledger.grow(ledger.pool + 1)  # one byte more than the pool holds: a claim
        u = await store.store.usage("alice", 0)
        assert u is not None
        reserved.append(u.reserved // MiB)
    assert reserved == [8, 24, 56, 100]
    assert ledger.claim == CHUNK
    with pytest.raises(QuotaExceeded):
        await ledger.grow(ledger.pool + 1)


def test_shrink_notes_reach_the_inode_through_any_descriptor(tmp_path: Path) -> None:
    """The note a truncating process leaves is read by a writer's plain descriptor and by
    the O_PATH descriptor a removal keeps (xattr calls on the fd, or via /proc for O_PATH)."""
    target = tmp_path / "f"
    target.write_bytes(b"x" * 10)
    rw = os.open(target, os.O_RDWR)
    held = os.open(target, os.O_PATH | os.O_NOFOLLOW)
    try:
        assert noted_shrink(rw) == 0
        assert note_shrink(held, 7) == 7
        assert note_shrink(rw, 5) == 5
        assert noted_shrink(rw) == noted_shrink(held) == 12
        assert os.getxattr(target, SHRUNK_XATTR) == b"12"
    finally:
        os.close(rw)
        os.close(held)
    assert noted_shrink(rw) is None  # a closed descriptor: nothing to read, no exception
