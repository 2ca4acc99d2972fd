"""``sftpd serve --workers N``: one port, several processes, quota exact across them."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncssh

from sftpd.core.quota import scan_home
from tests.support import Serve, known_hosts, ledger_row, run, worker_pids

MiB = 1024 * 1024


def socket_count(pid: int) -> int:
    def link(fd: Path) -> str:
        try:
            return os.readlink(fd)
        except FileNotFoundError:  # closed between the listing and the read
            return ""

    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if link(fd).startswith("socket:"))


async def test_workers_share_the_port_and_the_quota(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    quota = 24 * MiB + 777
    added = run(tmp_path, "user", "add", "wendy", "--key", f"{key}.pub", "--quota", str(quota))
    assert added.returncode == 0
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0")
    try:
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2
        before = {pid: socket_count(pid) for pid in workers}
        hosts = known_hosts(tmp_path, server.port)
        conns = [
            await asyncssh.connect(
                "127.0.0.1",
                server.port,
                username="wendy",
                client_keys=[str(key)],
                known_hosts=str(hosts),
                agent_path=None,
            )
            for _ in range(12)
        ]
        grown = {pid: socket_count(pid) - before[pid] for pid in workers}
        assert all(n > 0 for n in grown.values()), grown  # the kernel spread the connections
        refused = 0

        async def upload(i: int, conn: asyncssh.SSHClientConnection) -> None:
            nonlocal refused
            async with conn.start_sftp_client() as sftp, sftp.open(f"f{i}", "wb") as f:
                offset = 0
                while True:
                    try:
                        await f.write(os.urandom(128 * 1024), offset)
                    except asyncssh.SFTPFailure:
                        refused += 1
                        return
                    offset += 128 * 1024

        await asyncio.gather(*(upload(i, c) for i, c in enumerate(conns)))
        for c in conns:
            c.close()
        await asyncio.sleep(0.3)
        home = tmp_path / "data" / "homes" / "wendy"
        used, files, reserved = ledger_row(tmp_path, "wendy")
        assert refused == 12
        assert (used, files) == scan_home(str(home))
        assert used <= quota and used > quota - 12 * 128 * 1024
        assert reserved == 0
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert err.count("stopped") == 2


async def test_session_and_address_limits_hold_across_workers(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run(tmp_path, "user", "add", "sam", "--key", f"{key}.pub").returncode == 0
    server = Serve(
        tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "3",
        "--max-connections-per-address", "5",
    )  # fmt: skip
    hosts = known_hosts(tmp_path, server.port)

    async def session(source: str) -> asyncssh.SSHClientConnection | None:
        try:
            conn = await asyncssh.connect(
                "127.0.0.1", server.port, username="sam", client_keys=[str(key)],
                known_hosts=str(hosts), agent_path=None, local_addr=(source, 0),
            )  # fmt: skip
            await conn.run("sp", check=True)  # refused sessions are dropped by now
            return conn
        except (asyncssh.Error, OSError):
            return None

    try:
        # 8 sessions from 8 addresses: the per-user limit of 3 holds in total, not per worker.
        user_conns = [await session(f"127.0.1.{i}") for i in range(8)]
        assert sum(c is not None for c in user_conns) == 3
        for c in user_conns:
            if c is not None:
                c.close()
        await asyncio.sleep(0.3)
        # 8 raw connections from one address: 5 are kept, the rest dropped at once.
        raw = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.2.1", 0))
            for _ in range(8)
        ]

        async def kept(reader: asyncio.StreamReader) -> bool:
            try:  # a refused connection is closed at once; an admitted one waits for us
                await asyncio.wait_for(reader.read(), 1.5)
            except TimeoutError:
                return True
            except ConnectionError:
                pass
            return False

        alive = sum(await asyncio.gather(*(kept(r) for r, _ in raw)))
        for _, writer in raw:
            writer.close()
        assert alive == 5
    finally:
        code, err = server.stop()
    assert code == 0, err


async def test_a_users_bandwidth_limit_holds_across_workers(tmp_path: Path) -> None:
    """Two connections on two different workers upload at once: together they keep to the
    user's rate (each worker used to pace alone: twice the rate)."""
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run(tmp_path, "user", "add", "pat", "--key", f"{key}.pub").returncode == 0
    assert run(tmp_path, "user", "limit", "pat", "--upload", "1MiB").returncode == 0
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0")
    conns: list[asyncssh.SSHClientConnection] = []
    try:
        hosts = known_hosts(tmp_path, server.port)
        workers = worker_pids(server.proc.pid)
        on: dict[int, asyncssh.SSHClientConnection] = {}  # one connection per worker
        for _ in range(40):
            before = {pid: socket_count(pid) for pid in workers}
            conn = await asyncssh.connect("127.0.0.1", server.port, username="pat",
                                          client_keys=[str(key)], known_hosts=str(hosts),
                                          agent_path=None)  # fmt: skip
            conns.append(conn)
            [pid] = [p for p in workers if socket_count(p) > before[p]]
            on.setdefault(pid, conn)
            if len(on) == 2:
                break
        assert len(on) == 2, "the kernel put 40 connections on one worker"

        async def upload(conn: asyncssh.SSHClientConnection, name: str) -> None:
            async with conn.start_sftp_client() as sftp, sftp.open(name, "wb") as f:
                await f.write(os.urandom(3 * MiB // 2))

        start = asyncio.get_running_loop().time()
        await asyncio.gather(*(upload(c, f"f{i}") for i, c in enumerate(on.values())))
        elapsed = asyncio.get_running_loop().time() - start
        print(f"3 MiB from two workers at 1 MiB/s: {elapsed:.2f} s")
        assert elapsed >= 2.5, f"{elapsed:.2f} s: each worker paced on its own"
    finally:
        for conn in conns:
            conn.close()
        code, err = server.stop()
    assert code == 0, err
