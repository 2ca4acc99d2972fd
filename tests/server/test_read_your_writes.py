"""Read-your-writes usage: once an operation is acknowledged, every view of usage shows it.

A writer on one worker (or node) changes files; a reader on the other worker (or node) asks
``sp --json`` and ``df`` (statvfs) right after each acknowledgement, with no sleep, and must
see exactly what a scan of the disk sees. ``sftpd user show`` must agree at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from tests.support import Serve, keypair, known_hosts, run, worker_pids

MiB = 1024 * 1024
QUOTA = 64 * MiB
ROUNDS = 200


def _socket_owner(server_port: int, client_port: int, pids: list[int]) -> int:
    """The process holding the server side of one TCP connection (from /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            inode = fields[9]
    assert inode is not None, "connection not found in /proc/net/tcp"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


async def _connect(port: int, hosts: Path, key: Path, user: str) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect("127.0.0.1", port, username=user, client_keys=[str(key)],
                                  known_hosts=str(hosts), agent_path=None)  # fmt: skip


async def _rounds(
    writer: asyncssh.SSHClientConnection, reader: asyncssh.SSHClientConnection, home: Path
) -> None:
    """Each round: one acknowledged change through ``writer``, then ``reader`` must see it."""
    rng = random.Random(11)
    async with writer.start_sftp_client() as w, reader.start_sftp_client() as r:
        for i in range(ROUNDS):
            name = f"f{rng.randrange(12)}"
            kind = i % 5
            try:
                if kind in (0, 1):  # write (new or overwrite with TRUNC), CLOSE
                    async with w.open(name, "wb") as f:
                        await f.write(os.urandom(rng.randrange(0, 300_000)))
                elif kind == 2:  # REMOVE
                    await w.remove(name)
                elif kind == 3:  # RENAME over another file
                    await w.posix_rename(name, f"f{rng.randrange(12)}")
                else:  # SETSTAT truncate (shrink or sparse grow)
                    await w.truncate(name, rng.randrange(0, 400_000))
            except asyncssh.SFTPNoSuchFile:
                pass
            want_used, want_files = scan_home(str(home))
            got = await reader.run("sp --json", check=True)
            doc = json.loads(str(got.stdout))
            assert (doc["used"], doc["files"]) == (want_used, want_files), f"round {i} ({kind})"
            vfs = await r.statvfs(".")
            assert vfs.bfree == (QUOTA - want_used) // 1024, f"df after round {i} ({kind})"
    final_used, final_files = scan_home(str(home))
    assert (final_used, final_files) != (0, 0)  # the rounds left files behind to count


def _user_show(tmp: Path, name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    shown = run(tmp, "user", "show", name, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


async def test_other_worker_sees_every_acknowledged_change(tmp_path: Path) -> None:
    key = keypair(tmp_path)
    assert run(tmp_path, "user", "add", "rita", "--key", f"{key}.pub", "--quota",
               str(QUOTA)).returncode == 0  # fmt: skip
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0",
                   "--max-connections-per-address", "0")  # fmt: skip
    conns: list[asyncssh.SSHClientConnection] = []
    try:
        pids = worker_pids(server.proc.pid)
        hosts = known_hosts(tmp_path, server.port)
        owners: dict[int, asyncssh.SSHClientConnection] = {}
        while len(owners) < 2 and len(conns) < 64:  # the kernel spreads connections by hash
            c = await _connect(server.port, hosts, key, "rita")
            conns.append(c)
            owners.setdefault(_socket_owner(server.port, c.get_extra_info("sockname")[1], pids), c)
        assert len(owners) == 2, "could not reach both workers"
        writer, reader = owners.values()
        home = tmp_path / "data" / "homes" / "rita"
        await _rounds(writer, reader, home)
        shown = _user_show(tmp_path, "rita")
        assert (shown["used"], shown["files"]) == scan_home(str(home))
    finally:
        for c in conns:
            c.close()
        server.stop()


async def test_other_node_sees_every_acknowledged_change(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFTPD_DB", pg_url)
    key = keypair(tmp_path)
    assert run(tmp_path, "user", "add", "nora", "--key", f"{key}.pub", "--quota",
               str(QUOTA)).returncode == 0  # fmt: skip
    args = ("--no-demo", "--workers", "1", "--log-level", "warning")
    a, b = Serve(tmp_path, *args), Serve(tmp_path, *args)
    try:
        hosts_a, hosts_b = known_hosts(tmp_path, a.port), tmp_path / "known_hosts_b"
        hosts_b.write_text(hosts_a.read_text().replace(f"]:{a.port} ", f"]:{b.port} "))
        async with (
            await _connect(a.port, hosts_a, key, "nora") as writer,
            await _connect(b.port, hosts_b, key, "nora") as reader,
        ):
            home = tmp_path / "data" / "homes" / "nora"
            await _rounds(writer, reader, home)
            shown = _user_show(tmp_path, "nora")
            assert (shown["used"], shown["files"]) == scan_home(str(home))
    finally:
        a.stop()
        b.stop()


async def test_racing_sessions_and_a_full_quota_show_exactly_at_once(tmp_path: Path) -> None:
    """The two reports from the field, on two workers: four sessions race 4 MiB each into
    10 MiB, then the clients exit; and a quota filled with acknowledged writes. OpenSSH's
    ``ssh sp --json`` (a new connection, either worker) right after must match the disk."""
    key = keypair(tmp_path)
    assert run(tmp_path, "user", "add", "rose", "--key", f"{key}.pub", "--quota",
               str(10 * MiB)).returncode == 0  # fmt: skip
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0",
                   "--max-connections-per-address", "0")  # fmt: skip
    hosts = known_hosts(tmp_path, server.port)
    home = tmp_path / "data" / "homes" / "rose"

    async def upload(i: int) -> None:
        async with await _connect(server.port, hosts, key, "rose") as conn:
            async with conn.start_sftp_client() as sftp, sftp.open(f"race{i}", "wb") as f:
                for off in range(0, 4 * MiB, 256 * 1024):
                    try:
                        await f.write(os.urandom(256 * 1024), off)
                    except asyncssh.SFTPFailure:
                        return

    def sp() -> tuple[int, int]:
        r = subprocess.run(
            ["ssh", "-p", str(server.port), "-o", "BatchMode=yes", "-o", f"IdentityFile={key}",
             "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={hosts}", "-F", "/dev/null",
             "rose@127.0.0.1", "sp", "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        return doc["used"], doc["files"]

    try:
        await asyncio.gather(*(upload(i) for i in range(4)))
        for _ in range(4):  # new connections: both workers answer
            assert await asyncio.to_thread(sp) == scan_home(str(home))
        for name in os.listdir(home):
            (home / name).unlink()
        assert run(tmp_path, "quota", "scan", "rose").returncode == 0
        async with await _connect(server.port, hosts, key, "rose") as conn:
            async with conn.start_sftp_client() as sftp:
                n = 0
                while True:  # fill to the quota, one acknowledged 1 MiB file at a time
                    try:
                        async with sftp.open(f"fill{n}", "wb") as f:
                            await f.write(os.urandom(MiB))
                    except asyncssh.SFTPFailure:
                        break
                    n += 1
                    assert await asyncio.to_thread(sp) == scan_home(str(home))
                for _ in range(4):
                    assert await asyncio.to_thread(sp) == scan_home(str(home))
        assert 9 * MiB <= scan_home(str(home))[0] <= 10 * MiB
    finally:
        server.stop()
