"""Fixtures: a real sftpd on 127.0.0.1 (ephemeral port, temp data dir) and client helpers.

The server runs on its own event loop in a thread, so tests may drive it with
blocking OpenSSH subprocesses as well as with asyncssh from the test's loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import pg
from bench.pg import PgServer
from tests.support.live import (
    LiveServer,
    OpenSSHServer,
    User,
    start_live_server,
    start_sshd,
    stop_live_server,
)


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
