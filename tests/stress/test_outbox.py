"""The outbox under faults: a receiver down for the first half of the uploads and the server
SIGKILLed in the middle, then every upload a client saw succeed is delivered, each event
once per id (a repeat only with the same id), none lost."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import time
from pathlib import Path

import asyncssh
import pytest

from tests.stress.conftest import report, scale
from tests.support import Serve, known_hosts, new_user
from tests.support.receiver import Receiver, wait_until

UPLOADS = scale(300, 2000)


def config(tmp: Path, url: str) -> Path:
    path = tmp / "sftpd.toml"
    path.write_text(
        '[server]\nupload_mode = "atomic"\n\n'
        f'[[hooks]]\nevents = ["upload"]\nurl = "{url}"\ntimeout = 5\nbackoff_max = 1\n'
    )
    return path


async def upload_all(tmp: Path, key: Path, ports: list[int], done: set[str],
                     kill_at: int, kill: asyncio.Event) -> None:  # fmt: skip
    """Upload f0..fN, reconnecting after the server dies; ``done``: closes acknowledged."""
    i = 0
    while i < UPLOADS:
        try:
            async with asyncssh.connect(
                "127.0.0.1", ports[-1], username="kim", client_keys=[str(key)],
                known_hosts=str(known_hosts(tmp, ports[-1])), agent_path=None,
            ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
                while i < UPLOADS:
                    name = f"/f{i}"
                    async with sftp.open(name, "wb") as f:
                        await f.write(os.urandom(512))
                    done.add(name)
                    i += 1
                    if i == kill_at:
                        kill.set()
        except (OSError, asyncssh.Error):
            i += 1  # the one in flight may or may not be recorded: not counted either way
            await asyncio.sleep(0.2)


async def test_a_receiver_down_and_a_killed_server_lose_no_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(down=True)
    monkeypatch.setenv("SFTPD_CONFIG", str(config(tmp_path, receiver.url)))
    key = new_user(tmp_path, "kim")
    args = ("--no-demo", "--workers", "2", "--log-level", "error")
    server = Serve(tmp_path, *args)
    ports = [server.port]
    done: set[str] = set()
    kill = asyncio.Event()
    job = asyncio.ensure_future(upload_all(tmp_path, key, ports, done, int(UPLOADS * 0.6), kill))
    try:
        while len(done) < UPLOADS // 2:
            await asyncio.sleep(0.05)
        receiver.down = False  # back for the second half
        await kill.wait()
        os.killpg(server.proc.pid, signal.SIGKILL)  # the parent and both workers, mid-stream
        server.proc.wait()
        server = Serve(tmp_path, *args)
        ports.append(server.port)
        await job
        start = time.monotonic()
        await asyncio.to_thread(
            wait_until, lambda: done <= {e["path"] for e in receiver.events()}, "lost", 120
        )
        drained = time.monotonic() - start
        db = tmp_path / "data" / "sftpd.db"  # until none is pending: no repeat can come

        def pending() -> int:
            with sqlite3.connect(db) as c:
                return int(c.execute("SELECT count(*) FROM deliveries WHERE state <> 'delivered'")
                           .fetchone()[0])  # fmt: skip

        await asyncio.to_thread(wait_until, lambda: pending() == 0, "still pending", 60)
    finally:
        job.cancel()
        server.stop()
        receiver.close()
    by_id: dict[str, set[str]] = collections.defaultdict(set)
    for event in receiver.events():
        by_id[event["id"]].add(event["path"])
    assert all(len(paths) == 1 for paths in by_id.values())  # one id, one event
    per_path = collections.Counter(p for paths in by_id.values() for p in paths)
    assert all(n == 1 for n in per_path.values()), "an upload got two ids"
    deliveries = collections.Counter(e["id"] for e in receiver.events())
    repeats = sum(n - 1 for n in deliveries.values())
    report("outbox_fault", uploads=UPLOADS, acknowledged=len(done), delivered_ids=len(by_id),
           repeats_same_id=repeats, attempts=receiver.attempts,
           seconds_to_drain=round(drained, 1))  # fmt: skip
    assert len(done) >= UPLOADS - 3
