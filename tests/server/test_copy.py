"""Server-side copy (copy-data): byte-identical at every read-size boundary, all or nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from sftpd.ssh.sftp import MAX_READ_LEN
from tests.support.live import LiveServer, User, assert_exact

MiB = 1024 * 1024
# Around the clamp on READ (261,120), asyncssh's copy block (262,144) and a long file.
SIZES = [0, 1, MAX_READ_LEN - 1, MAX_READ_LEN, MAX_READ_LEN + 1, 262_144, 262_145, 10 * MiB + 7]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _write(sftp: asyncssh.SFTPClient, name: str, data: bytes) -> None:
    async with sftp.open(name, "wb") as f:
        await f.write(data)


async def _upload(server: LiveServer, user: User, name: str, data: bytes) -> None:
    async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await _write(sftp, name, data)


async def test_asyncssh_copy_data_is_byte_identical_at_every_boundary(
    live_server: LiveServer, user: User
) -> None:
    blobs = {n: os.urandom(n) for n in SIZES}
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for n, data in blobs.items():
            await _write(sftp, f"s{n}", data)
        for n in SIZES:
            await sftp.remote_copy(f"s{n}", f"c{n}")
    for n, data in blobs.items():
        copied = (user.home / f"c{n}").read_bytes()
        assert len(copied) == n, f"copy of {n} bytes has {len(copied)}"
        assert _sha(copied) == _sha(data)
    assert_exact(live_server, user)


async def test_openssh_sftp_cp_is_byte_identical_at_every_boundary(
    live_server: LiveServer, user: User
) -> None:
    blobs = {n: os.urandom(n) for n in SIZES}
    for n, data in blobs.items():
        await _upload(live_server, user, f"s{n}", data)
    batch = "".join(f"cp s{n} c{n}\n" for n in SIZES)
    r = await asyncio.to_thread(live_server.sftp, user, batch)
    assert r.returncode == 0, r.stderr
    for n, data in blobs.items():
        assert _sha((user.home / f"c{n}").read_bytes()) == _sha(data), n
    assert_exact(live_server, user)


@pytest.mark.parametrize("offset", [0, 1, MAX_READ_LEN, 262_144])
async def test_range_copy_at_the_boundaries(
    live_server: LiveServer, user: User, offset: int
) -> None:
    data = os.urandom(3 * MiB + 5)
    lengths = [1, MAX_READ_LEN - 1, MAX_READ_LEN, MAX_READ_LEN + 1, 262_145, 2 * MiB]
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await _write(sftp, "src", data)
        await _write(sftp, "dst", b"x" * 100)
        async with sftp.open("src", "rb") as src, sftp.open("dst", "r+b") as dst:
            for i, length in enumerate(lengths):
                dst_offset = 50 + i * 7
                await sftp.remote_copy(src, dst, src_offset=offset, src_length=length,
                                       dst_offset=dst_offset)  # fmt: skip
                got = (user.home / "dst").read_bytes()
                assert got[dst_offset : dst_offset + length] == data[offset : offset + length]
                assert got[:50] == b"x" * 50  # what lies before the range is kept
        # a length past the end copies up to the end, as a read would
        await sftp.remote_copy("src", "tail", src_offset=len(data) - 10, src_length=MiB)
    assert (user.home / "tail").read_bytes() == data[-10:]
    assert_exact(live_server, user)


async def test_a_copy_that_does_not_fit_writes_nothing(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=MiB)
    data = os.urandom(600_000)
    await _upload(live_server, user, "big", data)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPError) as err:
            await sftp.remote_copy("big", "big.cp")
        assert "quota exceeded" in str(err.value.reason)
        # the server keeps serving and the user's files are untouched
        assert (await sftp.stat("big")).size == len(data)
    assert (user.home / "big.cp").stat().st_size == 0  # created by the client's OPEN, no data
    assert (user.home / "big").read_bytes() == data
    assert_exact(live_server, user)


async def test_openssh_sftp_cp_over_quota_says_so(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=MiB)
    await _upload(live_server, user, "big", os.urandom(600_000))
    r = await asyncio.to_thread(live_server.sftp, user, "cp big big.cp\n")
    assert r.returncode != 0
    assert "quota exceeded" in r.stderr
    assert (user.home / "big.cp").stat().st_size == 0
    assert scan_home(str(user.home)) == (600_000, 2)
    assert_exact(live_server, user)


async def test_copy_onto_itself_is_refused(live_server: LiveServer, user: User) -> None:
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await _write(sftp, "f", b"abc")
        async with sftp.open("f", "r+b") as f, sftp.open("f", "rb") as g:
            for src, dst in ((f, f), (g, f)):  # one handle, or two handles on one file
                with pytest.raises(asyncssh.SFTPError, match="onto itself"):
                    await sftp.remote_copy(src, dst, dst_offset=1)
    assert (user.home / "f").read_bytes() == b"abc"
