"""A file being written is removed or truncated from another worker or node (issue 29): the
writer's settle at close accounts for what the other process took off meanwhile, so usage
equals a disk scan after every round. Before, four rounds left an empty home with ``sp``
saying 4.0 MiB used, and truncates left usage below the disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from tests.server.test_multinode import NODE_ARGS, wait_exact
from tests.server.test_workers import socket_count
from tests.support import Serve, known_hosts, ledger_row, new_user, worker_pids

MiB = 1 << 20


def connect(port: int, hosts: Path, key: Path) -> Any:
    """``asyncssh.connect`` as the user wes: await it or use ``async with``."""
    return asyncssh.connect(
        "127.0.0.1", port, username="wes", client_keys=[str(key)], known_hosts=str(hosts),
        agent_path=None,
    )  # fmt: skip


async def rounds(
    writer: asyncssh.SSHClientConnection,
    other: asyncssh.SSHClientConnection,
    home: Path,
    exact: object,
) -> None:
    """Four rounds: write 3 MiB and fsync, the other side removes (or truncates to 0) the
    file, 2 MiB more are written, close; usage is compared with the disk after each."""
    async with writer.start_sftp_client() as w, other.start_sftp_client() as o:
        for i, how in enumerate(("remove", "truncate", "remove", "truncate")):
            f = await w.open(f"f{i}.bin", "wb")
            await f.write(os.urandom(3 * MiB), 0)
            await f.fsync()
            if how == "remove":
                await o.remove(f"f{i}.bin")
            else:
                await o.truncate(f"f{i}.bin", 0)
            await f.write(os.urandom(2 * MiB), 3 * MiB)
            await f.close()
            assert callable(exact)
            used, files = await exact()
            assert (used, files) == scan_home(str(home)), (i, how)
            kept = (i + 1) // 2  # a truncated file stays, 5 MiB long (3 of them a hole)
            assert (used, files) == (kept * 5 * MiB, kept), (i, how)


async def test_remove_and_truncate_while_another_worker_writes(tmp_path: Path) -> None:
    key = new_user(tmp_path, "wes")
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0")
    home = tmp_path / "data" / "homes" / "wes"
    hosts = known_hosts(tmp_path, server.port)

    async def on_worker() -> tuple[asyncssh.SSHClientConnection, int]:
        before = {pid: socket_count(pid) for pid in workers}
        conn = await connect(server.port, hosts, key)
        grown = [pid for pid in workers if socket_count(pid) > before[pid]]
        return conn, grown[0] if len(grown) == 1 else 0

    async def exact() -> tuple[int, int]:
        used, files, _ = ledger_row(tmp_path, "wes")
        return used, files

    try:
        workers = worker_pids(server.proc.pid)
        writer, where = await on_worker()
        spare = []
        for _ in range(30):  # the kernel picks the worker: connect until another one has it
            other, there = await on_worker()
            if there and there != where:
                break
            spare.append(other)
        else:
            pytest.fail("30 connections all landed on the writer's worker")
        await rounds(writer, other, home, exact)
        for c in (writer, other, *spare):
            c.close()
    finally:
        code, err = server.stop()
    assert code == 0, err


async def test_remove_and_truncate_while_another_node_writes(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFTPD_DB", pg_url)
    key = new_user(tmp_path, "wes")  # in PostgreSQL: SFTPD_DB reaches the admin command
    a, b = Serve(tmp_path, *NODE_ARGS), Serve(tmp_path, *NODE_ARGS)
    home = tmp_path / "data" / "homes" / "wes"

    async def exact() -> tuple[int, int]:
        used, files, _, _ = await wait_exact(pg_url, "wes", home)
        return used, files

    try:
        hosts_a, hosts_b = known_hosts(tmp_path, a.port), tmp_path / "known_hosts_b"
        hosts_b.write_text(hosts_a.read_text().replace(f"]:{a.port} ", f"]:{b.port} "))
        async with connect(a.port, hosts_a, key) as writer, connect(b.port, hosts_b, key) as other:
            await rounds(writer, other, home, exact)
    finally:
        for node in (a, b):
            node.stop()
