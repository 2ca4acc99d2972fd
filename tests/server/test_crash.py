"""kill -9 mid-upload, then restart: usage is reconciled from the disk, nothing leaks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import asyncssh

from sftpd.core.quota import scan_home
from tests.support import Serve, known_hosts, ledger_row, run


async def test_kill_9_mid_upload_then_restart_reconciles(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert (
        run(tmp_path, "user", "add", "carl", "--key", f"{key}.pub", "--quota", "1GiB").returncode
        == 0
    )
    server = Serve(tmp_path, "--no-demo")
    hosts = known_hosts(tmp_path, server.port)
    data = os.urandom(3 * 1024 * 1024)
    conn = await asyncssh.connect(
        "127.0.0.1", server.port, username="carl", client_keys=[str(key)],
        known_hosts=str(hosts), agent_path=None,
    )  # fmt: skip
    sftp = await conn.start_sftp_client()
    async with sftp.open("done.bin", "wb") as f:
        await f.write(data)
    await asyncio.sleep(0.5)  # done.bin's close has settled (coalesced settles wait 0.1 s)
    f = await sftp.open("partial.bin", "wb")
    await f.write(data[: 2 * 1024 * 1024])  # acknowledged, never closed, not settled
    used, _files, reserved = ledger_row(tmp_path, "carl")
    assert reserved > 0  # the in-flight upload holds a reservation
    os.killpg(server.proc.pid, signal.SIGKILL)  # the whole server, every worker
    server.proc.communicate(timeout=30)
    conn.abort()

    home = tmp_path / "data" / "homes" / "carl"
    assert (home / "partial.bin").read_bytes() == data[: 2 * 1024 * 1024]
    restarted = Serve(tmp_path, "--no-demo")
    try:
        assert ledger_row(tmp_path, "carl") == (*scan_home(str(home)), 0)
        conn = await asyncssh.connect(
            "127.0.0.1", restarted.port, username="carl", client_keys=[str(key)],
            known_hosts=str(known_hosts(tmp_path, restarted.port)), agent_path=None,
        )  # fmt: skip
        async with conn, conn.start_sftp_client() as sftp, sftp.open("partial.bin", "r+b") as f:
            await f.write(data[2 * 1024 * 1024 :], 2 * 1024 * 1024)  # resume
        assert (home / "partial.bin").read_bytes() == data
        for _ in range(100):  # the session ends on the server just after the client leaves
            if ledger_row(tmp_path, "carl") == (*scan_home(str(home)), 0):
                break
            await asyncio.sleep(0.03)
        assert ledger_row(tmp_path, "carl") == (*scan_home(str(home)), 0)
    finally:
        code, err = restarted.stop()
    assert code == 0, err
    assert used == 3 * 1024 * 1024  # before the crash only done.bin was settled
    assert "usage reconciled" in err
