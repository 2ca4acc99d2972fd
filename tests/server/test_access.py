"""Access control through real clients: permissions, path overrides, addresses, expiry, pacing."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.support.live import LiveServer, User

MiB = 1 << 20


def snapshot(home: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below ``home`` with its mode, size and mtime: "nothing changed" is equality."""
    out = {}
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), home)] = (
                st.st_mode, st.st_size, st.st_mtime_ns,
            )  # fmt: skip
    return out


@pytest.fixture
def reader(live_server: LiveServer) -> User:
    """A read-only user (list,download) with a few files, a directory and an empty one."""
    user = live_server.add_user()
    (user.home / "docs").mkdir()
    (user.home / "docs" / "a.txt").write_text("alpha\n")
    (user.home / "empty").mkdir()
    live_server.set_access(user, permissions="list,download")
    return user


WRITE_VERBS = [
    "put {local} docs/new.txt",
    "put {local} docs/a.txt",
    "rm docs/a.txt",
    "mkdir made",
    "rmdir empty",
    "rename docs/a.txt docs/b.txt",
    "chmod 600 docs/a.txt",
    "symlink docs/a.txt link",
    "ln docs/a.txt hard",
]


def test_read_only_user_with_openssh_sftp_and_scp(
    live_server: LiveServer, reader: User, tmp_path: Path
) -> None:
    local = tmp_path / "local.txt"
    local.write_text("from outside\n")
    before = snapshot(reader.home)
    ok = live_server.sftp(reader, f"ls -l docs\nget docs/a.txt {tmp_path}/got.txt\n")
    assert ok.returncode == 0, ok.stderr
    assert "a.txt" in ok.stdout and (tmp_path / "got.txt").read_text() == "alpha\n"
    for verb in WRITE_VERBS:
        r = live_server.sftp(reader, verb.format(local=local) + "\n")
        assert r.returncode != 0, verb
        assert "Permission denied" in r.stdout + r.stderr, (verb, r.stderr)
    for mode in ([], ["-O"]):  # SFTP mode and the legacy scp protocol
        up = live_server.scp(*mode, str(local), live_server.remote(reader, "docs/scp.txt"))
        assert up.returncode != 0 and "ermission denied" in up.stderr, (mode, up.stderr)
        down = live_server.scp(
            *mode, live_server.remote(reader, "docs/a.txt"), str(tmp_path / f"scp{len(mode)}")
        )
        assert down.returncode == 0, (mode, down.stderr)
        assert (tmp_path / f"scp{len(mode)}").read_text() == "alpha\n"
    assert snapshot(reader.home) == before
    refusals = live_server.logs.events("permission")
    assert any(r.get("user") == reader.name and "not allowed in" in r["reason"] for r in refusals)


def test_read_only_user_with_paramiko(
    live_server: LiveServer, reader: User, tmp_path: Path
) -> None:
    before = snapshot(reader.home)
    transport = paramiko.Transport(("127.0.0.1", live_server.port))
    try:
        key = paramiko.Ed25519Key.from_private_key_file(str(live_server.client_key))
        transport.connect(username=reader.name, pkey=key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        assert sorted(sftp.listdir("/")) == ["docs", "empty"]
        sftp.get("docs/a.txt", str(tmp_path / "p.txt"))
        assert (tmp_path / "p.txt").read_text() == "alpha\n"
        attempts: list[Callable[[], object]] = [
            lambda: sftp.put(str(tmp_path / "p.txt"), "docs/p.txt"),
            lambda: sftp.open("docs/a.txt", "a").write(b"more"),
            lambda: sftp.remove("docs/a.txt"),
            lambda: sftp.mkdir("made"),
            lambda: sftp.rmdir("empty"),
            lambda: sftp.posix_rename("docs/a.txt", "docs/b.txt"),
            lambda: sftp.utime("docs/a.txt", (1, 1)),
        ]
        for attempt in attempts:
            with pytest.raises(PermissionError):
                attempt()
    finally:
        transport.close()
    assert snapshot(reader.home) == before


async def test_path_override_longest_wins_and_says_where(
    live_server: LiveServer, user: User
) -> None:
    (user.home / "reports").mkdir()
    (user.home / "reports" / "q1.txt").write_text("numbers\n")
    (user.home / "reports" / "open").mkdir()
    live_server.set_access(user, paths=(("/reports", "list,download"), ("/reports/open", "all")))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied) as refused:
            await sftp.open("/reports/new.txt", "wb")
        assert refused.value.reason == "permission denied: upload not allowed in /reports"
        async with sftp.open("/mine.txt", "wb") as f:  # the user's own set: everything
            await f.write(b"mine")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="rename not allowed in /reports"):
            await sftp.rename("/mine.txt", "/reports/mine.txt")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="delete not allowed in /reports"):
            await sftp.remove("/reports/q1.txt")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="mkdir not allowed in /reports"):
            await sftp.mkdir("/reports/sub")
        await sftp.rename("/mine.txt", "/reports/open/mine.txt")  # the longer path allows it
        async with sftp.open("/reports/q1.txt", "rb") as f:
            assert await f.read() == b"numbers\n"
        # A symlink does not carry a write past the rules: they apply where the path leads.
        await sftp.symlink("/reports", "/r")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="upload not allowed in /reports"):
            await sftp.open("/r/sneaky.txt", "wb")
    assert not (user.home / "reports" / "sneaky.txt").exists()
    assert (user.home / "reports" / "open" / "mine.txt").read_bytes() == b"mine"


def test_upload_only_drop_box_and_exec_checksums(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    """Upload but never read back: not by SFTP, not by scp, not by a checksum command."""
    (user.home / "old.txt").write_text("already here\n")
    live_server.set_access(user, permissions="upload")
    local = tmp_path / "in.txt"
    local.write_text("dropped\n")
    put = live_server.sftp(user, f"put {local} in.txt\n")
    assert put.returncode == 0, put.stderr
    assert (user.home / "in.txt").read_text() == "dropped\n"
    again = live_server.sftp(user, f"put {local} old.txt\n")  # no overwrite
    assert again.returncode != 0 and "Permission denied" in again.stdout + again.stderr
    assert (user.home / "old.txt").read_text() == "already here\n"
    assert "Couldn't read directory: Permission denied" in live_server.sftp(user, "ls\n").stderr
    get = live_server.scp(live_server.remote(user, "in.txt"), str(tmp_path / "back.txt"))
    assert get.returncode != 0 and not (tmp_path / "back.txt").exists()
    digest = live_server.ssh(user, "sha256sum", "in.txt")
    assert digest.returncode == 1
    assert digest.stderr.strip() == "sha256sum: in.txt: Permission denied"


async def test_a_change_reaches_running_sessions(live_server: LiveServer, user: User) -> None:
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/before")
        await asyncio.to_thread(live_server.set_access, user, permissions="list,download")
        deadline = time.monotonic() + 10
        refused = False
        for n in range(10_000):
            try:
                await sftp.mkdir(f"/d{n}")
            except asyncssh.SFTPPermissionDenied:
                refused = True
                break
            assert time.monotonic() < deadline, "the change never reached the session"
            await asyncio.sleep(0.05)
        assert refused
        await asyncio.to_thread(live_server.set_access, user, permissions=None)
        deadline = time.monotonic() + 10
        while True:
            try:
                await sftp.mkdir("/after")
                break
            except asyncssh.SFTPPermissionDenied:
                assert time.monotonic() < deadline, "the change back never reached the session"
                await asyncio.sleep(0.05)
    assert (user.home / "after").is_dir()


def _login_refusals(live_server: LiveServer, user: User) -> list[str]:
    return [
        str(r.get("reason"))
        for r in live_server.logs.events("login")
        if r.get("user") == user.name and r.get("outcome") == "failed"
    ]


def test_allowed_addresses_and_expiry(live_server: LiveServer, user: User) -> None:
    live_server.set_access(user, allowed_from=("10.0.0.0/8", "2001:db8::/32"))
    assert live_server.sftp(user, "pwd\n").returncode != 0
    assert "address not allowed" in _login_refusals(live_server, user)
    live_server.set_access(user, allowed_from=("10.0.0.0/8", "127.0.0.0/8"))
    assert live_server.sftp(user, "pwd\n").returncode == 0
    live_server.set_access(user, expires_at=time.time() - 1)
    assert live_server.sftp(user, "pwd\n").returncode != 0
    assert "account expired" in _login_refusals(live_server, user)
    live_server.set_access(user, expires_at=time.time() + 3600)
    assert live_server.sftp(user, "pwd\n").returncode == 0


async def test_bandwidth_is_paced(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    """10 MiB up at 2 MiB/s takes 5 s (within 20%); two sessions share one rate."""
    live_server.set_access(user, upload_bps=2 * MiB, download_bps=4 * MiB)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 * MiB))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        start = time.monotonic()
        await sftp.put(str(big), "big.bin")
        up = time.monotonic() - start
        start = time.monotonic()
        await sftp.get("big.bin", str(tmp_path / "back.bin"))
        down = time.monotonic() - start
    assert 4.0 <= up <= 6.0, up
    assert 2.0 <= down <= 3.75, down
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(3 * MiB))

    async def upload(name: str) -> None:
        async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(small), name)

    start = time.monotonic()
    await asyncio.gather(upload("one.bin"), upload("two.bin"))
    assert time.monotonic() - start >= 2.8  # 6 MiB at one shared 2 MiB/s
