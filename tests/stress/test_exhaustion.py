"""Resource exhaustion: thousands of handles, a huge directory, a 10 GiB sparse file."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from sftpd.ssh.sftp import MAX_OPEN_HANDLES
from tests.stress.conftest import open_fds, report, scale
from tests.support.live import LiveServer, start_live_server, stop_live_server

GiB = 1024**3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = start_live_server(tmp_path_factory.mktemp("exhaust"), max_connections_per_address=0)
    yield s
    stop_live_server(s)


async def test_handle_limit_per_session(server: LiveServer) -> None:
    user = server.add_user()
    for i in range(8):
        (user.home / f"d{i}").mkdir()
    (user.home / "f").write_bytes(b"x")
    fds_before = open_fds()
    tried = 3000
    async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
        handler = sftp._handler
        opened, refusals = [], []
        for i in range(tried):
            try:
                if i % 2:
                    opened.append(("file", await handler.open(b"f", 1, asyncssh.SFTPAttrs())))
                else:
                    opened.append(("dir", await handler.opendir(f"d{i % 8}".encode())))
            except asyncssh.SFTPFailure as exc:
                refusals.append(exc.reason)
        assert len(opened) == MAX_OPEN_HANDLES
        assert refusals and all("too many open handles" in r for r in refusals)
        # Another session of the same user is not affected by this one's limit.
        async with server.connect(user) as conn2, conn2.start_sftp_client() as sftp2:
            assert await sftp2.stat("f")
        for _, handle in opened[:10]:
            await handler.close(handle)
        async with sftp.open("f", "rb") as f:  # freed handles are usable again
            assert await f.read() == b"x"
    for _ in range(100):
        if open_fds() <= fds_before:
            break
        await asyncio.sleep(0.05)
    assert open_fds() <= fds_before, "closing the session freed every descriptor"
    report(
        "open handles",
        tried=tried,
        granted=MAX_OPEN_HANDLES,
        refused=len(refusals),
        leaked_fds=open_fds() - fds_before,
    )


async def test_huge_directory_lists_in_pages_without_stalling_others(server: LiveServer) -> None:
    user, other = server.add_user(), server.add_user()
    entries = scale(30_000, 100_000)
    big = user.home / "big"
    big.mkdir()
    for i in range(entries):
        os.close(os.open(big / f"entry-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    latencies: list[float] = []
    done = asyncio.Event()

    async def prober() -> None:
        async with server.connect(other) as conn, conn.start_sftp_client() as sftp:
            while not done.is_set():
                t0 = time.perf_counter()
                await sftp.stat(".")
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

    probe = asyncio.create_task(prober())
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
        names = await sftp.listdir("big")
    took = time.perf_counter() - t0
    done.set()
    await probe
    assert len(names) == entries + 2  # with . and ..
    worst = max(latencies)
    assert worst < 1.0, f"another session waited {worst:.2f} s for a stat"
    report(
        "huge directory",
        entries=entries,
        list_seconds=round(took, 1),
        other_session_stats=len(latencies),
        other_stat_median_ms=round(statistics.median(latencies) * 1000, 1),
        other_stat_max_ms=round(worst * 1000, 1),
    )


async def test_ten_gib_sparse_file_and_absurd_offsets(server: LiveServer) -> None:
    small = server.add_user(quota=5 * GiB)
    roomy = server.add_user(quota=20 * GiB)
    async with server.connect(small) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("sparse", "wb") as f:
            with pytest.raises(asyncssh.SFTPError) as refused:
                await f.write(b"!", 10 * GiB - 1)  # usage counts the size a file claims
    async with server.connect(roomy) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("sparse", "wb") as f:
            await f.write(b"!", 10 * GiB - 1)
        attrs = await sftp.stat("sparse")
        assert attrs.size == 10 * GiB
        async with sftp.open("sparse", "rb") as f:
            assert await f.read(4096, 5 * GiB) == b"\0" * 4096
            assert await f.read(1, 10 * GiB - 1) == b"!"
            assert await f.read(4096, 2**62) == b""  # far past the end: EOF, not an error
        async with sftp.open("x", "wb") as f:
            with pytest.raises(asyncssh.SFTPError):
                await f.write(b"?", 2**63 - 1)  # past what any filesystem can hold
    assert (roomy.home / "sparse").stat().st_blocks * 512 < 1024 * 1024  # still sparse
    for _ in range(100):
        usage = server.call(server.service.store.usage(roomy.name, 0))
        assert usage is not None
        if (usage.used, usage.files, usage.reserved) == (*scan_home(str(roomy.home)), 0):
            break
        await asyncio.sleep(0.05)
    assert usage is not None and (usage.used, usage.files) == scan_home(str(roomy.home))
    report(
        "10 GiB sparse file",
        refused_over_quota=refused.value.reason,
        apparent_gib=10,
        allocated_kib=(roomy.home / "sparse").stat().st_blocks // 2,
        usage_exact=True,
    )


class _RawSftp(asyncssh.SSHClientSession[bytes]):
    """The client end of an SFTP channel, packets by hand."""

    def __init__(self) -> None:
        self.buf = b""
        self.more = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buf += data
        self.more.set()

    async def packet(self) -> bytes:
        while len(self.buf) < 4 or len(self.buf) < 4 + int.from_bytes(self.buf[:4], "big"):
            self.more.clear()
            await self.more.wait()
        n = int.from_bytes(self.buf[:4], "big")
        packet, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
        return packet


def _sftp_packet(kind: int, body: bytes) -> bytes:
    return (len(body) + 1).to_bytes(4, "big") + bytes([kind]) + body


async def _on_loop(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _queued_replies(server: LiveServer) -> int:
    """Bytes the server's channels hold for clients that do not take them."""
    return sum(
        chan._send_buf_len
        for conn in server.service.connections
        if conn._conn is not None
        for chan in conn._conn._channels.values()
    )


async def test_a_client_that_takes_no_replies_cannot_make_the_server_queue_them(
    server: LiveServer,
) -> None:
    """READ requests of 33 bytes each ask for 256 KiB replies: a client that stops opening
    its window must stop the server reading requests, not make it queue 100 MiB of replies
    (a review found 2,000 of them pinning 512 MB). Then it takes them all, intact."""
    user = server.add_user()
    size, count = 256 * 1024, 400
    data = os.urandom(4 * 1024 * 1024)
    (user.home / "src.bin").write_bytes(data)
    async with server.connect(user) as conn:
        chan, sftp = await conn.create_session(
            _RawSftp, subsystem="sftp", encoding=None, window=65536
        )
        chan.write(_sftp_packet(1, (3).to_bytes(4, "big")))  # INIT
        await sftp.packet()
        name = b"/src.bin"
        chan.write(_sftp_packet(3, (1).to_bytes(4, "big") + len(name).to_bytes(4, "big") + name
                                + (1).to_bytes(4, "big") + bytes(4)))  # fmt: skip
        reply = await sftp.packet()
        handle = reply[9 : 9 + int.from_bytes(reply[5:9], "big")]
        chan.pause_reading()  # no more window adjusts from here
        for i in range(count):
            offset = (i * size) % len(data)
            chan.write(_sftp_packet(5, (10 + i).to_bytes(4, "big") + len(handle).to_bytes(4, "big")
                                    + handle + offset.to_bytes(8, "big")
                                    + size.to_bytes(4, "big")))  # fmt: skip
        # The server must reach its high-water mark (replies held back) and then stay
        # bounded: without backpressure it passes 4 MiB within milliseconds (~100 MiB).
        deadline, held = time.monotonic() + 1.0, False
        while time.monotonic() < deadline:
            queued = server.call(_on_loop(_queued_replies, server))
            assert queued < 4 * 1024 * 1024, queued
            held = held or queued >= 64 * 1024
            await asyncio.sleep(0.01)
        assert held, "the server never queued a reply"
        chan.resume_reading()
        for i in range(count):
            reply = await sftp.packet()
            assert reply[0] == 103 and int.from_bytes(reply[1:5], "big") == 10 + i  # DATA
            offset = (i * size) % len(data)
            got = reply[9:]  # as much as the server's read limit gives
            assert got and got == data[offset : offset + len(got)]
        chan.close()
