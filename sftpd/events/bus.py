"""The event bus of one server process: a bounded queue and a few workers running hooks.

``emit`` never waits: an event that finds the queue full is dropped, logged and counted.
Workers run at most ``concurrency`` hooks at once; a failing or slow hook costs only its
own worker's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import httpx

from sftpd.events import Event
from sftpd.events.actions import post_webhook, run_command
from sftpd.events.hooks import Hook

log = logging.getLogger("sftpd.hooks")

Observer = Callable[[Hook, str], None]  # (hook, outcome): ok, failed, timeout, dropped


class EventBus:
    def __init__(self, hooks: tuple[Hook, ...], queue_size: int, concurrency: int) -> None:
        self.hooks = hooks
        self.concurrency = max(1, concurrency)
        self.outcomes: Counter[str] = Counter()
        self.observers: list[Observer] = []
        self.taps: list[Callable[[Event], None]] = []  # see every event (metrics)
        self._queue: asyncio.Queue[tuple[Hook, Event]] = asyncio.Queue(max(1, queue_size))
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        if not self.hooks:
            return
        if any(h.url for h in self.hooks):
            self._client = httpx.AsyncClient(follow_redirects=False)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]

    def emit(self, event: Event) -> None:
        """Queue the event for every hook that wants it; never blocks."""
        for tap in self.taps:
            tap(event)
        for hook in self.hooks:
            if not hook.wants(event):
                continue
            try:
                self._queue.put_nowait((hook, event))
            except asyncio.QueueFull:
                log.warning("hook queue full: event dropped",
                            extra={"hook": hook.label, "event": event.name})  # fmt: skip
                self._count(hook, "dropped")

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _count(self, hook: Hook, outcome: str) -> None:
        self.outcomes[outcome] += 1
        for observe in self.observers:
            observe(hook, outcome)

    async def _work(self) -> None:
        while True:
            hook, event = await self._queue.get()
            try:
                if hook.command:
                    outcome = await run_command(hook, event)
                else:
                    assert self._client is not None
                    outcome = await post_webhook(self._client, hook, event)
            except Exception:  # a hook must never take the server down
                log.exception("hook crashed", extra={"hook": hook.label})
                outcome = "failed"
            finally:
                self._queue.task_done()
            self._count(hook, outcome)

    async def stop(self, drain: float) -> None:
        """Let queued hooks run for up to ``drain`` seconds, then stop."""
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
