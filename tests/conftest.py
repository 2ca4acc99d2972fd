"""Fixtures: a real sftpd on 127.0.0.1 (ephemeral port, temp data dir) and client helpers.

The server runs on its own event loop in a thread, so tests may drive it with
blocking OpenSSH subprocesses as well as with asyncssh from the test's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from bench import pg
from bench.pg import PgServer
from sftpd.config import Settings
from sftpd.hostkeys import load_or_create
from sftpd.logs import JsonFormatter, TextFormatter
from sftpd.passwords import hash_password
from sftpd.server import Service, open_service_store
from sftpd.store import KeyRecord, UserRecord

T = TypeVar("T")
_names = itertools.count()


class Records(logging.Handler):
    """Collects log records of the server thread for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [vars(r) for r in self.records if getattr(r, "event", None) == event]

    async def wait_events(
        self, event: str, count: int, timeout: float = 5, **match: Any
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events of a kind matching ``match`` were logged."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(event) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.02)

    def text(self) -> str:
        """Every record as the server would write it, in both log formats."""
        fmts = (TextFormatter(), JsonFormatter())
        return "\n".join(f.format(r) for r in self.records for f in fmts)


@dataclass
class User:
    name: str
    password: str
    key_path: Path
    home: Path


@dataclass
class LiveServer:
    settings: Settings
    service: Service
    loop: asyncio.AbstractEventLoop
    port: int
    client_key: Path
    known_hosts: Path
    tmp: Path
    logs: Records
    users: list[User] = field(default_factory=list)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop (e.g. a store change) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add_user(
        self,
        name: str | None = None,
        *,
        password: str = "correct horse battery",
        quota: int | None = None,
        disabled: bool = False,
        with_key: bool = True,
    ) -> User:
        name = name or f"u{next(_names)}"
        keys: tuple[KeyRecord, ...] = ()
        if with_key:
            key = asyncssh.read_public_key(str(self.client_key) + ".pub")
            keys = (
                KeyRecord(
                    key.get_fingerprint("sha256"),
                    key.get_algorithm(),
                    key.export_public_key().decode().strip(),
                ),
            )
        record = UserRecord(name, hash_password(password), quota, disabled, keys)
        self.call(self.service.store.add_user(record))
        home = self.settings.homes_dir / name
        home.mkdir(mode=0o700, exist_ok=True)
        user = User(name, password, self.client_key, home)
        self.users.append(user)
        return user

    # -- OpenSSH client helpers -------------------------------------------------

    def ssh_options(self, key: Path | None = None) -> list[str]:
        return [
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={key or self.client_key}",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
            "-F", "/dev/null",
        ]  # fmt: skip

    def sftp(
        self, user: User, batch: str, *extra: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sftp", "-b", "-", "-P", str(self.port), *self.ssh_options(), *extra,
             f"{user.name}@127.0.0.1"],
            input=batch, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def scp(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["scp", "-P", str(self.port), *self.ssh_options(), *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def ssh(
        self, user: User, *command: str, timeout: float = 30, input: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-p", str(self.port), *self.ssh_options(), f"{user.name}@127.0.0.1",
             *command],
            capture_output=True, text=True, timeout=timeout, input=input,
        )  # fmt: skip

    def remote(self, user: User, path: str = "") -> str:
        return f"{user.name}@127.0.0.1:{path}"

    def connect(self, user: User, **kwargs: Any) -> Any:
        """``asyncssh.connect`` to this server: await it or use ``async with``."""
        options: dict[str, Any] = {
            "username": user.name,
            "known_hosts": str(self.known_hosts),
            "client_keys": [str(user.key_path)],
            "agent_path": None,
        }
        options.update(kwargs)
        return asyncssh.connect("127.0.0.1", self.port, **options)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def start_live_server(tmp: Path, **overrides: Any) -> LiveServer:
    # Many tests fail logins on purpose from 127.0.0.1: count them, never block.
    overrides.setdefault("defender_max_failures", 100_000)
    settings = Settings(
        port=0,
        data_dir=tmp / "data",
        keys_dir=tmp / "keys",
        **overrides,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), daemon=True)
    thread.start()

    async def boot() -> Service:
        store = await open_service_store(settings)
        service = Service(settings, store)
        await service.start(load_or_create(settings.keys_dir))
        return service

    service = asyncio.run_coroutine_threadsafe(boot(), loop).result(60)
    port = service.ports[0][1]
    client_key = tmp / "id_ed25519"
    if not client_key.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(client_key)
        key.write_public_key(str(client_key) + ".pub")
        client_key.chmod(0o600)
    known_hosts = tmp / f"known_hosts_{port}"
    lines = [
        f"[127.0.0.1]:{port} " + (settings.keys_dir / f"{n}.pub").read_text().strip()
        for n in ("ssh_host_ed25519_key", "ssh_host_ecdsa_key", "ssh_host_rsa_key")
    ]
    known_hosts.write_text("\n".join(lines) + "\n")
    logs = Records()
    logging.getLogger("sftpd").addHandler(logs)
    logging.getLogger("sftpd").setLevel(logging.DEBUG)
    return LiveServer(settings, service, loop, port, client_key, known_hosts, tmp, logs)


def stop_live_server(server: LiveServer) -> None:
    async def shutdown() -> None:
        await server.service.stop()
        await server.service.store.close()

    server.call(shutdown(), timeout=60)
    server.loop.call_soon_threadsafe(server.loop.stop)
    logging.getLogger("sftpd").removeHandler(server.logs)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the whole run; tests isolate themselves with their own users."""
    server = start_live_server(tmp_path_factory.mktemp("sftpd"))
    yield server
    stop_live_server(server)


@pytest.fixture
def user(live_server: LiveServer) -> User:
    return live_server.add_user()


@pytest.fixture
def outside(live_server: LiveServer) -> Path:
    """A directory next to the homes with a secret that no user may reach."""
    path = live_server.tmp / "outside"
    path.mkdir(exist_ok=True)
    (path / "secret.txt").write_text("TOP SECRET\n")
    return path


def require_binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; scripts/test.sh installs it")
    return found


os.environ.setdefault("TZ", "UTC")


@dataclass
class OpenSSHServer:
    """A real OpenSSH sshd on 127.0.0.1 with its own config, keys and authorized_keys."""

    port: int
    user: str
    key: Path
    known_hosts: Path
    root: Path  # a scratch directory the tests use as the remote side
    proc: subprocess.Popen[bytes]


def start_sshd(tmp: Path, extra_config: str = "") -> OpenSSHServer:
    """Debian's /usr/sbin/sshd, never the system's config or /etc/ssh (installed by test.sh)."""
    import pwd
    import socket

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        pytest.fail("openssh-server is not installed; scripts/test.sh installs it")
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host")],
                   check=True)  # fmt: skip
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "client")],
                   check=True)  # fmt: skip
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    user = pwd.getpwuid(os.getuid()).pw_name
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile none\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n" + extra_config
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read() if proc.stderr else ''}")
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(tmp / 'host.pub').read_text()}")
    root = tmp / "remote"
    root.mkdir()
    return OpenSSHServer(port, user, tmp / "client", known, root, proc)


@pytest.fixture(scope="session")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSSHServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.proc.terminate()
    server.proc.wait(10)


# -- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the run; skips (loudly, see the summary) without binaries."""
    bindir = pg.find_bindir()
    if bindir is None:
        pg.SKIP_REASON = "no PostgreSQL server binaries (apt-get install postgresql)"
        pytest.skip(pg.SKIP_REASON)
    server = PgServer(bindir)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database for one test."""
    return pg_server.create_db()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if pg.SKIP_REASON:
        terminalreporter.section("PostgreSQL tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"PostgreSQL tests did not run: {pg.SKIP_REASON}")
