"""The outbox (sftpd/store/outbox.py) on SQLite: a mixin of ``SqliteStore``.

Recording runs as a short transaction on the event loop when the database is free (as the
ledger's writes do): a batch of events costs one commit. A claim is one ``UPDATE ...
RETURNING`` under SQLite's write lock, so two processes never take the same delivery.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sftpd.store.outbox import (
    PAGE,
    STATE_INDEX,
    Claimed,
    Delivery,
    EventQuery,
    NewEvent,
    OutboxStats,
    State,
    StoredEvent,
    id_floor,
    packed,
    stats_of,
    storable,
    unpacked,
)

_SELECT = "id, time, name, user, path, data"

T = TypeVar("T")


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


Done = Callable[[BaseException | None], None]
Riders = list[tuple[Sequence[NewEvent], Done]]


def rows_of(riders: Riders) -> list[NewEvent]:
    return [e for events, _ in riders for e in events]


def settle(riders: Riders, exc: BaseException | None) -> None:
    """Tell the waiters: recorded (None), or why not."""
    for _, done in riders:
        done(exc)


class SqliteOutbox:
    _riders: Riders
    _rider_flush: asyncio.Handle | None
    _rider_tasks: set[asyncio.Task[None]]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _run_short(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def record_events(self, events: Sequence[NewEvent]) -> None:
        await self._run_short(lambda c: _record(c, events))

    def record_events_soon(self, events: Sequence[NewEvent], done: Done) -> bool:
        """Record with the next usage write this process makes in this turn of the loop (a
        close's: one commit for both), or alone at the end of the turn; ``done(None)`` or
        ``done(error)`` is called as soon as it is known."""
        self._riders.append((events, done))
        if self._rider_flush is None:
            self._rider_flush = asyncio.get_running_loop().call_soon(self._flush_riders)
        return True

    def _take_riders(self) -> Riders:
        riders, self._riders = self._riders, []
        if self._rider_flush is not None:
            self._rider_flush.cancel()
            self._rider_flush = None
        return riders

    def _flush_riders(self) -> None:
        self._rider_flush = None
        riders = self._take_riders()
        if riders:
            task = asyncio.get_running_loop().create_task(self._record_riders(riders))
            self._rider_tasks.add(task)
            task.add_done_callback(self._rider_tasks.discard)

    async def _record_riders(self, riders: Riders) -> None:
        try:
            await self._run_short(lambda c: _record(c, rows_of(riders)))
        except BaseException as exc:
            settle(riders, exc)
            raise
        settle(riders, None)

    async def claim_deliveries(
        self, hook: str, holder: str, now: float, lease: float, limit: int
    ) -> list[Claimed]:
        def q(c: sqlite3.Connection) -> list[Claimed]:
            with transaction(c):
                rows = c.execute(
                    "UPDATE deliveries SET lease_until=?, holder=?, attempts=attempts+1"
                    " WHERE rowid IN (SELECT rowid FROM deliveries WHERE hook=?"
                    " AND state='pending' AND next_at<=? AND lease_until<=?"
                    " ORDER BY next_at, event_seq LIMIT ?)"
                    " RETURNING event_seq, attempts",
                    (now + lease, holder, hook, now, now, limit),
                ).fetchall()
                out = []
                for seq, attempts in rows:
                    row = c.execute(f"SELECT {_SELECT} FROM events WHERE seq=?", (seq,)).fetchone()  # noqa: S608
                    out.append(Claimed(seq, hook, attempts, unpacked(row)))
                return out

        return await self._run_short(q)

    async def finish_delivery(
        self, seq: int, hook: str, state: State, next_at: float, error: str, now: float
    ) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE deliveries SET state=?, next_at=?, error=?, lease_until=0, holder=NULL,"
                " done_at=? WHERE event_seq=? AND hook=?",
                (
                    state,
                    next_at,
                    storable(error[:500]),
                    None if state == "pending" else now,
                    seq,
                    hook,
                ),
            )

        await self._run_short(q)

    async def hurry_deliveries(self, hook: str, now: float) -> int:
        sql = "UPDATE deliveries SET next_at=? WHERE hook=? AND state='pending' AND next_at>?"
        return await self._run(lambda c: c.execute(sql, (now, hook, now)).rowcount)

    async def query_events(self, query: EventQuery) -> list[StoredEvent]:
        where, args = _where(query)

        def q(c: sqlite3.Connection) -> list[StoredEvent]:
            rows = c.execute(
                f"SELECT seq, {_SELECT} FROM events WHERE {where} ORDER BY seq DESC LIMIT ?",  # noqa: S608 (fixed clauses, bound values)
                (*args, query.limit),
            ).fetchall()
            return [StoredEvent(r[0], unpacked(r[1:]), _deliveries(c, r[0])) for r in rows[::-1]]

        return await self._run(q)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        def q(c: sqlite3.Connection) -> StoredEvent | None:
            row = c.execute(f"SELECT seq, {_SELECT} FROM events WHERE id=?", (event_id,)).fetchone()  # noqa: S608
            return None if row is None else StoredEvent(row[0], unpacked(row[1:]),
                                                        _deliveries(c, row[0]))  # fmt: skip

        return await self._run(q)

    async def retry_deliveries(self, event_id: str | None, now: float) -> int:
        sql = "UPDATE deliveries SET state='pending', next_at=?, attempts=0, error='',"
        sql += " done_at=NULL WHERE state='dead'"
        args: tuple[Any, ...] = (now,)
        if event_id is not None:
            sql += " AND event_seq=(SELECT seq FROM events WHERE id=?)"
            args += (event_id,)
        return await self._run(lambda c: c.execute(sql, args).rowcount)

    async def prune_events(self, before: float) -> int:
        def q(c: sqlite3.Connection) -> int:
            total = 0
            while True:  # in pages: a year of history must not hold the lock for long
                with transaction(c):
                    n = c.execute(
                        "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE"
                        " id < ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE"
                        " event_seq=e.seq AND state='pending') LIMIT ?)",
                        (id_floor(before), PAGE),
                    ).rowcount
                total += n
                if n < PAGE:
                    return total

        return await self._run(q)

    async def outbox_stats(self) -> OutboxStats:
        def q(c: sqlite3.Connection) -> OutboxStats:
            by_hook: dict[str, list[int]] = {}
            for label, state, n in c.execute(
                "SELECT label, state, count(*) FROM deliveries GROUP BY label, state"
            ):
                by_hook.setdefault(label, [0, 0, 0])[STATE_INDEX[state]] += n
            (oldest,) = c.execute(
                "SELECT min(e.time) FROM deliveries d JOIN events e ON e.seq = d.event_seq"
                " WHERE d.state='pending'"
            ).fetchone()
            return stats_of(by_hook, oldest)

        return await self._run(q)


def _record(c: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
    with transaction(c):
        insert_events(c, events)


def insert_events(c: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
    """The events and their deliveries, inside the caller's transaction."""
    for e in events:
        seq = c.execute(
            "INSERT INTO events (id, time, name, user, path, data) VALUES (?, ?, ?, ?, ?, ?)",
            packed(e),
        ).lastrowid
        if e.hooks:
            c.executemany(
                "INSERT INTO deliveries (event_seq, hook, label, next_at) VALUES (?, ?, ?, ?)",
                [(seq, key, label, e.data["time"]) for key, label in e.hooks],
            )


def _where(query: EventQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = ["1"]
    args: list[Any] = []
    if query.user is not None:
        clauses.append("user=?")
        args.append(query.user)
    if query.names:
        clauses.append(f"name IN ({','.join('?' * len(query.names))})")
        args.extend(query.names)
    if query.since is not None:
        clauses.append("id>=?")
        args.append(id_floor(query.since))
    if query.path_prefix:
        clauses.append("substr(path, 1, ?)=?")
        args.extend((len(query.path_prefix), query.path_prefix))
    if query.state is not None:
        clauses.append("EXISTS (SELECT 1 FROM deliveries WHERE event_seq=seq AND state=?)")
        args.append(query.state)
    if query.before_seq is not None:
        clauses.append("seq<?")
        args.append(query.before_seq)
    return " AND ".join(clauses), tuple(args)


def _deliveries(c: sqlite3.Connection, seq: int) -> tuple[Delivery, ...]:
    rows = c.execute(
        "SELECT hook, label, state, attempts, next_at, error, done_at FROM deliveries"
        " WHERE event_seq=? ORDER BY label",
        (seq,),
    ).fetchall()
    return tuple(Delivery(*row) for row in rows)
