"""Quota claims flow back (issue 29): room one worker reserved and does not use goes back to
the user's pool, after a second idle or at once when another worker waits for it, so a
long-lived session on one worker cannot starve the others; a held claim never refuses a
new file under a file limit."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh

from sftpd.core.quota import scan_home
from sftpd.store import folder_account
from tests.server.test_folders import add_folder, mount
from tests.support import Serve, known_hosts, ledger_row, new_user, worker_pids
from tests.support.live import LiveServer, assert_exact

MiB = 1 << 20


def reserved(server: LiveServer, account: str) -> int:
    u = server.call(server.service.store.usage(account, server.settings.default_quota))
    assert u is not None
    return u.reserved


async def test_an_unused_claim_goes_back_while_the_session_lives(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=100 * MiB)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("f.bin", "wb") as f:
            await f.write(os.urandom(MiB))
            assert reserved(live_server, user.name) > 0  # a claim, held while it writes
        deadline = time.monotonic() + 4  # CLAIM_IDLE (1 s) and a poll, with room to spare
        while reserved(live_server, user.name) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert reserved(live_server, user.name) == 0
        assert_exact(live_server, user)


async def test_a_held_claim_does_not_refuse_a_new_file_under_a_file_limit(
    live_server: LiveServer,
) -> None:
    """Found by the hostile review: a folder of 1 MiB with --max-files, one session's claim
    made every other session's new file "quota exceeded: 11 B used of 1.0 MiB"."""
    user = live_server.add_user()
    add_folder(live_server, "limited", quota=MiB)
    mount(live_server, user, "/lim", "limited")
    live_server.call(live_server.service.store.set_max_files(folder_account("limited"), 10))
    async with live_server.connect(user) as a, a.start_sftp_client() as one:
        async with live_server.connect(user) as b, b.start_sftp_client() as two:
            async with one.open("/lim/a.txt", "wb") as f:
                await f.write(b"hello world")  # claims what is left of the folder's quota
                async with two.open("/lim/b.txt", "wb") as g:
                    await g.write(b"x")


async def test_a_long_lived_session_does_not_starve_the_other_workers(tmp_path: Path) -> None:
    """Quota 20 MiB, four workers: a session writes 9 MiB and keeps a file open; six
    one-file uploads of 1 MiB from new connections (on the other workers, mostly) all
    land at once, and usage is exact after."""
    key = new_user(tmp_path, "sam", quota=str(20 * MiB))
    server = Serve(tmp_path, "--no-demo", "--workers", "4", "--max-sessions-per-user", "0")
    hosts = known_hosts(tmp_path, server.port)

    def connect() -> asyncssh.SSHClientConnection:
        return asyncssh.connect(  # type: ignore[return-value]
            "127.0.0.1", server.port, username="sam", client_keys=[str(key)],
            known_hosts=str(hosts), agent_path=None,
        )  # fmt: skip

    try:
        assert len(worker_pids(server.proc.pid)) == 4
        async with connect() as holder, holder.start_sftp_client() as sftp:
            kept = await sftp.open("kept.bin", "wb")
            for i in range(9):
                await kept.write(os.urandom(MiB), i * MiB)
            for i in range(6):
                async with connect() as conn, conn.start_sftp_client() as other:
                    async with other.open(f"p{i}.bin", "wb") as f:
                        await f.write(os.urandom(MiB))
            await kept.close()
        home = tmp_path / "data" / "homes" / "sam"
        deadline = time.monotonic() + 5
        while ledger_row(tmp_path, "sam")[2] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        used, files, held = ledger_row(tmp_path, "sam")
        assert (used, files) == scan_home(str(home)) == (15 * MiB, 7)
        assert held == 0
    finally:
        code, err = server.stop()
    assert code == 0, err
