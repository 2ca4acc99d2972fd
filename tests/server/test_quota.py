"""Quotas through a live server: usage stays equal to a disk scan; limits hold under races."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import asyncssh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftpd.core.quota import scan_home
from tests.support.live import LiveServer, User, assert_exact, live_usage

MiB = 1024 * 1024


# -- property: any sequence of operations keeps live usage == scan ---------------------

NAMES = st.sampled_from(["a", "b", "d/c", "d/e"])
SIZES = st.integers(min_value=0, max_value=300_000)
OPS = st.one_of(
    st.tuples(st.just("write"), NAMES, st.integers(0, 400_000), SIZES),
    st.tuples(st.just("sparse"), NAMES, st.integers(1 << 20, 1 << 26), st.integers(1, 5000)),
    st.tuples(st.just("trunc_open"), NAMES, SIZES),
    st.tuples(st.just("setstat"), NAMES, st.integers(0, 1 << 22)),
    st.tuples(st.just("fsetstat"), NAMES, st.integers(0, 1 << 22)),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("rename"), NAMES, NAMES),
    st.tuples(st.just("posix_rename"), NAMES, NAMES),
    st.tuples(st.just("copy"), NAMES, NAMES),
    st.tuples(st.just("symlink"), NAMES, NAMES),
    st.tuples(st.just("hardlink"), NAMES, NAMES),
    st.tuples(st.just("broken_upload"), NAMES, SIZES),
    st.tuples(st.just("two_handles"), NAMES, SIZES, SIZES),
)


async def apply(server: LiveServer, user: User, sftp: asyncssh.SFTPClient, op: tuple) -> None:  # type: ignore[type-arg]
    kind, name, *args = op
    try:
        if kind == "write":
            offset, size = args
            async with sftp.open(name, "r+b" if await sftp.exists(name) else "wb") as f:
                await f.write(os.urandom(size), offset)
        elif kind == "sparse":
            offset, size = args
            async with sftp.open(name, "ab") as f:
                await f.write(b"x" * size, offset)
        elif kind == "trunc_open":
            async with sftp.open(name, "wb") as f:
                await f.write(os.urandom(args[0]))
        elif kind == "setstat":
            await sftp.truncate(name, args[0])
        elif kind == "fsetstat":
            async with sftp.open(name, "r+b") as f:
                await f.truncate(args[0])
        elif kind == "remove":
            await sftp.remove(name)
        elif kind == "rename":
            await sftp.rename(name, args[0])
        elif kind == "posix_rename":
            await sftp.posix_rename(name, args[0])
        elif kind == "copy":
            async with sftp.open(name, "rb") as src, sftp.open(args[0], "wb") as dst:
                await sftp.remote_copy(src, dst)  # the copy-data extension
        elif kind == "symlink":
            await sftp.symlink(name, args[0])
        elif kind == "hardlink":
            await sftp.link(name, args[0])
        elif kind == "broken_upload":
            async with server.connect(user) as conn2:
                sftp2 = await conn2.start_sftp_client()
                f = await sftp2.open(name, "wb")
                await f.write(os.urandom(args[0]))
                conn2.abort()  # no CLOSE: the server must settle on its own
            await asyncio.sleep(0.2)
        elif kind == "two_handles":
            a, b = args
            async with sftp.open(name, "wb") as f1, sftp.open(name, "r+b") as f2:
                await f1.write(b"1" * a, 0)
                await f2.write(b"2" * b, 0)
    except (asyncssh.SFTPError, OSError):
        pass  # refused operations (missing file, rename onto a dir...) must not drift either


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=12))
def test_live_usage_equals_a_scan_after_every_operation(live_server: LiveServer, ops) -> None:  # type: ignore[no-untyped-def]
    user = live_server.add_user(quota=0)
    (user.home / "d").mkdir()

    async def run() -> None:
        async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
            for op in ops:
                await apply(live_server, user, sftp, op)
                await asyncio.sleep(0)  # let a dropped session's cleanup finish
                for _ in range(50):
                    if live_usage(live_server, user) == scan_home(str(user.home)):
                        break
                    await asyncio.sleep(0.02)
                assert live_usage(live_server, user) == scan_home(str(user.home)), op

    asyncio.run(run())


# -- enforcement -----------------------------------------------------------------------


async def test_write_over_quota_fails_with_a_clear_status(
    live_server: LiveServer,
) -> None:
    user = live_server.add_user(quota=3 * MiB)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("f", "wb") as f:
            await f.write(b"x" * (2 * MiB))
            with pytest.raises(asyncssh.SFTPFailure, match="quota exceeded"):
                await f.write(b"y" * (2 * MiB), 2 * MiB)
            await f.write(b"z" * MiB, 2 * MiB)  # exactly up to the quota is fine
    assert (user.home / "f").stat().st_size == 3 * MiB
    assert_exact(live_server, user)
    events = await live_server.logs.wait_events("quota", 1, user=user.name)
    assert "quota exceeded" in events[0]["reason"]


async def test_sftp_v6_clients_get_quota_exceeded_code(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=MiB)
    async with live_server.connect(user) as conn, conn.start_sftp_client(sftp_version=6) as sftp:
        async with sftp.open("f", "wb") as f:
            with pytest.raises(asyncssh.SFTPError) as info:
                await f.write(b"x" * (2 * MiB))
    assert info.value.code in (asyncssh.FX_QUOTA_EXCEEDED, asyncssh.FX_FAILURE)
    assert "quota exceeded" in info.value.reason


async def test_upload_is_refused_at_open_when_already_full(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=MiB)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("full", "wb") as f:
            await f.write(b"x" * MiB)
        with pytest.raises(asyncssh.SFTPFailure, match="quota exceeded"):
            await sftp.open("new", "wb")
        with pytest.raises(asyncssh.SFTPFailure, match="quota exceeded"):
            await sftp.open("full", "r+b")  # a resume at the quota
        async with sftp.open("full", "wb"):  # overwriting with TRUNC frees the space first
            pass
    assert not (user.home / "new").exists()
    assert_exact(live_server, user)


async def test_file_count_limit(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=0)
    live_server.call(live_server.service.store.set_max_files(user.name, 3))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for i in range(3):
            async with sftp.open(f"f{i}", "wb"):
                pass
        with pytest.raises(asyncssh.SFTPFailure, match="file limit exceeded"):
            await sftp.open("f3", "wb")
        await sftp.remove("f0")
        async with sftp.open("f3", "wb"):
            pass
    assert_exact(live_server, user)


async def test_sessions_racing_to_the_quota_never_overshoot(live_server: LiveServer) -> None:
    quota = 20 * MiB + 12345
    user = live_server.add_user(quota=quota)
    refused = 0

    async def uploader(n: int) -> None:
        nonlocal refused
        async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open(f"up{n}", "wb") as f:
                offset = 0
                while True:
                    try:
                        await f.write(os.urandom(256 * 1024), offset)
                    except asyncssh.SFTPFailure:
                        refused += 1
                        return
                    offset += 256 * 1024

    await asyncio.gather(*(uploader(n) for n in range(6)))
    await asyncio.sleep(0.5)  # the sessions end on the server after the clients leave
    assert_exact(live_server, user)
    used, _files = live_usage(live_server, user)
    assert refused == 6
    assert used <= quota
    assert used > quota - 6 * 256 * 1024  # they did fill it up
    usage = live_server.call(live_server.service.store.usage(user.name, 0))
    assert usage is not None and usage.reserved == 0  # every reservation was handed back


async def test_bytes_before_the_refusal_stay_and_resume_after_freeing_space(
    live_server: LiveServer,
) -> None:
    user = live_server.add_user(quota=4 * MiB)
    data = os.urandom(6 * MiB)
    (user.home / "other").write_bytes(b"o" * MiB)
    live_server.call(_scan(live_server, user))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("big", "wb") as f:
            offset = 0
            with pytest.raises(asyncssh.SFTPFailure):
                while offset < len(data):
                    await f.write(data[offset : offset + 256 * 1024], offset)
                    offset += 256 * 1024
        kept = (user.home / "big").read_bytes()
        assert kept == data[: len(kept)] and len(kept) == 3 * MiB
        await sftp.remove("other")
        live_server.call(live_server.service.store.set_quota(user.name, 8 * MiB))
        async with sftp.open("big", "r+b") as f:
            await f.write(data[len(kept) :], len(kept))
    assert (user.home / "big").read_bytes() == data
    assert_exact(live_server, user)


async def _scan(server: LiveServer, user: User) -> None:
    from sftpd.reconcile import scan_user

    result = await scan_user(server.service.store, server.settings, user.name)
    assert result.stored


def test_openssh_sftp_shows_the_quota_message(live_server: LiveServer, tmp_path: Path) -> None:
    user = live_server.add_user(quota=2 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * MiB))
    result = live_server.sftp(user, f"put {src} big.bin\n")
    assert result.returncode != 0
    assert "sftpd: quota exceeded: 2.0 MiB used of 2.0 MiB" in result.stderr
    assert result.stderr.count("sftpd: quota exceeded") == 1  # once, not once per write
    assert_exact(live_server, user)
    for mode in ([], ["-O"]):
        result = live_server.scp(*mode, str(src), live_server.remote(user, f"scp{len(mode)}"))
        assert result.returncode != 0
        assert "quota exceeded" in result.stderr
        assert_exact(live_server, user)


def test_df_reports_the_quota(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=10 * MiB)
    (user.home / "f").write_bytes(b"x" * (3 * MiB))
    live_server.call(_scan(live_server, user))
    out = live_server.sftp(user, "df\ndf -h\n").stdout
    lines = out.splitlines()
    kib = lines[lines.index("sftp> df") + 2].split()
    assert kib[:3] == ["10240", "3072", "7168"]
    human = lines[lines.index("sftp> df -h") + 2].split()
    assert human[:3] == ["10.0MB", "3.0MB", "7.0MB"]  # OpenSSH scales by 1024


def test_sp_human_and_json(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=5 * 1024**3)
    (user.home / "f").write_bytes(b"x" * 1234567)
    (user.home / "g").write_bytes(b"")
    live_server.call(_scan(live_server, user))
    human = live_server.ssh(user, "sp")
    assert human.returncode == 0
    assert human.stdout == "used 1.2 MiB of 5.0 GiB (0%), 5.0 GiB free, 2 files\n"
    doc = json.loads(live_server.ssh(user, "sp", "--json").stdout)
    assert doc == {"used": 1234567, "quota": 5 * 1024**3, "free": 5 * 1024**3 - 1234567,
                   "files": 2}  # fmt: skip
    unlimited = live_server.add_user(quota=0)
    assert json.loads(live_server.ssh(unlimited, "sp", "--json").stdout)["quota"] is None
    assert "no quota" in live_server.ssh(unlimited, "sp").stdout
    assert live_server.ssh(user, "sp", "--bogus").returncode == 2


async def test_big_scan_does_not_stall_other_sessions(live_server: LiveServer) -> None:
    """100,000 files are scanned in a thread while another user keeps listing."""
    from sftpd.reconcile import scan_user

    big, other = live_server.add_user(quota=0), live_server.add_user()
    for d in range(100):
        sub = big.home / f"d{d}"
        sub.mkdir()
        for i in range(1000):
            fd = os.open(sub / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
    scan = asyncio.wrap_future(
        asyncio.run_coroutine_threadsafe(
            scan_user(live_server.service.store, live_server.settings, big.name), live_server.loop
        )
    )
    worst = 0.0
    async with live_server.connect(other) as conn, conn.start_sftp_client() as sftp:
        while not scan.done():
            start = asyncio.get_running_loop().time()
            await sftp.stat(".")
            worst = max(worst, asyncio.get_running_loop().time() - start)
            await asyncio.sleep(0.01)
    result = await scan
    assert (result.files, result.stored) == (100_000, True)
    assert worst < 1.0


def test_chunked_reservations_cost_no_write_per_packet(live_server: LiveServer) -> None:
    """A 96 MiB upload claims 8, 16, 32 and 64 MiB (doubling while each claim is granted
    in full), not one per 32 KiB packet, nor twelve of 8 MiB."""
    user = live_server.add_user(quota=0)
    ledger = live_server.service.ledger(user.name)
    calls = 0
    real = live_server.service.store.reserve

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    ledger.store = type("S", (), {})()  # a thin wrapper around the real store
    for attr in ("usage", "apply", "create_file"):
        setattr(ledger.store, attr, getattr(live_server.service.store, attr))
    ledger.store.reserve = counting  # type: ignore[method-assign]
    src = live_server.tmp / "96m.bin"
    src.write_bytes(os.urandom(96 * MiB))
    result = live_server.sftp(user, f"put {src} f\n", "-B", "32768")
    assert result.returncode == 0, result.stderr
    assert calls == 4, calls  # 8 + 16 + 32 + 64 >= 96
    assert_exact(live_server, user)
    src.unlink()


def test_claims_start_small_again_near_the_quota(live_server: LiveServer) -> None:
    """With claims doubling (8 + 16, then 32 wanted and 16 left), the user still fills
    the quota to the byte, and not one byte more."""
    user = live_server.add_user(quota=40 * MiB)
    src = live_server.tmp / "fill.bin"
    src.write_bytes(os.urandom(40 * MiB))
    result = live_server.sftp(user, f"put {src} f\n")
    assert result.returncode == 0, result.stderr
    assert (user.home / "f").stat().st_size == 40 * MiB
    result = live_server.sftp(user, f"put {src} g\n")
    assert result.returncode != 0 and "quota exceeded" in result.stderr.lower()
    assert_exact(live_server, user)
    src.unlink()


def test_quota_cli_set_show_and_scan(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=MiB)
    (user.home / "f").write_bytes(b"x" * 1000)
    env = {**os.environ}
    base = [".venv/bin/python", "-m", "sftpd", "--data-dir", str(live_server.settings.data_dir)]
    root = Path(__file__).resolve().parents[2]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env, cwd=root)

    r = run("quota", "scan", user.name)
    assert r.returncode == 0 and "1000 B in 1 file" in r.stdout
    assert run("user", "quota", user.name, "2MiB", "--max-files", "5").returncode == 0
    shown = run("user", "show", user.name).stdout
    assert "1000 B of 2.0 MiB (0%)" in shown and "1 of 5 files" in shown
    listed = json.loads(run("user", "list", "--json").stdout)
    me = next(u for u in listed if u["name"] == user.name)
    assert (me["used"], me["quota"], me["max_files"]) == (1000, 2 * MiB, 5)
    assert run("quota", "scan", "nobody").returncode == 1


async def test_scan_leaves_a_busy_user_alone(live_server: LiveServer) -> None:
    """A scan while an upload holds a reservation would count in-flight bytes twice."""
    from sftpd.reconcile import scan_user

    user = live_server.add_user(quota=0)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("f", "wb") as f:
            await f.write(b"x" * MiB)
            scan = asyncio.run_coroutine_threadsafe(
                scan_user(live_server.service.store, live_server.settings, user.name, tries=1),
                live_server.loop,
            )
            result = await asyncio.wrap_future(scan)
            assert not result.stored
    assert_exact(live_server, user)
