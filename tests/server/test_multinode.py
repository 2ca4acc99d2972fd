"""Two nodes, one PostgreSQL, one data dir: quota (a home and a shared folder), user changes,
blocks and a dead node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import asyncssh
import pytest

from sftpd.core.quota import scan_home
from sftpd.store import folder_account
from tests.support import Serve, Xfer, known_hosts, run
from tests.support.receiver import Receiver, wait_until

MiB = 1024 * 1024
NODE_ARGS = (
    "--no-demo", "--workers", "1", "--node-timeout", "2", "--max-connections-per-address", "0",
    "--defender-max-failures", "3", "--log-level", "warning",
)  # fmt: skip


async def ledger(url: str, user: str) -> tuple[int, int, int, bool]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT used_bytes, used_files, dirty,"
            ' (SELECT coalesce(sum(bytes), 0) FROM reservations WHERE "user"=$1) AS reserved'
            " FROM users WHERE name=$1",
            user,
        )
    finally:
        await conn.close()
    return row["used_bytes"], row["used_files"], int(row["reserved"]), row["dirty"]


async def wait_exact(url: str, user: str, home: Path, timeout: float = 20) -> tuple[Any, ...]:
    """Wait until the shared ledger equals a scan of the shared disk, nothing reserved."""
    deadline = time.monotonic() + timeout
    while True:
        row = await ledger(url, user)
        if row[:3] == (*scan_home(str(home)), 0) or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.2)


def connect(port: int, hosts: Path, key: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "username": "nina", "client_keys": [str(key)], "known_hosts": str(hosts),
        "agent_path": None,
    }  # fmt: skip
    options.update(kwargs)
    return asyncssh.connect("127.0.0.1", port, **options)


async def fill(port: int, hosts: Path, key: Path, name: str) -> int:
    """Upload 128 KiB writes until the quota refuses one; bytes written."""
    written = 0
    async with connect(port, hosts, key) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(name, "wb") as f:
            while True:
                try:
                    await f.write(os.urandom(128 * 1024), written)
                except asyncssh.SFTPFailure:
                    return written
                written += 128 * 1024


async def test_two_nodes_share_quota_users_blocks_and_survive_a_dead_node(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFTPD_DB", pg_url)
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    quota = 24 * MiB + 777
    added = run(tmp_path, "user", "add", "nina", "--key", f"{key}.pub", "--quota", str(quota))
    assert added.returncode == 0, added.stderr
    a = Serve(tmp_path, *NODE_ARGS)
    b = Serve(tmp_path, *NODE_ARGS)  # same data dir, same host keys
    home = tmp_path / "data" / "homes" / "nina"
    try:
        hosts_a, hosts_b = known_hosts(tmp_path, a.port), tmp_path / "known_hosts_b"
        hosts_b.write_text(hosts_a.read_text().replace(f"]:{a.port} ", f"]:{b.port} "))

        # 1. The same user uploads through both nodes at once toward the quota.
        written = await asyncio.gather(
            fill(a.port, hosts_a, key, "via-a"), fill(b.port, hosts_b, key, "via-b")
        )
        used, files, reserved, _ = await wait_exact(pg_url, "nina", home)
        assert (used, files, reserved) == (*scan_home(str(home)), 0)
        assert quota - 2 * 128 * 1024 < used <= quota, (written, used)

        # 1b. A shared folder written through both nodes at once stays exact to its own quota.
        folder_quota = 10 * MiB + 99
        shared = tmp_path / "shared"
        assert run(tmp_path, "folder", "add", "pool", str(shared), "--quota",
                   str(folder_quota)).returncode == 0  # fmt: skip
        assert run(tmp_path, "user", "folder", "add", "nina", "pool", "/f").returncode == 0
        await asyncio.gather(
            fill(a.port, hosts_a, key, "/f/via-a"), fill(b.port, hosts_b, key, "/f/via-b")
        )
        row = await wait_exact(pg_url, folder_account("pool"), shared)
        assert row[:3] == (*scan_home(str(shared)), 0)
        assert folder_quota - 2 * 128 * 1024 < row[0] <= folder_quota
        assert (await ledger(pg_url, "nina"))[:2] == (used, files)  # not the user's bytes

        # 2. A user disabled through one node's CLI is refused by both at next login.
        assert run(tmp_path, "user", "disable", "nina").returncode == 0
        for port, hosts in ((a.port, hosts_a), (b.port, hosts_b)):
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(port, hosts, key)
        assert run(tmp_path, "user", "enable", "nina").returncode == 0

        # 3. An address blocked through one node is blocked on the other.
        for _ in range(3):
            with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
                await connect(a.port, hosts_a, key, client_keys=None, password="wrong",
                              local_addr=("127.0.0.9", 0))  # fmt: skip
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError, OSError)):
            await connect(b.port, hosts_b, key, local_addr=("127.0.0.9", 0))
        async with connect(b.port, hosts_b, key):  # other addresses are fine
            pass

        # 4. Node A dies mid-upload; the upload resumes through node B.
        for name in ("via-a", "via-b"):
            (home / name).unlink()
        assert run(tmp_path, "quota", "scan", "nina").returncode == 0
        assert run(tmp_path, "user", "quota", "nina", "1GiB").returncode == 0
        big = tmp_path / "big.bin"
        data = os.urandom(48 * MiB)
        big.write_bytes(data)
        acked = 0
        conn = await connect(a.port, hosts_a, key)
        sftp = await conn.start_sftp_client()
        f = await sftp.open("big.bin", "wb")
        while acked < 8 * MiB:
            await f.write(data[acked : acked + MiB], acked)
            acked += MiB
        assert (await ledger(pg_url, "nina"))[2] > 0  # node A holds a reservation
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.communicate(timeout=30)
        conn.abort()
        xfer = Xfer(tmp_path, f"nina@127.0.0.1:{b.port}", key, hosts_b)
        r = await asyncio.to_thread(xfer, "--json", "put", "--resume", "big.bin")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["resumed_from"] >= acked
        assert hashlib.sha256((home / "big.bin").read_bytes()).digest() == (
            hashlib.sha256(data).digest()
        )
        # Node B notices A's heartbeat stopped, releases its reservation and rescans.
        row = await wait_exact(pg_url, "nina", home)
        assert row == (*scan_home(str(home)), 0, False)
    finally:
        for node in (a, b):
            if node.proc.poll() is None:
                code, err = node.stop()
                assert code == 0, err


async def test_two_nodes_deliver_each_event_once(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads through both nodes while the receiver is down: when it comes back both nodes
    race for the backlog (FOR UPDATE SKIP LOCKED, leases), and each event arrives once."""
    receiver = Receiver(down=True)
    conf = tmp_path / "sftpd.toml"
    conf.write_text(f'[[hooks]]\nevents = ["upload"]\nurl = "{receiver.url}"\nbackoff_max = 1\n')
    monkeypatch.setenv("SFTPD_DB", pg_url)
    monkeypatch.setenv("SFTPD_CONFIG", str(conf))
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run(tmp_path, "user", "add", "nina", "--key", f"{key}.pub").returncode == 0
    a, b = Serve(tmp_path, *NODE_ARGS), Serve(tmp_path, *NODE_ARGS)
    try:
        hosts_a, hosts_b = known_hosts(tmp_path, a.port), tmp_path / "known_hosts_b"
        hosts_b.write_text(hosts_a.read_text().replace(f"]:{a.port} ", f"]:{b.port} "))

        async def upload(port: int, hosts: Path, prefix: str) -> None:
            async with connect(port, hosts, key) as conn, conn.start_sftp_client() as sftp:
                for i in range(60):
                    async with sftp.open(f"{prefix}{i}", "wb") as f:
                        await f.write(b"x")

        await asyncio.gather(upload(a.port, hosts_a, "a"), upload(b.port, hosts_b, "b"))
        receiver.down = False
        await asyncio.to_thread(wait_until, lambda: len(receiver.events()) >= 120, "lost", 60)
        deadline = time.monotonic() + 30  # until none is pending, so none can come again
        db = await asyncpg.connect(pg_url)
        try:
            while await db.fetchval("SELECT count(*) FROM deliveries WHERE state <> 'delivered'"):
                assert time.monotonic() < deadline, "deliveries still pending"
                await asyncio.sleep(0.1)
        finally:
            await db.close()
        ids = [e["id"] for e in receiver.events()]
        assert len(ids) == len(set(ids)) == 120
        assert {e["path"] for e in receiver.events()} == {
            f"/{p}{i}" for p in "ab" for i in range(60)
        }
    finally:
        for node in (a, b):
            code, err = node.stop()
            assert code == 0, err
        receiver.close()
