"""SFTP behaviour through asyncssh's client: operations, OpenSSH extensions, leniency, leaks."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import asyncssh
import paramiko
import pytest
from asyncssh.constants import FXP_NAME, FXP_WRITE
from asyncssh.packet import String, UInt64
from asyncssh.sftp import SFTPLimits

from sftpd.ssh.sftp import MAX_READ_LEN
from tests.support.live import LiveServer, User


async def test_put_get_roundtrip_and_listing(live_server: LiveServer, user: User) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("dir")
        async with sftp.open("dir/f.bin", "wb") as f:
            await f.write(data)
        async with sftp.open("dir/f.bin", "rb") as f:
            assert await f.read() == data
        assert sorted(await sftp.listdir("dir")) == [".", "..", "f.bin"]
        assert (await sftp.stat("dir/f.bin")).size == len(data)
    assert (user.home / "dir" / "f.bin").read_bytes() == data


async def test_asyncssh_get_of_a_sparse_file(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    """asyncssh's own ``get`` asks for the data ranges (ranges@asyncssh.com) to skip holes."""
    with open(user.home / "sparse.bin", "wb") as f:
        f.write(b"head")
        f.seek(8 << 20)
        f.write(b"tail")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.get("sparse.bin", str(tmp_path / "got.bin"))
        await sftp.put(str(tmp_path / "got.bin"), "copy.bin")
    data = (user.home / "sparse.bin").read_bytes()
    assert (tmp_path / "got.bin").read_bytes() == data == (user.home / "copy.bin").read_bytes()


async def test_rename_onto_an_existing_file_replaces_it(
    live_server: LiveServer, user: User
) -> None:
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for name, body in (("target", b"old"), ("target.filepart", b"new")):
            async with sftp.open(name, "wb") as f:
                await f.write(body)
        await sftp.rename("target.filepart", "target")  # plain v3 RENAME, like WinSCP
        await sftp.posix_rename("target", "final")
    assert (user.home / "final").read_bytes() == b"new"
    assert sorted(p.name for p in user.home.iterdir()) == ["final"]


async def test_open_without_trunc_resumes_and_append_honours_offsets(
    live_server: LiveServer, user: User
) -> None:
    (user.home / "f").write_bytes(b"0123456789")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("f", "r+b") as f:  # no TRUNC: a resume
            await f.write(b"AB", 4)
        pflags = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND
        async with sftp.open("f", pflags, encoding=None) as f:  # OpenSSH's reput sets APPEND
            await f.write(b"ZZ", 12)  # out of order first
            await f.write(b"XY", 10)
    assert (user.home / "f").read_bytes() == b"0123AB6789XYZZ"


async def test_limits_extension_matches_openssh(live_server: LiveServer, user: User) -> None:
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        packet = await sftp._handler._make_request(b"limits@openssh.com")
        limits = SFTPLimits.decode(packet)
        assert limits.max_packet_len == 262144
        assert limits.max_read_len == 261120
        assert limits.max_write_len == 261120


async def test_reads_are_clamped_to_the_advertised_limit(
    live_server: LiveServer, user: User
) -> None:
    (user.home / "big").write_bytes(os.urandom(1024 * 1024))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        handle = await sftp._handler.open(b"big", asyncssh.FXF_READ, asyncssh.SFTPAttrs())
        data, _ = await sftp._handler.read(handle, 0, 262144)
        assert len(data) == MAX_READ_LEN
        await sftp._handler.close(handle)


async def test_write_with_trailing_padding_is_accepted(live_server: LiveServer, user: User) -> None:
    """rclone 1.60 pads its last WRITE; OpenSSH ignores the padding, so do we."""
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        handler = sftp._handler
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
        handle = await handler.open(b"padded", flags, asyncssh.SFTPAttrs())
        await handler._make_request(
            FXP_WRITE, String(handle), UInt64(0), String(b"payload"), b"\x00stale-bytes"
        )
        await handler.close(handle)
    assert (user.home / "padded").read_bytes() == b"payload"


async def _name_request(sftp: asyncssh.SFTPClient, ext: bytes, arg: bytes) -> bytes:
    handler = sftp._handler
    handler._return_types = {**handler._return_types, ext: FXP_NAME}
    reply = await handler._make_request(ext, String(arg))
    names, _ = cast(tuple[list[asyncssh.SFTPName], bool], reply)
    filename = names[0].filename
    return filename if isinstance(filename, bytes) else filename.encode()


async def test_expand_path_and_home_directory(live_server: LiveServer, user: User) -> None:
    (user.home / "docs").mkdir()
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        assert await _name_request(sftp, b"expand-path@openssh.com", b"~") == b"/"
        assert await _name_request(sftp, b"expand-path@openssh.com", b"~/docs") == b"/docs"
        own = f"~{user.name}/docs".encode()
        assert await _name_request(sftp, b"expand-path@openssh.com", own) == b"/docs"
        assert await _name_request(sftp, b"expand-path@openssh.com", b"~/../..") == b"/"
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await _name_request(sftp, b"expand-path@openssh.com", b"~root/x")
        assert await _name_request(sftp, b"home-directory", user.name.encode()) == b"/"
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await _name_request(sftp, b"home-directory", b"root")


async def test_errors_never_show_a_server_path(
    live_server: LiveServer, user: User, outside: Path
) -> None:
    os.symlink(outside, user.home / "escape")
    server_paths = (str(live_server.settings.data_dir.resolve()), str(outside), str(user.home))
    messages = []
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        ops: tuple[Callable[[], Awaitable[object]], ...] = (
            lambda: sftp.stat("missing/file"),
            lambda: sftp.open("escape/secret.txt"),
            lambda: sftp.listdir("escape"),
            lambda: sftp.readlink("escape"),
            lambda: sftp.remove("nothere"),
            lambda: sftp.mkdir("a/b/c"),
            lambda: sftp.rename("nothere", "x"),
            lambda: sftp.symlink("../../../etc/passwd", "bad"),
            lambda: sftp.open("x" * 300, "wb"),
            lambda: sftp.open("/", "rb"),
        )
        for op in ops:
            with pytest.raises(asyncssh.SFTPError) as info:
                await op()
            messages.append(str(info.value.reason))
        for path in ("/", ".", "..", "escape", "/../.."):
            try:
                messages.append(await sftp.realpath(path))
            except asyncssh.SFTPError as exc:
                messages.append(exc.reason)
    for message in messages:
        for server_path in server_paths:
            assert server_path not in message, message
    assert "permission denied" in messages[1].lower()


async def test_path_outside_the_home_gets_permission_denied(
    live_server: LiveServer, user: User, outside: Path
) -> None:
    os.symlink(outside / "secret.txt", user.home / "evil")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("evil")
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.open("../../outside/secret.txt")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.symlink("../secret.txt", "bad")
    events = await live_server.logs.wait_events("confinement", 2, user=user.name)
    assert len(events) >= 2


async def test_chown_refused_chmod_masks_special_bits(live_server: LiveServer, user: User) -> None:
    (user.home / "f").write_bytes(b"x")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.chmod("f", 0o4777)
        assert (await sftp.stat("f")).permissions & 0o7777 == 0o777
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.chown("f", 54321, 54321)


async def test_hardlink_and_symlink_extensions(live_server: LiveServer, user: User) -> None:
    (user.home / "f").write_bytes(b"data")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.link("f", "hard")
        await sftp.symlink("/f", "soft")
        assert await sftp.readlink("soft") == "f"
        async with sftp.open("soft", "rb") as fh:
            assert await fh.read() == b"data"
    assert os.stat(user.home / "hard").st_ino == os.stat(user.home / "f").st_ino


async def test_many_sessions_of_many_users_at_once(live_server: LiveServer) -> None:
    users = [live_server.add_user() for _ in range(4)]

    async def work(u: User, n: int) -> None:
        async with live_server.connect(u) as conn, conn.start_sftp_client() as sftp:
            body = f"{u.name}-{n}".encode() * 1000
            async with sftp.open(f"f{n}", "wb") as f:
                await f.write(body)
            async with sftp.open(f"f{n}", "rb") as f:
                assert await f.read() == body

    await asyncio.gather(*(work(u, n) for u in users for n in range(3)))
    for u in users:
        assert sorted(p.name for p in u.home.iterdir()) == ["f0", "f1", "f2"]


async def test_sftp_session_ends_with_exit_status_zero(live_server: LiveServer, user: User) -> None:
    """OpenSSH's scp (SFTP mode) exits 1 unless the server sends a status."""
    async with live_server.connect(user) as conn:
        chan, _session = await conn.create_session(
            asyncssh.SSHClientSession, subsystem="sftp", encoding=None
        )
        chan.write(b"\x00\x00\x00\x05\x01\x00\x00\x00\x03")  # INIT, version 3
        chan.write_eof()
        await asyncio.wait_for(chan.wait_closed(), 10)
        assert chan.get_exit_status() == 0


async def test_sftp_channel_closed_before_init_is_cleaned_up(
    live_server: LiveServer, user: User
) -> None:
    async with live_server.connect(user) as conn:
        chan, _session = await conn.create_session(
            asyncssh.SSHClientSession, subsystem="sftp", encoding=None
        )
        chan.write_eof()
        await asyncio.wait_for(chan.wait_closed(), 10)


async def test_symlink_direction_follows_what_each_client_sends(
    live_server: LiveServer, user: User
) -> None:
    """SYMLINK's two paths come in OpenSSH's order (target, link) from OpenSSH, paramiko
    and libssh2 (curl, whose banner names neither: asyncssh's server got it backwards), and
    in the draft's order from asyncssh: each makes ``lnX -> t.txt``."""
    (user.home / "t.txt").write_text("t")
    assert live_server.sftp(user, "ln -s t.txt ln1\n").returncode == 0
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", live_server.port, user.name, key_filename=str(user.key_path),
                   look_for_keys=False, allow_agent=False)  # fmt: skip
    try:
        client.open_sftp().symlink("t.txt", "ln2")
    finally:
        client.close()
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.symlink("t.txt", "ln3")
        await sftp.symlink("missing.txt", "ln4")  # a target that does not exist yet
    curl = shutil.which("curl")
    if curl:  # scripts/test.sh installs it; tests/interop/test_clients.py insists
        url = f"sftp://127.0.0.1:{live_server.port}/~/"
        r = subprocess.run(
            [curl, "-s", "-S", "--insecure", "-u", f"{user.name}:{user.password}", url,
             "-Q", "symlink t.txt ln5", "-o", "/dev/null"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    links = {n: os.readlink(user.home / n) for n in os.listdir(user.home) if n.startswith("ln")}
    assert links == {
        "ln1": "t.txt", "ln2": "t.txt", "ln3": "t.txt", "ln4": "missing.txt",
        **({"ln5": "t.txt"} if curl else {}),
    }  # fmt: skip
