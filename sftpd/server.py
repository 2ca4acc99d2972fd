"""Start and stop: store, host keys, listeners, signals and draining."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import itertools
import logging
import os
import signal
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncssh

from sftpd import passwords
from sftpd.config import ConfigError, Settings
from sftpd.core.access import ACCESS_REFRESH, Access
from sftpd.core.limits import SharedRates
from sftpd.core.quota import QuotaLedger
from sftpd.defender import Defender
from sftpd.events.bus import EventBus
from sftpd.hostkeys import HostKey, HostKeyError, load_or_create
from sftpd.metrics import Metrics, MetricsServer, NoMetrics, parse_listen, prepare_directory
from sftpd.reconcile import (
    holder_tag,
    new_holder_id,
    reconcile_dead_holders,
    remove_leftover_uploads,
)
from sftpd.ssh.algorithms import SERVER_WINDOW
from sftpd.ssh.compat import quiet_logging, use_fast_ciphers
from sftpd.ssh.trust import Trust
from sftpd.store import AccessRecord, Store, StoreError, StoreUnavailable, open_store

if TYPE_CHECKING:
    from sftpd.ssh.connection import Connection

log = logging.getLogger("sftpd.server")

#: Only these algorithms are offered; all are current OpenSSH defaults.
KEX_ALGS = [
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group14-sha256",
]
DRAIN_SECONDS = 10.0
TRIM_DELAY = 2.0
FORGET_GIVE_UP = 60.0  # seconds of backoff before a connection row is left to the next start


DELETED = AccessRecord(permissions="none")


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Service:
    """Everything shared by the connections of one server process."""

    def __init__(self, settings: Settings, store: Store, rates: SharedRates | None = None) -> None:
        self.settings = settings
        self.rates = rates  # bandwidth pacing shared with this node's other workers
        self.metrics: Metrics = Metrics() if settings.metrics_listen else NoMetrics()
        self.store: Store = self.metrics.timed_store(store)
        self.holder = new_holder_id()
        self.process_tag = holder_tag(self.holder)
        self.connections: set[Connection] = set()
        self.trust = Trust(settings)
        self.defender = Defender(self.store, settings, self.metrics.defender_blocks.inc)
        self.bus = EventBus(
            settings.hooks, self.store, self.holder, settings.event_buffer,
            settings.hook_concurrency, retention=settings.history_days * 86400,
        )  # fmt: skip
        self.bus.taps.append(self.metrics.event)
        self.bus.observers.append(lambda _hook, outcome: self.metrics.hook(outcome))
        self._metrics_server: MetricsServer | None = None
        self._connection_ids = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._servers: list[asyncssh.SSHAcceptor] = []
        self._ledgers: dict[str, QuotaLedger] = {}
        # One Access per user with a live session here; it goes when their last session does.
        self._access: weakref.WeakValueDictionary[str, Access] = weakref.WeakValueDictionary()
        self._refresher: asyncio.Task[None] | None = None
        self._trim_timer: asyncio.TimerHandle | None = None

    def ledger(self, user: str) -> QuotaLedger:
        """The user's ledger in this process, shared by all their sessions."""
        ledger = self._ledgers.get(user)
        if ledger is None:
            ledger = self._ledgers[user] = QuotaLedger(
                user, self.store, self.holder, self.settings.default_quota
            )
        return ledger

    def access(self, user: str, record: AccessRecord) -> Access:
        """The user's access in this process, shared by their sessions; ``record`` (read at
        login) is the freshest there is, so it updates the shared one."""
        access = self._access.get(user)
        if access is None:
            access = self._access[user] = Access(user, rates=self.rates)
        access.update(record)
        return access

    async def healthy(self) -> bool:
        """Serving, and the store answers (``/healthz``)."""
        await self.store.count_users()
        return bool(self._servers)

    async def refresh_access(self) -> None:
        """Apply admins' changes to running sessions: re-read every live user's access."""
        while True:
            await asyncio.sleep(ACCESS_REFRESH)
            names = list(self._access.keys())
            try:
                records = await self.store.get_access(names)
            except StoreError as exc:
                log.warning("cannot refresh access", extra={"error": str(exc)})
                continue
            for name in names:
                access = self._access.get(name)
                record = records.get(name)
                if access is not None:  # a deleted user may do nothing more
                    access.update(record if record is not None else DELETED)

    def connection_closed(self) -> None:
        """Hand freed memory back to the OS once things calm down.

        A big transfer leaves glibc holding tens of MiB it no longer uses; a
        debounced malloc_trim returns it, so an idle server stays small.
        """
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        loop = asyncio.get_running_loop()
        self._trim_timer = loop.call_later(TRIM_DELAY, _malloc_trim)

    def new_connection_id(self) -> str:
        """Unique across processes and nodes: this process's holder id and a counter."""
        return f"{self.holder}:{next(self._connection_ids)}"

    async def keep_alive(self) -> None:
        """Heartbeat this process in the store and reconcile after dead ones, forever.

        Other nodes cannot see this process's pid: the heartbeat is how they know it lives.
        """
        interval = max(0.5, self.settings.node_timeout / 3)
        while True:
            try:
                await self.store.heartbeat(self.holder, time.time())
                await reconcile_dead_holders(self.store, self.settings, self.holder)
            except StoreError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})
            await asyncio.sleep(interval)

    async def forget_connection(self, conn_id: str) -> None:
        """Drop a closed connection's row, retrying while the store is unavailable
        (a full disk, a long lock); a row left behind would hold a slot until restart."""
        delay = 0.5
        while True:
            try:
                await self.store.close_connection(conn_id)
                return
            except StoreUnavailable:
                if delay > FORGET_GIVE_UP:
                    raise
                await asyncio.sleep(delay)
                delay *= 2

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run bookkeeping that outlives a connection; ``stop`` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("bookkeeping failed", extra={"error": str(task.exception())})

    @property
    def ports(self) -> list[tuple[str, int]]:
        out = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((host, port))
        return out

    async def start(self, host_keys: list[HostKey], reuse_port: bool = False) -> None:
        from sftpd.ssh.connection import Connection

        settings = self.settings
        log.debug("chacha20-poly1305", extra={"implementation": use_fast_ciphers()})
        quiet_logging()
        for addr in settings.listen:
            try:
                server = await asyncssh.create_server(
                    lambda: Connection(self),
                    addr,
                    settings.port,
                    server_host_keys=[k.key for k in host_keys],
                    encoding=None,
                    login_timeout=settings.login_grace_time or None,
                    # A pty is granted only so that `ssh -t` gets the no-shell lines; no
                    # line editor: exec output stays byte-exact.
                    allow_pty=True,
                    line_editor=False,
                    agent_forwarding=False,
                    x11_forwarding=False,
                    # Keyboard-interactive asks for the second factor only, when the
                    # login policy has a code left to ask (Connection.kbdint_auth_supported).
                    kbdint_auth=True,
                    # No GSS: without this asyncssh resolves getfqdn() at every login.
                    gss_host=None,
                    kex_algs=KEX_ALGS,
                    encryption_algs=list(settings.ciphers),
                    window=SERVER_WINDOW,  # uploads over a long link
                    server_version="sftpd",
                    reuse_address=True,
                    reuse_port=reuse_port,
                )
            except OSError as exc:
                await self.stop()
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {settings.port} on {addr} is already in use") from None
                raise ConfigError(
                    f"cannot listen on {addr}:{settings.port}: {exc.strerror}"
                ) from None
            self._servers.append(server)
        self.bus.start()
        if settings.metrics_listen:
            host, port = parse_listen(settings.metrics_listen)
            outbox = self.store.outbox_stats if settings.hooks else None
            self._metrics_server = MetricsServer(self.metrics, self.healthy, outbox)
            try:
                await self._metrics_server.start(host, port, reuse_port)
            except OSError as exc:
                await self.stop()
                raise ConfigError(
                    f"cannot serve metrics on {settings.metrics_listen}: {exc.strerror}"
                ) from None
        self._keeper = asyncio.get_running_loop().create_task(self.keep_alive())
        self._refresher = asyncio.get_running_loop().create_task(self.refresh_access())

    async def stop(self) -> None:
        """Stop accepting, end sessions cleanly (drain), then close the store."""
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        for loop_task in (self._keeper, self._refresher):
            if loop_task is not None:
                loop_task.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close("Server shutting down")
        waits = [asyncio.create_task(conn.closed.wait()) for conn in self.connections]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
        await self.bus.stop(DRAIN_SECONDS)
        for ledger in self._ledgers.values():
            ledger.stop()
        with contextlib.suppress(StoreError):  # gone cleanly: nothing for others to release
            await self.store.drop_holder(self.holder)


def check_data_dir(settings: Settings) -> None:
    """Create the data and homes dirs, or raise ConfigError naming the problem."""
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.homes_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data dir {settings.data_dir}: {exc.strerror}") from None
    for path in (settings.data_dir, settings.homes_dir):
        if not path.is_dir() or not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"data dir {path} is not a readable, writable directory")


async def open_service_store(settings: Settings) -> Store:
    check_data_dir(settings)
    try:
        return await open_store(settings.db_url)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None


async def prepare(settings: Settings) -> list[HostKey]:
    """Everything done once before serving: data dir, schema, crash reconciliation, host keys."""
    if settings.metrics_listen:
        prepare_directory()  # before any worker imports prometheus_client
    Trust(settings)  # a bad CA or revoked-keys file stops the server here, not per worker
    store = await open_service_store(settings)
    try:
        await reconcile_dead_holders(store, settings)
        await remove_leftover_uploads(store, settings)
    finally:
        await store.close()
    try:
        return load_or_create(settings.keys_dir)
    except HostKeyError as exc:
        raise ConfigError(str(exc)) from None


def announce(host_keys: list[HostKey], ports: list[tuple[str, int]]) -> None:
    for key in host_keys:
        print(f"host key {key.algorithm} {key.fingerprint}", flush=True)
    for host, port in ports:
        print(f"sftpd: listening on {host}:{port}", flush=True)


async def run_service(
    settings: Settings,
    host_keys: list[HostKey],
    *,
    reuse_port: bool = False,
    on_started: Callable[[list[tuple[str, int]]], None] | None = None,
    rates: SharedRates | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain; one event loop, one process."""
    await asyncio.to_thread(passwords.prepare)
    store = await open_service_store(settings)
    try:
        service = Service(settings, store, rates)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        os.umask(0o022)
        await service.start(host_keys, reuse_port=reuse_port)
        if on_started:
            on_started(service.ports)
        log.info("started", extra={"listen": service.ports, "pid": os.getpid()})
        await stop.wait()
        log.info("stopping: draining sessions")
        await service.stop()
        log.info("stopped")
    finally:
        await store.close()


async def serve(settings: Settings) -> None:
    """Single-process server (tests and ``--workers 1``)."""
    host_keys = await prepare(settings)
    await run_service(settings, host_keys, on_started=lambda ports: announce(host_keys, ports))
