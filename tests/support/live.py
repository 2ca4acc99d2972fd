"""A real sftpd on its own event loop in a thread, a real OpenSSH sshd, and what tests
read from them. The fixtures that start them live in tests/conftest.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from sftpd.config import Settings
from sftpd.core.quota import scan_home
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

    def set_access(self, user: User, **changes: Any) -> None:
        """Change fields of the user's ``AccessRecord`` in the store, as ``sftpd user perm``
        and ``sftpd user limit`` do."""

        async def change() -> None:
            record = await self.service.store.get_user(user.name)
            assert record is not None
            await self.service.store.set_access(user.name, replace(record.access, **changes))

        self.call(change())

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
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(tmp / 'host.pub').read_text()}")
    root = tmp / "remote"
    root.mkdir()
    return OpenSSHServer(port, user, tmp / "client", known, root, proc)


def live_usage(server: LiveServer, user: User) -> tuple[int, int]:
    """The user's (bytes, files) as the server's store has them."""
    u = server.call(server.service.store.usage(user.name, server.settings.default_quota))
    assert u is not None
    return u.used, u.files


def assert_exact(server: LiveServer, user: User) -> None:
    """Usage in the store equals a scan of the disk, now: every acknowledged operation
    is written before it is acknowledged (read-your-writes)."""
    assert live_usage(server, user) == scan_home(str(user.home))
