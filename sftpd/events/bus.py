"""The event bus of one server process: every event is recorded in the store (the outbox,
sftpd/store/outbox.py), and delivered to hooks from there, at least once.

``emit`` never blocks and never fails. Its result is done when the event is recorded:
the session awaits it before answering the operation, so a client that saw an upload
succeed knows its event survives a crash. On SQLite an event is recorded on the spot when
the database is free this instant (one short transaction on the loop, as the ledger's
writes); otherwise, and on PostgreSQL, a recorder task takes every event emitted in one
loop turn in one transaction. While the store cannot record them they wait in memory (at
most ``buffer``; beyond that new ones are dropped, logged and counted) and a waiter stops
waiting after :data:`RECORD_WAIT`: a store outage slows operations down, it does not stop
them.

Each hook has a :class:`Courier`: it claims due deliveries of its hook (leased, so no other
process or node attempts them meanwhile), runs at most ``concurrency`` at once and records
each outcome: delivered; pending again after a backoff doubling from :data:`RETRY_DELAY` up
to the hook's ``backoff_max``; or dead past its ``horizon`` (or ``retries``). The first
success after a failure makes the hook's whole backlog due: a receiver back after an hour
does not wait out an hour's backoff. A slow hook delays only its own deliveries. A courier
wakes when this process recorded an event for its hook and polls every :data:`POLL` seconds
for the rest (other processes' events, retries that came due).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

import httpx

from sftpd.events import RANDOM, Done, Event
from sftpd.events.actions import post_webhook, run_command
from sftpd.events.hooks import Hook
from sftpd.store import Store, StoreError
from sftpd.store.outbox import Claimed, NewEvent, State

log = logging.getLogger("sftpd.hooks")

Observer = Callable[[Hook, str], None]  # (hook, outcome): ok, failed, timeout, dead

RECORD_WAIT = 5.0  # seconds an operation waits for its event to be recorded
RECORD_RETRY = 0.25  # seconds before recording is tried again; doubles up to RECORD_RETRY_MAX
RECORD_RETRY_MAX = 5.0
MAX_BATCH = 1000  # events per recording transaction
POLL = 1.0  # seconds between a courier's looks at the store when not woken
RETRY_DELAY = 1.0  # seconds before the first retry of a delivery
LEASE_MARGIN = 30.0  # seconds a claim outlives the hook's timeout
PRUNE_EVERY = 3600.0  # seconds between two prunes of the history (at most)


class Recording:
    """What ``emit`` returns: awaiting it waits for the event to be recorded (or for the
    recorder to give up waiting, after RECORD_WAIT of store failures). Not awaiting it is
    fine: recording goes on."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        return self.future.__await__()


class EventBus:
    def __init__(
        self,
        hooks: tuple[Hook, ...],
        store: Store | None,
        holder: str,
        buffer: int,
        concurrency: int,
        retention: float = 0.0,
    ) -> None:
        self.hooks = hooks
        self.store = store
        self.holder = holder
        self.buffer = max(1, buffer)
        self.concurrency = max(1, concurrency)
        self.retention = retention  # seconds of history kept; 0: forever
        self.outcomes: Counter[str] = Counter()
        self.observers: list[Observer] = []
        self.taps: list[Callable[[Event], None]] = []  # see every event (metrics)
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._couriers: dict[str, Courier] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._stopped = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if any(h.url for h in self.hooks):
            self._client = httpx.AsyncClient(follow_redirects=False)
        if self.store is not None:
            for hook in self.hooks:
                courier = self._couriers[hook.key] = Courier(hook, self)
                self._tasks.append(loop.create_task(courier.run()))
            if self.retention:
                self._tasks.append(loop.create_task(self._prune()))

    def emit(self, event: Event) -> Awaitable[None]:
        """Record the event (then deliver it to each hook that wants it); never blocks."""
        for tap in self.taps:
            tap(event)
        if self.store is None:
            return Done()
        if self._stopped:  # the store is closing: nothing could record it any more
            log.warning("event after stop: not recorded", extra={"event": event.name})
            self.outcomes["dropped"] += 1
            return Done()
        if not self._pending:  # nothing queued ahead: the store's fast path if it has one
            row = NewEvent(event.to_dict(), self._wanting(event))
            recorded = asyncio.get_running_loop().create_future()
            if self.store.record_events_soon(
                [row], lambda exc: self._recorded(exc, row, event, recorded)
            ):
                return Recording(recorded)
        return self._queue(event)

    def _recorded(
        self, exc: BaseException | None, row: NewEvent, event: Event,
        recorded: asyncio.Future[None],
    ) -> None:  # fmt: skip
        """The fast path's outcome: done, or the event joins the queue (which retries)."""
        if exc is not None:
            self._pending.append((event, recorded))
            if self._recorder is None:
                self._recorder = asyncio.get_running_loop().create_task(self._record())
            return
        self._wake(row.hooks)
        if not recorded.done():
            recorded.set_result(None)

    def _queue(self, event: Event) -> Awaitable[None]:
        if len(self._pending) >= self.buffer:
            log.warning("event buffer full: event dropped", extra={"event": event.name})
            self.outcomes["dropped"] += 1
            return Done()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, future))
        if self._recorder is None:  # starts next loop turn: this turn's events share it
            self._recorder = loop.create_task(self._record())
        return Recording(future)

    @property
    def queued(self) -> int:
        """Events not yet recorded."""
        return len(self._pending)

    async def _record(self) -> None:
        assert self.store is not None
        delay, failing_since, size = RECORD_RETRY, 0.0, MAX_BATCH
        try:
            while self._pending:
                batch = self._pending[:size]
                rows = [NewEvent(e.to_dict(), self._wanting(e)) for e, _ in batch]
                try:
                    await self.store.record_events(rows)
                except StoreError as exc:
                    log.warning("cannot record events", extra={"error": str(exc),
                                "waiting": len(self._pending)})  # fmt: skip
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= RECORD_WAIT:
                        _release(self._pending)  # answer the operations; keep the events
                    await asyncio.sleep(delay)
                    delay = min(RECORD_RETRY_MAX, delay * 2)
                    continue
                except Exception:  # not the store: an event it cannot take; find it alone
                    if size > 1:
                        size = 1
                        continue
                    log.exception("event cannot be recorded: dropped",
                                  extra={"event": batch[0][0].name})  # fmt: skip
                    self.outcomes["dropped"] += 1
                    del self._pending[:1]
                    _release(batch)
                    continue
                failing_since = 0.0
                delay = RECORD_RETRY
                del self._pending[: len(batch)]
                _release(batch)
                self._wake([hook for row in rows for hook in row.hooks])
        finally:
            self._recorder = None
            if self._stopped:
                _release(self._pending)

    def _wake(self, hooks: Iterable[tuple[str, str]]) -> None:
        for key in {key for key, _ in hooks}:
            self._couriers[key].wake.set()

    def _wanting(self, event: Event) -> list[tuple[str, str]]:
        return [(h.key, h.label) for h in self.hooks if h.wants(event)]

    def count(self, hook: Hook, outcome: str) -> None:
        self.outcomes[outcome] += 1
        for observe in self.observers:
            observe(hook, outcome)

    async def deliver(self, hook: Hook, event: Event) -> tuple[str, str]:
        """One attempt: ("ok" | "failed" | "timeout", why)."""
        try:
            if hook.command:
                return await run_command(hook, event)
            assert self._client is not None
            return await post_webhook(self._client, hook, event)
        except Exception as exc:  # a hook must never take the server down
            log.exception("hook crashed", extra={"hook": hook.label})
            return "failed", f"crashed: {exc}"

    async def _prune(self) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(min(PRUNE_EVERY, self.retention / 4))
            try:
                n = await self.store.prune_events(time.time() - self.retention)
            except StoreError as exc:
                log.warning("cannot prune history", extra={"error": str(exc)})
                continue
            if n:
                log.info("history pruned", extra={"events": n})

    async def stop(self, drain: float) -> None:
        """Record what is waiting (for up to ``drain`` seconds), then stop delivering: what
        was being delivered is released to the next process (``drop_holder``)."""
        if self._recorder is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._recorder), drain)
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _release(waiting: list[tuple[Event, asyncio.Future[None]]]) -> None:
    for _, future in waiting:
        if not future.done():
            future.set_result(None)


class Courier:
    """Delivers one hook's events from the outbox."""

    def __init__(self, hook: Hook, bus: EventBus) -> None:
        self.hook = hook
        self.bus = bus
        self.wake = asyncio.Event()
        self.failing = False  # the last attempt failed: a success hurries the backlog
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                free = self.bus.concurrency - len(self._running)
                if free <= 0:
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self.wake.clear()
                claimed = await self._claim(free)
                for c in claimed:
                    task = asyncio.get_running_loop().create_task(self._deliver(c))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                if len(claimed) < free:  # nothing more is due: wait for news
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), POLL)
        finally:
            for task in list(self._running):
                task.cancel()
            if self._running:
                await asyncio.wait(list(self._running))

    async def _claim(self, n: int) -> list[Claimed]:
        assert self.bus.store is not None
        lease = self.hook.timeout + LEASE_MARGIN
        try:
            return await self.bus.store.claim_deliveries(
                self.hook.key, self.bus.holder, time.time(), lease, n
            )
        except StoreError as exc:
            log.warning("cannot claim deliveries", extra={"hook": self.hook.label,
                        "error": str(exc)})  # fmt: skip
            return []

    async def _deliver(self, c: Claimed) -> None:
        event = Event.from_dict(c.data)
        outcome, why = await self.bus.deliver(self.hook, event)
        now = time.time()
        if outcome == "ok" and self.failing:  # the receiver is back: no backoff for the rest
            self.failing = False
            with contextlib.suppress(StoreError):
                await self.bus.store.hurry_deliveries(self.hook.key, now)  # type: ignore[union-attr]
            self.wake.set()
        elif outcome != "ok":
            self.failing = True
        state, next_at = self._next(outcome, c.attempts, event, now)
        self.bus.count(self.hook, outcome)
        if state == "dead":
            log.warning("event dead-lettered", extra={"hook": self.hook.label, "event": event.id,
                        "attempts": c.attempts, "error": why})  # fmt: skip
            self.bus.count(self.hook, "dead")
        assert self.bus.store is not None
        for delay in (0.0, 0.5, 2.0):  # else the lease runs out and it is attempted again
            await asyncio.sleep(delay)
            try:
                await self.bus.store.finish_delivery(c.seq, c.hook, state, next_at, why, now)
                return
            except StoreError as exc:
                log.warning("cannot record a delivery", extra={"error": str(exc)})

    def _next(self, outcome: str, attempts: int, event: Event, now: float) -> tuple[State, float]:
        """Delivered; or when to try again; or dead."""
        if outcome == "ok":
            return "delivered", now
        hook = self.hook
        backoff = min(hook.backoff_max, RETRY_DELAY * 2 ** min(attempts - 1, 40))
        next_at = now + backoff * RANDOM.uniform(0.8, 1.0)  # spread a burst's retries
        if (hook.retries is not None and attempts > hook.retries) or (
            next_at > event.time + hook.horizon
        ):
            return "dead", now
        return "pending", next_at
