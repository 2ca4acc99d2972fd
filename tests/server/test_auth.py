"""Logins against a live server: passwords, keys, disabled users, limits, audit lines."""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest

from sftpd.store import KeyRecord
from tests.support.live import LiveServer, User


async def test_password_login_works(live_server: LiveServer, user: User) -> None:
    login = live_server.connect(user, client_keys=None, password=user.password)
    async with login as conn, conn.start_sftp_client() as sftp:
        assert await sftp.realpath(".") == "/"


async def test_key_login_works(live_server: LiveServer, user: User) -> None:
    async with live_server.connect(user) as conn:
        result = await conn.run("nosuchcommand", check=False)
        assert result.exit_status == 127


async def test_wrong_password_is_refused(live_server: LiveServer, user: User) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(user, client_keys=None, password="wrong")


async def test_unknown_user_is_refused_like_a_wrong_password(live_server: LiveServer) -> None:
    ghost = User("ghost", "x", live_server.client_key, live_server.tmp)
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(ghost, client_keys=None, password="x")


async def test_unknown_user_costs_as_much_time_as_a_wrong_password(
    live_server: LiveServer, user: User
) -> None:
    """argon2 runs for unknown users too, so timing does not reveal who exists."""

    async def attempt(name: str) -> float:
        who = User(name, "x", live_server.client_key, live_server.tmp)
        start = time.perf_counter()
        with pytest.raises(asyncssh.PermissionDenied):
            await live_server.connect(who, client_keys=None, password="wrong")
        return time.perf_counter() - start

    known = sorted([await attempt(user.name) for _ in range(3)])[1]
    unknown = sorted([await attempt("nobody-here") for _ in range(3)])[1]
    assert unknown > known * 0.5  # both pay for one argon2 verification


async def test_unauthorized_key_is_refused(live_server: LiveServer) -> None:
    no_key = live_server.add_user(with_key=False)
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(no_key)


async def test_disabled_user_cannot_log_in_by_any_method(live_server: LiveServer) -> None:
    u = live_server.add_user(disabled=True)
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(u)
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(u, client_keys=None, password=u.password)
    reasons = {e.get("reason") for e in live_server.logs.events("login") if e["user"] == u.name}
    assert "user disabled" in reasons


async def test_changes_apply_at_next_login_without_restart(live_server: LiveServer) -> None:
    u = live_server.add_user(with_key=False)
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(u)
    key = asyncssh.read_public_key(str(live_server.client_key) + ".pub")
    record = KeyRecord(key.get_fingerprint("sha256"), key.get_algorithm(), "k")
    live_server.call(live_server.service.store.add_key(u.name, record))
    async with live_server.connect(u):
        pass
    live_server.call(live_server.service.store.set_disabled(u.name, True))
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(u)


async def test_max_auth_attempts_disconnects(live_server: LiveServer, user: User) -> None:
    attempts = 0

    class Client(asyncssh.SSHClient):
        def password_auth_requested(self) -> str:
            nonlocal attempts
            attempts += 1
            return f"wrong{attempts}"

    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError, ConnectionError)):
        await live_server.connect(
            user, client_keys=None, client_factory=Client, preferred_auth="password"
        )
    assert attempts <= live_server.settings.max_auth_attempts
    events = live_server.logs.events("login")
    assert any(e.get("reason") == "max auth attempts" and e["user"] == user.name for e in events)


async def test_every_login_attempt_is_logged_without_secrets(
    live_server: LiveServer, user: User
) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await live_server.connect(user, client_keys=None, password="hunter2-secret")
    async with live_server.connect(user, client_keys=None, password=user.password):
        pass
    async with live_server.connect(user):
        pass
    mine = await live_server.logs.wait_events("login", 3, user=user.name)
    outcomes = {(e["method"], e["outcome"]) for e in mine}
    assert {("password", "failed"), ("password", "ok"), ("publickey", "ok")} <= outcomes
    assert all(e["addr"] == "127.0.0.1" for e in mine)
    text = live_server.logs.text()
    assert "hunter2-secret" not in text
    assert user.password not in text
    key_blob = (live_server.client_key.with_suffix(".pub")).read_text().split()[1]
    assert key_blob not in text
    assert "BEGIN OPENSSH PRIVATE KEY" not in text


async def test_max_sessions_per_user_is_enforced(live_server: LiveServer) -> None:
    u = live_server.add_user()
    limit = live_server.settings.max_sessions_per_user
    conns = [await live_server.connect(u) for _ in range(limit)]
    try:
        extra = await live_server.connect(u)
        with pytest.raises((asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError)):
            await asyncio.wait_for(extra.run("x", check=False), 10)
        extra.close()
    finally:
        for c in conns:
            c.close()
            await c.wait_closed()
    await asyncio.sleep(0.2)
    async with live_server.connect(u):  # a slot is free again
        pass


async def test_shell_and_pty_get_how_to_connect_and_forwarding_is_refused(
    live_server: LiveServer, user: User
) -> None:
    async with live_server.connect(user) as conn:
        for term in (None, "xterm"):
            proc = await conn.create_process(term_type=term)  # a shell, with or without a pty
            await proc.wait_closed()
            result = await proc.wait()
            assert result.exit_status == 1
            err = str(result.stderr)
            assert f"logged in as {user.name}" in err
            assert "SFTP and SCP only" in err
            assert f"sftp -P {live_server.port} {user.name}@127.0.0.1" in err
            assert "sp [--json]" in err and "sha256sum" in err
            assert "used " in err.splitlines()[-1]
            assert ("\r\n" in err) == (term is not None)
            assert not result.stdout
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", live_server.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)


async def test_help_lists_every_command_one_line_each(live_server: LiveServer, user: User) -> None:
    from sftpd.exec.table import COMMANDS

    async with live_server.connect(user) as conn:
        result = await conn.run("help", check=True)
    lines = str(result.stdout).splitlines()
    assert [line.split()[0] for line in lines] == list(COMMANDS)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


async def test_unknown_exec_command_is_127_with_a_message(
    live_server: LiveServer, user: User
) -> None:
    async with live_server.connect(user) as conn:
        result = await conn.run("rm -rf /", check=False)
        assert result.exit_status == 127
        assert result.stderr == "rm: command not found\n"
        result = await conn.run("'unterminated", check=False)
        assert result.exit_status == 2


async def test_login_grace_time_drops_silent_connections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.live import start_live_server, stop_live_server

    server = start_live_server(tmp_path, login_grace_time=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        banner = await reader.readline()
        assert banner.startswith(b"SSH-2.0-")
        start = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 10)  # EOF when the server hangs up
        assert time.monotonic() - start < 5
        assert rest is not None
        writer.close()
    finally:
        stop_live_server(server)
