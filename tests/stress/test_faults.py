"""Faults: clients and servers killed mid-transfer, SIGTERM, a full disk, a locked database.

What must hold: every acknowledged byte stays on disk, the server frees what the dead
session held, usage equals a scan of the disk, and an interrupted upload resumes to
identical bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from sftpd.server import DRAIN_SECONDS
from tests.stress.conftest import open_fds, report, scale
from tests.support import Serve, Xfer, known_hosts, ledger_row, new_user
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

MiB = 1024 * 1024


def usage_matches_disk(server: LiveServer, user: User, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        usage = server.call(server.service.store.usage(user.name, 0))
        assert usage is not None
        if (usage.used, usage.files, usage.reserved) == (*scan_home(str(user.home)), 0):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def settle(server: LiveServer, connections: int, fds: int, timeout: float = 10.0) -> None:
    """Wait until the server holds no more connections and descriptors than before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(server.service.connections) <= connections and open_fds() <= fds:
            return
        time.sleep(0.05)
    raise AssertionError(
        f"server still holds {len(server.service.connections)} connections"
        f" (was {connections}) and {open_fds()} descriptors (was {fds})"
    )


def kill_when(proc: subprocess.Popen[str], path: Path, at_least: int, size: int) -> int:
    """SIGKILL ``proc`` and its children (sftp runs ssh) once ``path`` has ``at_least``
    bytes; the size it had then."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        have = path.stat().st_size if path.exists() else 0
        if have >= at_least or proc.poll() is not None:
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdin:
        proc.stdin.close()
    have = path.stat().st_size if path.exists() else 0
    assert 0 < have < size, f"the transfer was not interrupted midway ({have} of {size})"
    return have


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = start_live_server(tmp_path_factory.mktemp("faults"), max_connections_per_address=0)
    yield s
    stop_live_server(s)


KILLERS = ["sftp put", "xfer put", "xfer put -j 4", "socket close", "sftp get"]


@pytest.mark.parametrize("killer", KILLERS)
async def test_client_killed_mid_transfer_loses_nothing(
    server: LiveServer, tmp_path: Path, killer: str
) -> None:
    user = server.add_user()
    size = scale(64, 512) * MiB
    data = os.urandom(size)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    remote = user.home / "big.bin"
    xfer = Xfer(tmp_path, f"{user.name}@127.0.0.1:{server.port}", user.key_path, server.known_hosts)
    await asyncio.sleep(0.3)
    conns, fds = len(server.service.connections), open_fds()
    got_bytes = 0  # how much of a killed download arrived

    def throttled_sftp(command: str) -> subprocess.Popen[str]:
        """OpenSSH's sftp at 25 MB/s, so it can be killed midway; its own process group."""
        proc = subprocess.Popen(
            ["sftp", "-l", "200000", "-b", "-", "-P", str(server.port), *server.ssh_options(),
             f"{user.name}@127.0.0.1"],
            stdin=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return proc

    if killer == "sftp put":
        kill_when(throttled_sftp(f"put {local} big.bin"), remote, 4 * MiB, size)
    elif killer.startswith("xfer put"):  # one stream, or segments over four connections
        jobs = "4" if killer.endswith("-j 4") else "1"
        proc = subprocess.Popen(
            xfer.cmd("put", "-j", jobs, "big.bin"), env=xfer.env, cwd=tmp_path, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        watched = remote.with_name(".big.bin.xfer-part") if jobs == "4" else remote
        kill_when(proc, watched, 4 * MiB, size)  # segments go to a part name until complete
        if jobs == "4":
            assert not remote.exists()  # nothing partial under the final name
            final, remote = remote, watched
    elif killer == "socket close":  # the TCP connection dies under an acknowledged write
        conn = await server.connect(user)
        sftp = await conn.start_sftp_client()
        f = await sftp.open("big.bin", "wb")
        await f.write(data[: 5 * MiB], 0)
        conn.abort()
    else:  # "sftp get": the download dies; the server's copy must be untouched
        remote.write_bytes(data)
        got = tmp_path / "got.bin"
        got_bytes = kill_when(throttled_sftp(f"get big.bin {got}"), got, 4 * MiB, size)
        assert hashlib.sha256(remote.read_bytes()).digest() == hashlib.sha256(data).digest()
        # Make the stored usage true: the test put the file there behind sftpd's back.
        from sftpd.reconcile import scan_user

        assert server.call(scan_user(server.service.store, server.settings, user.name)).stored

    await asyncio.to_thread(settle, server, conns, fds)
    partial = remote.stat().st_size
    if killer != "xfer put -j 4":  # segments leave holes; the resume keeps the contiguous part
        same = remote.read_bytes() == data[:partial]  # not in the assert: a 64 MiB diff is slow
        assert same, "the partial file is a prefix of what was sent"
    assert await asyncio.to_thread(usage_matches_disk, server, user)
    if killer != "sftp get":
        result = await asyncio.to_thread(xfer, "--json", "put", "--resume", "big.bin")
        assert result.returncode == 0, result.stderr
        resumed = json.loads(result.stdout)["resumed_from"]
        assert resumed > 0 or killer == "xfer put -j 4"  # killed before a stripe was whole
        done = final if killer == "xfer put -j 4" else remote
        assert hashlib.sha256(done.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert await asyncio.to_thread(usage_matches_disk, server, user)
    await asyncio.to_thread(settle, server, conns, fds)
    report(
        f"client killed: {killer}",
        file_mib=size // MiB,
        kept_mib=round((partial if killer != "sftp get" else got_bytes) / MiB, 1),
        resumed_identical=killer != "sftp get",
        usage_exact=True,
        leaked_fds=open_fds() - fds,
    )


async def writer_task(
    port: int, hosts: Path, key: Path, user: str, name: str, data: bytes, acked: list[int], i: int
) -> None:
    """Upload ``data`` in 1 MiB writes, recording how much the server has acknowledged."""
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username=user, client_keys=[str(key)],
            known_hosts=str(hosts), agent_path=None,
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            f = await sftp.open(name, "wb")
            for offset in range(0, len(data), MiB):
                await f.write(data[offset : offset + MiB], offset)
                acked[i] = offset + len(data[offset : offset + MiB])
    except (asyncssh.Error, OSError):
        pass  # the server went away: that is the point


async def test_server_killed_during_8_uploads_restarts_and_all_resume(tmp_path: Path) -> None:
    key = new_user(tmp_path, "kim")
    n, size = 8, scale(24, 256) * MiB
    blobs = [os.urandom(size) for _ in range(n)]
    for i, b in enumerate(blobs):
        (tmp_path / f"f{i}.bin").write_bytes(b)
    serve = Serve(tmp_path, "--no-demo", "--max-connections-per-address", "0")
    hosts = known_hosts(tmp_path, serve.port)
    acked = [0] * n
    tasks = [
        asyncio.create_task(
            writer_task(serve.port, hosts, key, "kim", f"f{i}.bin", blobs[i], acked, i)
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 60
    while min(acked) < 3 * MiB and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    os.killpg(serve.proc.pid, signal.SIGKILL)
    serve.proc.communicate(timeout=30)
    await asyncio.gather(*tasks)
    home = tmp_path / "data" / "homes" / "kim"
    for i in range(n):
        on_disk = (home / f"f{i}.bin").read_bytes()
        assert len(on_disk) >= acked[i], "an acknowledged byte was lost"
        assert on_disk == blobs[i][: len(on_disk)]
    assert all(a < size for a in acked), "every upload was interrupted"

    with sqlite3.connect(tmp_path / "data" / "sftpd.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restarted = Serve(tmp_path, "--no-demo", "--max-connections-per-address", "0")
    try:
        assert ledger_row(tmp_path, "kim") == (*scan_home(str(home)), 0)
        xfer = Xfer(tmp_path, f"kim@127.0.0.1:{restarted.port}", key, None)
        xfer.base += ["--known-hosts", str(known_hosts(tmp_path, restarted.port))]
        for i in range(n):
            r = await asyncio.to_thread(xfer, "--json", "put", "--resume", f"f{i}.bin")
            assert r.returncode == 0, r.stderr
        for i in range(n):
            assert (home / f"f{i}.bin").read_bytes() == blobs[i]
        for _ in range(100):
            if ledger_row(tmp_path, "kim") == (*scan_home(str(home)), 0):
                break
            await asyncio.sleep(0.05)
        assert ledger_row(tmp_path, "kim") == (*scan_home(str(home)), 0)
    finally:
        code, err = restarted.stop()
    assert code == 0, err
    report(
        "server SIGKILL during uploads",
        uploads=n,
        file_mib=size // MiB,
        acked_mib_at_kill=round(sum(acked) / MiB, 1),
        lost_bytes=0,
        db_integrity="ok",
        resumed_identical=n,
    )


async def test_sigterm_during_transfers_drains_and_exits_0(tmp_path: Path) -> None:
    key = new_user(tmp_path, "tess")
    n, size = 4, scale(256, 1024) * MiB
    blob = os.urandom(size)
    serve = Serve(tmp_path, "--no-demo")
    hosts = known_hosts(tmp_path, serve.port)
    acked = [0] * n
    tasks = [
        asyncio.create_task(writer_task(serve.port, hosts, key, "tess", f"t{i}", blob, acked, i))
        for i in range(n)
    ]
    while min(acked) < 2 * MiB:
        await asyncio.sleep(0.005)
    start = time.monotonic()
    code, err = await asyncio.to_thread(serve.stop, signal.SIGTERM)
    took = time.monotonic() - start
    await asyncio.gather(*tasks)
    assert code == 0, err
    assert took < DRAIN_SECONDS + 5
    home = tmp_path / "data" / "homes" / "tess"
    for i in range(n):
        on_disk = (home / f"t{i}").read_bytes()
        assert len(on_disk) >= acked[i] and on_disk == blob[: len(on_disk)]
    assert ledger_row(tmp_path, "tess") == (*scan_home(str(home)), 0)  # settled, no rescan
    report("SIGTERM during uploads", uploads=n, exit_code=code, seconds_to_exit=round(took, 2))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs to serve from; needs the right to mount (root in a container)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_fails_the_writer_clearly_and_serves_others(small_disk: Path) -> None:
    server = start_live_server(small_disk, max_connections_per_address=0)
    try:
        filler, other = server.add_user(), server.add_user()
        async with server.connect(other) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("keep.txt", "wb") as f:
                await f.write(b"still here\n")
        error = None
        async with server.connect(filler) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("huge.bin", "wb") as f:
                try:
                    for offset in range(0, 64 * MiB, MiB):
                        await f.write(os.urandom(MiB), offset)
                except asyncssh.SFTPError as exc:
                    error = exc
            assert error is not None, "the disk never filled"
            assert "no space" in error.reason.lower()
            async with server.connect(other) as conn2, conn2.start_sftp_client() as sftp2:
                assert await sftp2.listdir(".")
                async with sftp2.open("keep.txt", "rb") as f2:
                    assert await f2.read() == b"still here\n"
                assert (await conn2.run("sp", check=False)).exit_status == 0
                await sftp.remove("huge.bin")  # space comes back ...
                async with sftp2.open("new.bin", "wb") as f3:  # ... and others can write
                    await f3.write(os.urandom(MiB))
        assert await asyncio.to_thread(usage_matches_disk, server, filler)
        assert await asyncio.to_thread(usage_matches_disk, server, other)
    finally:
        stop_live_server(server)
    report("disk full", disk_mib=24, status=error.reason, others_served=True, usage_exact=True)


def hold_write_lock(db: Path, seconds: float, started: threading.Event) -> None:
    conn = sqlite3.connect(db, timeout=1)
    conn.execute("BEGIN EXCLUSIVE")
    started.set()
    time.sleep(seconds)
    conn.rollback()
    conn.close()


@pytest.mark.parametrize("seconds", [1.5, 11.0])
async def test_locked_database_makes_logins_wait_or_fail_cleanly(
    server: LiveServer, seconds: float
) -> None:
    user = server.add_user()
    started = threading.Event()
    locker = threading.Thread(
        target=hold_write_lock, args=(server.settings.data_dir / "sftpd.db", seconds, started)
    )
    locker.start()
    started.wait()
    t0 = time.monotonic()
    try:
        async with server.connect(user) as conn:
            outcome = f"logged in after {time.monotonic() - t0:.1f} s"
            assert (await conn.run("sp", check=False)).exit_status == 0
    except (asyncssh.Error, OSError) as exc:
        outcome = f"refused after {time.monotonic() - t0:.1f} s: {exc}"
    await asyncio.to_thread(locker.join)
    # Reads go on under a write lock (WAL); the connection bookkeeping waits for the lock,
    # up to the busy timeout, then lets the login through rather than lock everyone out.
    assert outcome.startswith("logged in"), outcome
    async with server.connect(user):  # and afterwards all is well
        pass
    with sqlite3.connect(server.settings.data_dir / "sftpd.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    report(f"database locked {seconds:g} s", outcome=outcome, integrity="ok")
