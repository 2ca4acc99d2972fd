"""Session lifecycle: idle timeout, fairness between users, client key types."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from sftpd.store import KeyRecord
from tests.support.live import LiveServer, User, start_live_server, stop_live_server


async def test_idle_sessions_are_closed_busy_ones_are_not(tmp_path: Path) -> None:
    server = start_live_server(tmp_path, idle_timeout=1.0)
    try:
        u = server.add_user()
        async with server.connect(u) as idle_conn:
            await asyncio.wait_for(idle_conn.wait_closed(), 10)
        async with server.connect(u) as busy, busy.start_sftp_client() as sftp:
            for _ in range(8):  # 2 s of activity, twice the timeout
                await sftp.stat(".")
                await asyncio.sleep(0.25)
            assert await sftp.realpath(".") == "/"
        assert await server.logs.wait_events("login", 2, user=u.name, outcome="ok")
    finally:
        stop_live_server(server)


async def test_a_big_upload_does_not_stall_other_users(live_server: LiveServer) -> None:
    big_user, small_user = live_server.add_user(), live_server.add_user()
    chunk = os.urandom(1024 * 1024)
    done = asyncio.Event()

    async def upload() -> None:
        login = live_server.connect(big_user)
        async with login as conn, conn.start_sftp_client() as sftp, sftp.open("big", "wb") as f:
            for i in range(300):
                await f.write(chunk, i * len(chunk))
        done.set()

    task = asyncio.create_task(upload())
    worst = 0.0
    async with live_server.connect(small_user) as conn, conn.start_sftp_client() as sftp:
        await asyncio.sleep(0.3)
        while not done.is_set():
            start = time.perf_counter()
            await sftp.listdir(".")
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.02)
    await task
    assert (big_user.home / "big").stat().st_size == 300 * len(chunk)
    assert worst < 2.0  # a stalled loop would hold the listing for the whole upload


@pytest.mark.parametrize(
    ("keytype", "algs"),
    [("rsa", "rsa-sha2-512"), ("rsa", "rsa-sha2-256"), ("ecdsa", "ecdsa-sha2-nistp256"),
     ("ed25519", "ssh-ed25519")],
)  # fmt: skip
def test_openssh_logs_in_with_each_key_type(
    live_server: LiveServer, tmp_path: Path, keytype: str, algs: str
) -> None:
    u = live_server.add_user(with_key=False)
    key = tmp_path / f"id_{keytype}"
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, "-N", "", "-f", str(key)], check=True)
    pub = asyncssh.read_public_key(f"{key}.pub")
    record = KeyRecord(pub.get_fingerprint("sha256"), pub.get_algorithm(), "k")
    live_server.call(live_server.service.store.add_key(u.name, record))
    result = subprocess.run(
        ["sftp", "-b", "-", "-P", str(live_server.port), *live_server.ssh_options(key),
         "-o", f"PubkeyAcceptedAlgorithms={algs}", f"{u.name}@127.0.0.1"],
        input="pwd\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("hostkey", ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"])
def test_every_host_key_type_is_offered(live_server: LiveServer, user: User, hostkey: str) -> None:
    result = subprocess.run(
        ["sftp", "-b", "-", "-P", str(live_server.port), *live_server.ssh_options(),
         "-o", f"HostKeyAlgorithms={hostkey}", f"{user.name}@127.0.0.1"],
        input="pwd\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
