"""The outbox: every event, recorded before its operation is answered, and each hook's
delivery of it. The same rows are the history (``sftpd events list``), pruned after the
retention. Shared by every process and node through the store.

A delivery is ``pending`` until a hook took it (``delivered``) or gave up (``dead``, after
its horizon or retries). A process claims due deliveries with a lease (``lease_until``,
``holder``): while the lease runs no other process or node takes them, so each is attempted
by one at a time; a holder that dies leaves leases that ``drop_holder`` releases (or that
run out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

State = Literal["pending", "delivered", "dead"]
STATES: tuple[State, ...] = ("pending", "delivered", "dead")
STATE_INDEX = {"pending": 0, "delivered": 1, "dead": 2}
PAGE = 500  # rows deleted per transaction when pruning


@dataclass(frozen=True)
class NewEvent:
    """An event to record (its ``to_dict()``, with ``id``, ``time``, ``name``, ``user``,
    ``path``) and the hooks that want it: (key, label)."""

    data: dict[str, Any]
    hooks: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Delivery:
    hook: str
    label: str
    state: State
    attempts: int
    next_at: float
    error: str = ""
    done_at: float | None = None


@dataclass(frozen=True)
class StoredEvent:
    seq: int  # order of recording (per store)
    data: dict[str, Any]
    deliveries: tuple[Delivery, ...] = ()

    @property
    def id(self) -> str:
        return str(self.data.get("id", ""))


@dataclass(frozen=True)
class Claimed:
    """A delivery this process may attempt now (attempts counts this one)."""

    seq: int
    hook: str
    attempts: int
    data: dict[str, Any]


@dataclass(frozen=True)
class EventQuery:
    user: str | None = None
    names: tuple[str, ...] = ()  # event names; empty: all
    since: float | None = None  # epoch seconds
    state: State | None = None  # only events with a delivery in this state
    limit: int = 100  # the newest this many, in order
    path_prefix: str = ""  # narrows the query; the caller matches patterns itself


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    delivered: int
    dead: int
    oldest_pending: float | None  # the event time of the oldest pending delivery
    by_hook: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # label: p, d, x


class Outbox(Protocol):
    async def record_events(self, events: Sequence[NewEvent]) -> None:
        """Record events and a pending delivery per hook that wants each, in one
        transaction (all or none)."""

    async def claim_deliveries(
        self, hook: str, holder: str, now: float, lease: float, limit: int
    ) -> list[Claimed]:
        """Take up to ``limit`` due, unleased pending deliveries of ``hook`` for ``holder``
        until ``now + lease``, oldest first; across nodes none is taken twice."""

    async def finish_delivery(
        self, seq: int, hook: str, state: State, next_at: float, error: str, now: float
    ) -> None:
        """After an attempt: ``delivered``, ``dead``, or ``pending`` again from ``next_at``."""

    async def query_events(self, query: EventQuery) -> list[StoredEvent]:
        """Events matching ``query`` with their deliveries, oldest first."""

    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    async def retry_deliveries(self, event_id: str | None, now: float) -> int:
        """Make dead deliveries (of one event, or all) pending again, due now."""

    async def prune_events(self, before: float) -> int:
        """Forget events older than ``before`` that no hook still has to deliver."""

    async def outbox_stats(self) -> OutboxStats: ...


def summary(deliveries: Sequence[Delivery]) -> str:
    """``-`` (no hooks), or e.g. ``2 delivered, 1 pending``."""
    if not deliveries:
        return "-"
    counts = {s: sum(d.state == s for d in deliveries) for s in STATES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def event_columns(e: NewEvent) -> tuple[Any, ...]:
    """id, time, name, user, path: the columns a query filters on."""
    d = e.data
    return d["id"], d["time"], d["name"], d["user"], d.get("path", "")


def stats_of(by_hook: dict[str, list[int]], oldest: float | None) -> OutboxStats:
    """Totals from per-hook [pending, delivered, dead] counts."""
    totals = [sum(v[i] for v in by_hook.values()) for i in range(3)]
    per_hook = {k: (v[0], v[1], v[2]) for k, v in by_hook.items()}
    return OutboxStats(totals[0], totals[1], totals[2], oldest, per_hook)
