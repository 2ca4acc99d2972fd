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

import json
from collections.abc import Callable, Sequence
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
    before_seq: int | None = None  # only events older than this one (paging back)


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

    def record_events_soon(
        self, events: Sequence[NewEvent], done: Callable[[BaseException | None], None]
    ) -> bool:
        """Optional fast path: record with the next usage write of this loop turn (one
        commit for a close's usage and its event) or alone at its end, then call ``done``
        with None or the error. False: the store has none (use :meth:`record_events`)."""

    async def claim_deliveries(
        self, hook: str, holder: str, now: float, lease: float, limit: int
    ) -> list[Claimed]:
        """Take up to ``limit`` due, unleased pending deliveries of ``hook`` for ``holder``
        until ``now + lease``, oldest first; across nodes none is taken twice."""

    async def finish_delivery(
        self, seq: int, hook: str, state: State, next_at: float, error: str, now: float
    ) -> None:
        """After an attempt: ``delivered``, ``dead``, or ``pending`` again from ``next_at``."""

    async def hurry_deliveries(self, hook: str, now: float) -> int:
        """Make every pending delivery of ``hook`` due now (its receiver answered again:
        the backlog should not wait out its backoff)."""

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


_COLUMNS = ("id", "time", "name", "user", "path")
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


#: A server path an event carries beside its virtual one, and the virtual one it follows.
_LOCAL = (("local_path", "path"), ("local_target", "target"))


def _local(root: str, vpath: str, skip: int) -> str:
    """The server path of ``vpath`` below ``root``, its first ``skip`` names (a folder's
    mount point) left out."""
    return "/".join([root.rstrip("/"), *vpath.strip("/").split("/")[skip:]]).rstrip("/")


def storable(text: str) -> str:
    """``text`` as a database's UTF-8 column takes it: a name that is not UTF-8 on disk
    reaches us with lone surrogates (``os.fsdecode``), which no column stores; those are
    written as ``\\udcff`` escapes (JSON keeps the exact text)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return text


def packed(e: NewEvent) -> tuple[Any, ...]:
    """id, time, name, user, path (the columns queries filter on) and the rest as JSON: a
    row as small as it can be, since each event is written before its operation answers.
    A server path that follows from ``local_root`` and the virtual path is not stored
    twice (``local_skip``: how many leading names the virtual path has beyond the root)."""
    d = e.data
    rest = {k: v for k, v in d.items() if k not in _COLUMNS}
    root, path = d.get("local_root", ""), d.get("path", "")
    if root and path and "local_path" in rest:
        skip = next((k for k in (0, 1) if _local(root, path, k) == rest["local_path"]), None)
        target = d.get("target", "")
        if skip is not None and (
            not target or _local(root, target, skip) == rest.get("local_target")
        ):
            rest["local_skip"] = skip
            del rest["local_path"]
            if target:
                del rest["local_target"]
    path = d.get("path", "")
    column = storable(path)
    if column != path:  # the column holds a findable form, the JSON the exact one
        rest["path"] = path
    return d["id"], d["time"], d["name"], storable(d["user"]), column, _encode(rest)


def unpacked(row: Sequence[Any]) -> dict[str, Any]:
    """The event's dict from (id, time, name, user, path, data)."""
    data: dict[str, Any] = json.loads(row[5])
    data.update(id=row[0], time=row[1], name=row[2], user=row[3])
    if row[4] and "path" not in data:
        data["path"] = row[4]
    skip = data.pop("local_skip", None)
    if skip is not None:
        for local, virtual in _LOCAL:
            if data.get(virtual) and local not in data:
                data[local] = _local(data["local_root"], data[virtual], skip)
    return data


def id_floor(t: float) -> str:
    """The smallest event id of an event at ``t`` or later (ids start with the milliseconds
    since the epoch in 12 hex digits, sftpd.events.new_event_id): the id index is the time
    index too."""
    return f"{max(0, int(t * 1000)):012x}"


def stats_of(by_hook: dict[str, list[int]], oldest: float | None) -> OutboxStats:
    """Totals from per-hook [pending, delivered, dead] counts."""
    totals = [sum(v[i] for v in by_hook.values()) for i in range(3)]
    per_hook = {k: (v[0], v[1], v[2]) for k, v in by_hook.items()}
    return OutboxStats(totals[0], totals[1], totals[2], oldest, per_hook)
