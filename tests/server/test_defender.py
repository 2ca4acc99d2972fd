"""Brute-force blocking, per-address connection limits and login timing, on live servers."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.support.live import LiveServer, User, start_live_server, stop_live_server

REFUSED = (asyncssh.PermissionDenied, asyncssh.DisconnectError, ConnectionError, OSError)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[LiveServer]:
    """A server that blocks an address after 4 failures in 60 s, for 30 s."""
    server = start_live_server(
        tmp_path,
        defender_max_failures=4,
        defender_window=60.0,
        defender_ban_time=30.0,
        max_connections_per_address=3,
    )
    yield server
    stop_live_server(server)


def connect_from(server: LiveServer, user: User, source: str, **kwargs: Any) -> Any:
    """Connect with a chosen loopback source address (all of 127/8 is local on Linux)."""
    return server.connect(user, local_addr=(source, 0), **kwargs)


async def wrong_password(server: LiveServer, user: User, source: str = "127.0.0.1") -> float:
    start = time.monotonic()
    with pytest.raises(REFUSED):
        await connect_from(server, user, source, client_keys=None, password="wrong")
    return time.monotonic() - start


async def test_repeated_failures_block_the_address_only(guarded: LiveServer) -> None:
    user = guarded.add_user()
    times = [await wrong_password(guarded, user) for _ in range(4)]
    # From half the threshold on, failures are answered late (0.25 s for the 3rd of 4).
    assert times[2] >= 0.25, times
    # Now even the right password (and the right key) from that address is refused ...
    with pytest.raises(REFUSED):
        await connect_from(guarded, user, "127.0.0.1", client_keys=None, password=user.password)
    with pytest.raises(REFUSED):
        await connect_from(guarded, user, "127.0.0.1")
    # ... while the same user from another address logs in.
    async with connect_from(guarded, user, "127.0.0.2") as conn:
        assert (await conn.run("sp", check=False)).exit_status == 0
    await guarded.logs.wait_events("defender", 1)
    await asyncio.sleep(0.3)
    blocked = guarded.logs.events("defender")
    assert len(blocked) == 1, "a block is logged once, when it starts"
    assert blocked[0]["addr"] == "127.0.0.1" and blocked[0]["outcome"] == "blocked"
    assert "until" in blocked[0] and "4 login failures" in blocked[0]["reason"]
    bans = guarded.call(guarded.service.store.bans(time.time()))
    assert [(b.addr, b.banned_until > time.time()) for b in bans] == [("127.0.0.1", True)]
    # Lifting the block (``sftpd defender unblock``) lets the address in again.
    assert guarded.call(guarded.service.store.unban("127.0.0.1"))
    async with connect_from(guarded, user, "127.0.0.1"):
        pass


async def test_key_only_failures_count_once_per_connection(guarded: LiveServer) -> None:
    stranger_key = asyncssh.generate_private_key("ssh-ed25519")
    user = guarded.add_user()
    for _ in range(3):
        with pytest.raises(REFUSED):
            await connect_from(guarded, user, "127.0.0.3", client_keys=[stranger_key])
    await asyncio.sleep(0.3)
    bans = guarded.call(guarded.service.store.bans(time.time()))
    assert [(b.addr, b.failures, b.banned_until) for b in bans] == [("127.0.0.3", 3, 0.0)]
    async with connect_from(guarded, user, "127.0.0.3"):  # 3 < 4: not blocked
        pass


async def test_connections_per_address_are_limited(guarded: LiveServer) -> None:
    user = guarded.add_user()
    held = [await asyncio.open_connection("127.0.0.1", guarded.port) for _ in range(3)]
    try:
        for reader, _ in held:
            assert (await reader.readline()).startswith(b"SSH-2.0-")
        await asyncio.sleep(0.2)
        with pytest.raises(REFUSED):
            await connect_from(guarded, user, "127.0.0.1")
        refused = await guarded.logs.wait_events("connection", 1)
        assert refused[0]["reason"] == "too many connections from this address"
        async with connect_from(guarded, user, "127.0.0.4"):  # other addresses are fine
            pass
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.3)
    async with connect_from(guarded, user, "127.0.0.1"):  # slots free again
        pass


async def test_failed_login_time_does_not_reveal_whether_the_user_exists(
    live_server: LiveServer,
) -> None:
    user = live_server.add_user()
    ghost = User("nosuchuser", "", user.key_path, user.home)

    async def failure(who: User) -> float:
        return await wrong_password(live_server, who, "127.0.0.5")

    known, unknown = [], []
    for _ in range(9):
        known.append(await failure(user))
        unknown.append(await failure(ghost))
    # Skipping the argon2id verification for unknown users would make them ~50x faster.
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 0.5 < ratio < 2.0, (known, unknown)


async def test_security_events_are_structured_lines_with_user_address_and_reason(
    guarded: LiveServer,
) -> None:
    user = guarded.add_user(quota=64 * 1024)
    disabled = guarded.add_user(disabled=True)
    os.symlink("/etc", user.home / "etc_link")  # only something outside sftpd can make one
    async with connect_from(guarded, user, "127.0.0.6") as conn:
        async with conn.start_sftp_client() as sftp:
            with pytest.raises(asyncssh.SFTPError):
                await sftp.stat("etc_link/passwd")
            with pytest.raises(asyncssh.SFTPError):
                async with sftp.open("big", "wb") as f:
                    await f.write(b"x" * 128 * 1024)
    with pytest.raises(REFUSED):
        await connect_from(guarded, disabled, "127.0.0.6")
    for _ in range(4):
        await wrong_password(guarded, user, "127.0.0.7")
    await guarded.logs.wait_events("defender", 1, addr="127.0.0.7")
    wanted = {
        ("login", "ok"): user.name,
        ("login", "failed"): disabled.name,
        ("confinement", None): user.name,
        ("quota", None): user.name,
        ("defender", "blocked"): user.name,
    }
    for (event, outcome), name in wanted.items():
        found = [
            e
            for e in guarded.logs.events(event)
            if e.get("user") == name and (outcome is None or e.get("outcome") == outcome)
        ]
        assert found, f"no {event} {outcome} line for {name}"
        line = found[-1]
        assert line["addr"] in ("127.0.0.6", "127.0.0.7"), line
        if outcome != "ok":
            assert line.get("reason"), line
    text = guarded.logs.text()
    assert '"event": "defender"' in text or "event=defender" in text
