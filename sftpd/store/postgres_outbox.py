"""The outbox (sftpd/store/outbox.py) on PostgreSQL: a mixin of ``PostgresStore``.

A claim locks the due rows it takes with ``FOR UPDATE SKIP LOCKED`` and leases them in the
same statement: nodes claiming at once each get different deliveries, and none waits for
another's lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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

_SELECT = 'id, time, name, "user", path, data'

T = TypeVar("T")

_CLAIM = """
UPDATE deliveries d SET lease_until=$1::float8 + $2::float8, holder=$3, attempts=d.attempts+1
FROM (SELECT event_seq, hook FROM deliveries WHERE hook=$4 AND state='pending'
      AND next_at<=$1 AND lease_until<=$1 ORDER BY next_at, event_seq LIMIT $5
      FOR UPDATE SKIP LOCKED) due, events e
WHERE d.event_seq=due.event_seq AND d.hook=due.hook AND e.seq=d.event_seq
RETURNING d.event_seq, d.attempts, e.id, e.time, e.name, e."user", e.path, e.data
"""


class PostgresOutbox:
    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def record_events(self, events: Sequence[NewEvent]) -> None:
        async def q(c: Any) -> None:
            for e in events:
                seq = await c.fetchval(
                    'INSERT INTO events (id, time, name, "user", path, data)'
                    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                    *packed(e),
                )  # fmt: skip
                if e.hooks:
                    await c.executemany(
                        "INSERT INTO deliveries (event_seq, hook, label, next_at)"
                        " VALUES ($1, $2, $3, $4)",
                        [(seq, key, label, e.data["time"]) for key, label in e.hooks],
                    )

        await self._tx(q)

    def record_events_soon(
        self, events: Sequence[NewEvent], done: Callable[[BaseException | None], None]
    ) -> bool:
        return False  # every PostgreSQL call is a round trip: the recorder batches them

    async def claim_deliveries(
        self, hook: str, holder: str, now: float, lease: float, limit: int
    ) -> list[Claimed]:
        async def q(c: Any) -> list[Claimed]:
            rows = await c.fetch(_CLAIM, now, lease, holder, hook, limit)
            return [Claimed(r[0], hook, r[1], unpacked(r[2:])) for r in rows]

        return await self._tx(q)

    async def finish_delivery(
        self, seq: int, hook: str, state: State, next_at: float, error: str, now: float
    ) -> None:
        async def q(c: Any) -> None:
            await c.execute(
                "UPDATE deliveries SET state=$1, next_at=$2, error=$3, lease_until=0,"
                " holder=NULL, done_at=$4 WHERE event_seq=$5 AND hook=$6",
                state, next_at, storable(error[:500]), None if state == "pending" else now,
                seq, hook,
            )  # fmt: skip

        await self._run(q)

    async def hurry_deliveries(self, hook: str, now: float) -> int:
        async def q(c: Any) -> int:
            status = await c.execute(
                "UPDATE deliveries SET next_at=$1 WHERE hook=$2 AND state='pending'"
                " AND next_at>$1",
                now, hook,
            )  # fmt: skip
            return int(status.split()[-1])

        return await self._run(q)

    async def query_events(self, query: EventQuery) -> list[StoredEvent]:
        where, args = _where(query)

        async def q(c: Any) -> list[StoredEvent]:
            rows = await c.fetch(
                f"SELECT seq, {_SELECT} FROM events WHERE {where} ORDER BY seq DESC"  # noqa: S608 (fixed clauses, bound values)
                f" LIMIT ${len(args) + 1}",
                *args, query.limit,
            )  # fmt: skip
            return [StoredEvent(r[0], unpacked(r[1:]), await _deliveries(c, r[0]))
                    for r in rows[::-1]]  # fmt: skip

        return await self._run(q)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async def q(c: Any) -> StoredEvent | None:
            row = await c.fetchrow(f"SELECT seq, {_SELECT} FROM events WHERE id=$1", event_id)  # noqa: S608
            if row is None:
                return None
            return StoredEvent(row[0], unpacked(row[1:]), await _deliveries(c, row[0]))

        return await self._run(q)

    async def retry_deliveries(self, event_id: str | None, now: float) -> int:
        sql = "UPDATE deliveries SET state='pending', next_at=$1, attempts=0, error='',"
        sql += " done_at=NULL WHERE state='dead'"
        args: tuple[Any, ...] = (now,)
        if event_id is not None:
            sql += " AND event_seq=(SELECT seq FROM events WHERE id=$2)"
            args += (event_id,)

        async def q(c: Any) -> int:
            return int((await c.execute(sql, *args)).split()[-1])

        return await self._run(q)

    async def prune_events(self, before: float) -> int:
        async def q(c: Any) -> int:
            total = 0
            while True:
                status = await c.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE"
                    " id < $1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE"
                    " event_seq=e.seq AND state='pending') LIMIT $2)",
                    id_floor(before), PAGE,
                )  # fmt: skip
                n = int(status.split()[-1])
                total += n
                if n < PAGE:
                    return total

        return await self._run(q)

    async def outbox_stats(self) -> OutboxStats:
        async def q(c: Any) -> OutboxStats:
            by_hook: dict[str, list[int]] = {}
            rows = await c.fetch(
                "SELECT label, state, count(*) FROM deliveries GROUP BY label, state"
            )
            for label, state, n in rows:
                by_hook.setdefault(label, [0, 0, 0])[STATE_INDEX[state]] += n
            oldest = await c.fetchval(
                "SELECT min(e.time) FROM deliveries d JOIN events e ON e.seq = d.event_seq"
                " WHERE d.state='pending'"
            )
            return stats_of(by_hook, oldest)

        return await self._run(q)


def _where(query: EventQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = ["TRUE"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.user is not None:
        clauses.append(f'"user"={arg(query.user)}')
    if query.names:
        clauses.append(f"name = ANY({arg(list(query.names))}::text[])")
    if query.since is not None:
        clauses.append(f"id>={arg(id_floor(query.since))}")
    if query.path_prefix:
        clauses.append(f"left(path, {arg(len(query.path_prefix))})={arg(query.path_prefix)}")
    if query.state is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM deliveries WHERE event_seq=seq AND state="  # noqa: S608
            + arg(query.state)
            + ")"
        )
    if query.before_seq is not None:
        clauses.append(f"seq<{arg(query.before_seq)}")
    return " AND ".join(clauses), tuple(args)


async def _deliveries(c: Any, seq: int) -> tuple[Delivery, ...]:
    rows = await c.fetch(
        "SELECT hook, label, state, attempts, next_at, error, done_at FROM deliveries"
        " WHERE event_seq=$1 ORDER BY label",
        seq,
    )
    return tuple(Delivery(*row) for row in rows)
