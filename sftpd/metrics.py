"""Prometheus metrics and a health check on ``--metrics-listen ADDR:PORT`` (off by default).

Counters live in prometheus_client's multiprocess files, so any worker answering a scrape
reports the whole server: the parent makes a fresh directory per start (not per data dir:
nodes sharing one must not add up) and names it in ``PROMETHEUS_MULTIPROC_DIR`` before any
process imports prometheus_client, which reads that variable once, at import.

``/metrics``: Prometheus text format. ``/healthz``: 200 while this process serves and its
store answers within two seconds, 503 otherwise (for load balancers).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sftpd.events import Event
from sftpd.store.outbox import OutboxStats

log = logging.getLogger("sftpd.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
HEALTH_TIMEOUT = 2.0
REQUEST_LIMIT = 8192  # bytes of request line and headers read before giving up
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9100`` or ``[::1]:9100``; ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("use ADDR:PORT, e.g. 127.0.0.1:9100")
    return host.strip("[]"), int(port)


def prepare_directory() -> str:
    """A fresh multiprocess directory for this server start; set before workers fork."""
    old = os.environ.get(ENV)
    if old and os.path.basename(old).startswith("sftpd-metrics-"):
        shutil.rmtree(old, ignore_errors=True)
    path = tempfile.mkdtemp(prefix="sftpd-metrics-")
    os.environ[ENV] = path
    return path


class Metrics:
    """What the server counts; every method is cheap and never raises."""

    # prometheus_client's metrics, or stand-ins that count nothing (NoMetrics)
    connections: Any
    sessions: Any
    connections_total: Any
    logins: Any
    bytes: Any
    transfers: Any
    quota_refusals: Any
    defender_blocks: Any
    hook_runs: Any
    store_seconds: Any

    def __init__(self) -> None:
        # Imported here: the multiprocess directory must be in the environment first.
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, doc, labels, registry=None)

        self.connections = Gauge(
            "sftpd_connections", "Open SSH connections.", registry=None,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.sessions = Gauge(
            "sftpd_sessions", "Open session channels by protocol.", ("protocol",),
            registry=None, multiprocess_mode="livesum",
        )  # fmt: skip
        self.connections_total = counter(
            "sftpd_connections_total", "Connections by admission outcome.", ("outcome",)
        )
        self.logins = counter("sftpd_logins_total", "Logins by method and outcome.",
                              ("method", "outcome"))  # fmt: skip
        self.bytes = counter("sftpd_bytes_total", "File bytes moved, by direction.",
                             ("direction",))  # fmt: skip
        self.transfers = counter("sftpd_transfers_total", "Files transferred, by direction "
                                 "and outcome.", ("direction", "outcome"))  # fmt: skip
        self.quota_refusals = counter("sftpd_quota_refusals_total", "Quota exceeded (bursts).")
        self.defender_blocks = counter("sftpd_defender_blocks_total", "Addresses blocked.")
        self.hook_runs = counter(
            "sftpd_hook_runs_total",
            "Hook attempts by outcome (ok, failed, timeout; dead: a delivery given up).",
            ("outcome",),
        )
        self.store_seconds = Histogram(
            "sftpd_store_seconds", "Store call latency by call.", ("call",), registry=None,
            buckets=STORE_BUCKETS,
        )  # fmt: skip

    # -- what the server reports ---------------------------------------------------

    def event(self, event: Event) -> None:
        """An event from the bus: transfers, logins, quota."""
        name = event.name
        if name in ("upload", "download", "upload-failed", "download-failed", "upload-part"):
            direction, _, how = name.partition("-")
            self.bytes.labels(direction).inc(event.bytes or 0)
            outcome = {"": "completed", "failed": "failed", "part": "part"}[how]
            self.transfers.labels(direction, outcome).inc()
        elif name == "login":
            self.logins.labels(event.method or "unknown", "ok").inc()
        elif name == "login-failed":
            self.logins.labels(event.method or "unknown", "failed").inc()
        elif name == "quota-exceeded":
            self.quota_refusals.inc()

    def hook(self, outcome: str) -> None:
        self.hook_runs.labels(outcome).inc()

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, os.environ[ENV])  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def timed_store(self, store: Any) -> Any:
        return TimedStore(store, self.store_seconds)


class _Nothing:
    """Stands in for every metric when metrics are off."""

    def labels(self, *_: str) -> _Nothing:
        return self

    def inc(self, _: float = 1) -> None:
        pass

    def dec(self, _: float = 1) -> None:
        pass

    def observe(self, _: float) -> None:
        pass


class NoMetrics(Metrics):
    """Metrics off (the default): the same surface, nothing counted, nothing imported."""

    def __init__(self) -> None:  # no super().__init__(): prometheus_client stays unimported
        nothing = _Nothing()
        self.connections = self.sessions = self.connections_total = self.logins = nothing
        self.bytes = self.transfers = self.quota_refusals = self.defender_blocks = nothing
        self.hook_runs = self.store_seconds = nothing

    def event(self, event: Event) -> None:
        pass

    def hook(self, outcome: str) -> None:
        pass

    def timed_store(self, store: Any) -> Any:
        return store


class TimedStore:
    """The store, with each coroutine call's latency observed by call name."""

    def __init__(self, store: Any, histogram: Any) -> None:
        self._store = store
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attr) or name.startswith("_"):
            return attr
        child = self._histogram.labels(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - start)

        return timed


class MetricsServer:
    """``/metrics`` and ``/healthz`` over plain HTTP/1.1, one request per connection."""

    def __init__(
        self,
        metrics: Metrics,
        healthy: Callable[[], Awaitable[bool]],
        outbox: Callable[[], Awaitable[OutboxStats]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.outbox = outbox  # read from the store at each scrape: one answer for all nodes
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, reuse_port: bool) -> None:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, reuse_port=reuse_port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = head[:REQUEST_LIMIT].decode("latin-1").split(" ", 2)
            status, body, kind = await self._answer(method, path.split("?", 1)[0])
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):  # fmt: skip
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET only\n", text
        if path == "/metrics":
            body = await asyncio.to_thread(self.metrics.render)
            if self.outbox is not None:
                with contextlib.suppress(Exception):  # the store is down: the rest still counts
                    stats = await asyncio.wait_for(self.outbox(), HEALTH_TIMEOUT)
                    body += outbox_text(stats, time.time())
            return "200 OK", body, "text/plain; version=0.0.4; charset=utf-8"
        if path == "/healthz":
            try:
                ok = await asyncio.wait_for(self.healthy(), HEALTH_TIMEOUT)
            except Exception:  # a store error or a timeout: not healthy, never a crash
                ok = False
            return ("200 OK", b"ok\n", text) if ok else ("503 Service Unavailable",
                                                         b"unavailable\n", text)  # fmt: skip
        return "404 Not Found", b"not found\n", text


def outbox_text(stats: OutboxStats, now: float) -> bytes:
    """The outbox's gauges in Prometheus text: deliveries by state (per hook and in all),
    and the age of the oldest pending one. Store-wide, so every node answers the same."""
    out = [
        "# HELP sftpd_event_deliveries Hook deliveries in the outbox, by hook and state.",
        "# TYPE sftpd_event_deliveries gauge",
    ]
    for label, counts in sorted(stats.by_hook.items()):
        name = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for state, n in zip(("pending", "delivered", "dead"), counts, strict=True):
            out.append(f'sftpd_event_deliveries{{hook="{name}",state="{state}"}} {n}')
    age = max(0.0, now - stats.oldest_pending) if stats.oldest_pending is not None else 0.0
    out += [
        "# HELP sftpd_event_deliveries_pending Deliveries not yet made, all hooks.",
        "# TYPE sftpd_event_deliveries_pending gauge",
        f"sftpd_event_deliveries_pending {stats.pending}",
        "# HELP sftpd_event_deliveries_delivered Deliveries made, all hooks (in the history).",
        "# TYPE sftpd_event_deliveries_delivered gauge",
        f"sftpd_event_deliveries_delivered {stats.delivered}",
        "# HELP sftpd_event_deliveries_dead Deliveries given up (dead-lettered), all hooks.",
        "# TYPE sftpd_event_deliveries_dead gauge",
        f"sftpd_event_deliveries_dead {stats.dead}",
        "# HELP sftpd_event_oldest_pending_seconds Age of the oldest undelivered event.",
        "# TYPE sftpd_event_oldest_pending_seconds gauge",
        f"sftpd_event_oldest_pending_seconds {age:.3f}",
    ]
    return ("\n".join(out) + "\n").encode()
