"""Upload modes: atomic uploads never show a partial file; atomic-resume keeps a broken one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.core.uploads import TEMP_PREFIX
from sftpd.reconcile import scan_user
from tests.support import Serve, run
from tests.support.live import (
    LiveServer,
    User,
    assert_exact,
    require_binary,
    start_live_server,
    stop_live_server,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def atomic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path_factory.mktemp("atomic"), upload_mode="atomic")
    yield server
    stop_live_server(server)


@pytest.fixture(scope="module")
def resumable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path_factory.mktemp("resume"), upload_mode="atomic-resume")
    yield server
    stop_live_server(server)


def plant(server: LiveServer, user: User, name: str, data: bytes) -> None:
    """A file put there by something other than sftpd, then counted by a scan."""
    (user.home / name).write_bytes(data)
    assert server.call(scan_user(server.service.store, server.settings, user.name)).stored


def temps(home: Path) -> list[str]:
    return [n for _, _, files in os.walk(home) for n in files if n.startswith(TEMP_PREFIX)]


def kill_mid_upload(server: LiveServer, user: User, argv: list[str], batch: str = "") -> None:
    """Start a client (``argv`` after its connection options), SIGKILL it once its hidden
    temporary file holds 8 MiB."""
    client = subprocess.Popen(
        [argv[0], "-P", str(server.port), *server.ssh_options(), *argv[1:]],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert client.stdin is not None
    client.stdin.write(batch)
    client.stdin.flush()
    wait_for(lambda: any((user.home / n).stat().st_size > 8 * MiB for n in temps(user.home)),
             "the upload never started")  # fmt: skip
    client.send_signal(signal.SIGKILL)
    client.wait(30)


def wait_for(condition: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_reader_never_sees_a_partial_file(atomic: LiveServer, tmp_path: Path) -> None:
    """A job on the server reads the target while OpenSSH's sftp replaces it: old or new."""
    user = atomic.add_user()
    old, new = b"old version\n" * 1000, os.urandom(48 * MiB)
    plant(atomic, user, "data.bin", old)
    (tmp_path / "data.bin").write_bytes(new)
    digests = {hashlib.sha256(old).digest(), hashlib.sha256(new).digest()}
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(hashlib.sha256((user.home / "data.bin").read_bytes()).digest())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        put = atomic.sftp(user, f"put {tmp_path / 'data.bin'} data.bin\n")
    finally:
        stop.set()
        thread.join()
    assert put.returncode == 0, put.stderr
    assert len(seen) > 3 and set(seen) <= digests, "a reader saw a partial file"
    assert (user.home / "data.bin").read_bytes() == new
    assert temps(user.home) == []
    assert_exact(atomic, user)


async def test_the_temporary_file_is_invisible_and_counts(atomic: LiveServer) -> None:
    user = atomic.add_user()
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("up.bin", "wb") as f:
            await f.write(os.urandom(MiB))
            [name] = temps(user.home)
            assert sorted(await sftp.listdir(".")) == [".", ".."]
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(name)
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(name, "rb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.remove(name)
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.rename(name, "x")
            sp = await conn.run("sp --json", check=True)  # the temporary file counts
            assert json.loads(str(sp.stdout))["used"] == MiB
        assert sorted(await sftp.listdir(".")) == [".", "..", "up.bin"]
    assert temps(user.home) == []
    assert_exact(atomic, user)


def test_a_killed_client_leaves_the_old_file_and_no_temporary(
    atomic: LiveServer, tmp_path: Path
) -> None:
    user = atomic.add_user()
    plant(atomic, user, "big.bin", b"keep me\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(256 * MiB))
    kill_mid_upload(atomic, user, ["sftp", "-b", "-", f"{user.name}@127.0.0.1"],
                    f"put {tmp_path / 'big.bin'} big.bin\n")  # fmt: skip
    wait_for(lambda: temps(user.home) == [], "the temporary file was not removed")
    assert (user.home / "big.bin").read_bytes() == b"keep me\n"
    assert_exact(atomic, user)


@pytest.mark.parametrize("legacy", [False, True], ids=["scp", "scp -O"])
def test_scp_both_modes(atomic: LiveServer, tmp_path: Path, legacy: bool) -> None:
    user = atomic.add_user()
    data = os.urandom(3 * MiB + 5)
    (tmp_path / "s.bin").write_bytes(data)
    plant(atomic, user, "s.bin", b"old")
    mode = ["-O"] if legacy else []
    r = atomic.scp(*mode, str(tmp_path / "s.bin"), atomic.remote(user, "s.bin"))
    assert r.returncode == 0, r.stderr
    assert (user.home / "s.bin").read_bytes() == data and temps(user.home) == []
    assert_exact(atomic, user)


def test_rclone_upload(atomic: LiveServer, tmp_path: Path) -> None:
    rclone = require_binary("rclone")
    user = atomic.add_user()
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "sub" / f"f{i}.txt").write_bytes(os.urandom(10_000 + i))
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        f"[s]\ntype = sftp\nhost = 127.0.0.1\nport = {atomic.port}\nuser = {user.name}\n"
        f"key_file = {atomic.client_key}\nknown_hosts_file = {atomic.known_hosts}\n"
    )
    r = subprocess.run([rclone, "--config", str(conf), "copy", str(src), "s:tree"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for i in range(5):
        got = (user.home / "tree" / "sub" / f"f{i}.txt").read_bytes()
        assert got == (src / "sub" / f"f{i}.txt").read_bytes()
    assert temps(user.home) == []
    assert_exact(atomic, user)


def test_atomic_resume_keeps_a_broken_upload_for_reput(
    resumable: LiveServer, tmp_path: Path
) -> None:
    user = resumable.add_user()
    data = os.urandom(128 * MiB)
    (tmp_path / "r.bin").write_bytes(data)
    kill_mid_upload(resumable, user, ["sftp", "-b", "-", f"{user.name}@127.0.0.1"],
                    f"put {tmp_path / 'r.bin'} r.bin\n")  # fmt: skip
    wait_for(lambda: (user.home / "r.bin").exists(), "the broken upload was not kept")
    partial = (user.home / "r.bin").stat().st_size
    assert 0 < partial < len(data) and temps(user.home) == []
    r = resumable.sftp(user, f"reput {tmp_path / 'r.bin'} r.bin\n")
    assert r.returncode == 0, r.stderr
    assert (user.home / "r.bin").read_bytes() == data
    assert_exact(resumable, user)


def remove_deep(top: Path) -> None:
    """Remove a chain of nested directories without recursion."""
    chain = [top]
    while (chain[-1] / "d").is_dir():
        chain.append(chain[-1] / "d")
    for d in reversed(chain):
        for f in d.iterdir():
            if not f.is_dir():
                f.unlink()
        d.rmdir()


def test_leftovers_of_a_dead_process_are_removed_at_start(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Also at the bottom of a 1,500-deep tree a user made (deeper than Python's recursion
    limit: a recursive walk made the start fail)."""
    assert run(tmp_path, "user", "add", "lee").returncode == 0
    home = tmp_path / "data" / "homes" / "lee"
    deep = home / "sub"
    deep.mkdir(parents=True, exist_ok=True)
    for _ in range(1500):  # one by one: pathlib's and os's makedirs recurse too
        deep /= "d"
        deep.mkdir()
    request.addfinalizer(lambda: remove_deep(home / "sub" / "d"))  # as does pytest's rmtree
    leftover = home / "sub" / f"{TEMP_PREFIX}deadbeef-0123456789abcdef"
    leftover.write_bytes(b"x" * 1000)
    deep_leftover = deep / f"{TEMP_PREFIX}deadbeef-fedcba9876543210"
    deep_leftover.write_bytes(b"y" * 10)
    (home / "keep.txt").write_bytes(b"kept")
    server = Serve(tmp_path, "--no-demo", "--upload-mode", "atomic", "--workers", "1")
    try:
        assert not leftover.exists() and not deep_leftover.exists()
        assert (home / "keep.txt").exists()
    finally:
        code, err = server.stop()
    assert code == 0, err
    shown = run(tmp_path, "user", "show", "lee", "--json").stdout
    assert '"used": 4' in shown and '"files": 1' in shown


def test_a_killed_legacy_scp_leaves_the_old_file(atomic: LiveServer, tmp_path: Path) -> None:
    """asyncssh's SCP sink closes the file when the connection drops: that is no CLOSE."""
    user = atomic.add_user()
    plant(atomic, user, "big.bin", b"keep me\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(256 * MiB))
    kill_mid_upload(atomic, user, ["scp", "-O", str(tmp_path / "big.bin"),
                                   atomic.remote(user, "big.bin")])  # fmt: skip
    wait_for(lambda: temps(user.home) == [], "the temporary file was not removed")
    assert (user.home / "big.bin").read_bytes() == b"keep me\n"
    assert_exact(atomic, user)
