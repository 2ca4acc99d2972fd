"""xfer against a real sftpd and a real OpenSSH sshd, as a person and as a script use it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sftpd.core import files as core_files
from tests.support import Xfer
from tests.support.live import LiveServer, OpenSSHServer, User, start_sshd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def xfer(live_server: LiveServer, user: User, tmp_path: Path) -> Xfer:
    return Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", user.key_path,
                live_server.known_hosts)  # fmt: skip


def blob(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


# -- verbs ---------------------------------------------------------------------------


def test_put_get_dir_and_friends(xfer: Xfer, user: User, tmp_path: Path) -> None:
    data = blob(tmp_path / "a.bin", 3 * 1024 * 1024 + 5)
    out = ok(xfer("put", "a.bin"))
    assert "uploaded 1 file(s)" in out and "verified sha256" in out
    assert (user.home / "a.bin").read_bytes() == data
    ok(xfer("mkdir", "-p", "x/y/z"))
    ok(xfer("put", "a.bin", "x/y/"))
    assert (user.home / "x" / "y" / "a.bin").read_bytes() == data
    listing = ok(xfer("dir"))
    assert [line.split()[-1] for line in listing.splitlines()] == ["a.bin", "x"]
    assert listing.splitlines()[0].startswith("-rw")
    entries = json.loads(ok(xfer("--json", "dir", "x/y")))
    assert [e["name"] for e in entries] == ["a.bin", "z"]
    assert entries[0] | {"mtime": 0} == {
        "name": "a.bin", "type": "file", "mode": "0o644", "size": len(data), "mtime": 0
    }  # fmt: skip
    assert entries[1]["type"] == "dir"
    ok(xfer("get", "x/y/a.bin", "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    ok(xfer("mv", "a.bin", "x"))
    assert (user.home / "x" / "a.bin").exists()
    r = xfer("del", "x")
    assert r.returncode == 1 and "use -r" in r.stderr
    ok(xfer("del", "-r", "x"))  # batch mode (stdin is not a tty): no question asked
    assert list(user.home.iterdir()) == []
    assert "used 0 B" in ok(xfer("sp"))
    assert json.loads(ok(xfer("sp", "--json")))["used"] == 0
    assert "Exit codes" in ok(xfer("help"))


def test_recursive_put_and_get_in_parallel(xfer: Xfer, user: User, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for i in range(20):
        (tree / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        blob(tree / f"d{i % 3}" / f"f{i}", random.randint(0, 300_000))
    out = ok(xfer("--json", "put", "-r", "--parallel", "4", "tree"))
    assert json.loads(out)["files"] == 20
    ok(xfer("get", "-r", "tree", "copy"))
    for p in tree.rglob("*"):
        rel = p.relative_to(tree)
        if p.is_file():
            assert (user.home / "tree" / rel).read_bytes() == p.read_bytes()
            assert (tmp_path / "copy" / rel).read_bytes() == p.read_bytes()


def test_login_profile_cd_and_logout(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    x = Xfer(tmp_path, "unused", user.key_path, None)
    target = f"{user.name}@127.0.0.1:{live_server.port}"
    r = x("--known-hosts", str(live_server.known_hosts), "login", target, "--name", "work",
          "-i", str(user.key_path), base=False)  # fmt: skip
    assert ok(r).startswith(f"logged in to {target}")
    (user.home / "docs").mkdir()
    assert ok(x("cd", "docs", base=False)).strip() == "/docs"
    assert ok(x("pwd", base=False)).strip() == "/docs"
    blob(tmp_path / "n.txt", 10)
    ok(x("put", "n.txt", base=False))  # relative to the stored cwd
    assert (user.home / "docs" / "n.txt").exists()
    ok(x("logout", base=False))
    r = x("dir", base=False)
    assert r.returncode == 2 and "no target" in r.stderr


# -- resume and verification --------------------------------------------------------


def _kill_midway(x: Xfer, argv: list[str], watch: Path, size: int) -> None:
    """Start a transfer and SIGKILL it once ``watch`` holds a random part of ``size``."""
    cut = random.randint(size // 5, size * 3 // 5)
    proc = subprocess.Popen(x.cmd(*argv), env=x.env, cwd=x.tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if watch.exists() and watch.stat().st_size >= cut:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_upload_after_kill(xfer: Xfer, user: User, tmp_path: Path) -> None:
    size = 96 * 1024 * 1024
    data = blob(tmp_path / "big.bin", size)
    _kill_midway(xfer, ["put", "-j", "1", "big.bin"], user.home / "big.bin", size)  # one stream
    partial = (user.home / "big.bin").stat().st_size
    assert 0 < partial < size
    out = json.loads(ok(xfer("--json", "put", "--resume", "big.bin")))
    assert out["resumed_from"] > 0 and out["verified"] == ["sha256"]
    assert (
        hashlib.sha256((user.home / "big.bin").read_bytes()).digest()
        == hashlib.sha256(data).digest()
    )


def test_resume_download_after_kill(xfer: Xfer, user: User, tmp_path: Path) -> None:
    size = 96 * 1024 * 1024
    data = blob(user.home / "big.bin", size)
    _kill_midway(xfer, ["get", "-j", "1", "big.bin", "got.bin"], tmp_path / "got.bin", size)
    assert 0 < (tmp_path / "got.bin").stat().st_size < size
    out = json.loads(ok(xfer("--json", "get", "--resume", "big.bin", "got.bin")))
    assert out["resumed_from"] > 0
    assert (tmp_path / "got.bin").read_bytes() == data


def test_resume_refuses_to_glue_different_files(xfer: Xfer, user: User, tmp_path: Path) -> None:
    data = blob(tmp_path / "f.bin", 2 * 1024 * 1024)
    (user.home / "f.bin").write_bytes(b"something else entirely" * 1000)
    r = xfer("--json", "put", "--resume", "f.bin")
    assert json.loads(ok(r))["resumed_from"] == 0
    assert "differs" in r.stderr
    assert (user.home / "f.bin").read_bytes() == data
    (tmp_path / "g.bin").write_bytes(b"local junk" * 100)
    r = xfer("--json", "get", "--resume", "f.bin", "g.bin")
    assert json.loads(ok(r))["resumed_from"] == 0
    assert (tmp_path / "g.bin").read_bytes() == data


@pytest.fixture
def corrupting_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection in the live server's storage layer: byte 1000 of every write
    that covers it lands flipped on disk, as a failing disk would do."""
    real = core_files.OpenFile.write

    async def write(self: core_files.OpenFile, offset: int, data: bytes) -> int:
        if offset <= 1000 < offset + len(data):
            buf = bytearray(data)
            buf[1000 - offset] ^= 0xFF
            data = bytes(buf)
        return await real(self, offset, data)

    monkeypatch.setattr(core_files.OpenFile, "write", write)


def test_corrupted_remote_byte_is_caught(
    xfer: Xfer, user: User, tmp_path: Path, corrupting_disk: None
) -> None:
    blob(tmp_path / "c.bin", 100_000)
    r = xfer("put", "c.bin")
    assert r.returncode == 6
    assert r.stderr.strip().endswith("checksum mismatch after upload")
    (user.home / "d.bin").write_bytes((tmp_path / "c.bin").read_bytes()[:50_000])
    blob(tmp_path / "d.bin", 100_000)
    r = xfer("put", "--resume", "d.bin")
    assert r.returncode == 6


@pytest.fixture
def corrupting_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: byte 1000 of every read that covers it is flipped on the way out
    (the file on disk stays intact, so the server's own checksum is the true one)."""
    real = core_files.OpenFile.read

    def read(self: core_files.OpenFile, offset: int, size: int) -> bytes:
        data = real(self, offset, size)
        if offset <= 1000 < offset + len(data):
            buf = bytearray(data)
            buf[1000 - offset] ^= 0xFF
            data = bytes(buf)
        return data

    monkeypatch.setattr(core_files.OpenFile, "read", read)


def test_corrupted_download_is_caught(
    xfer: Xfer, user: User, tmp_path: Path, corrupting_reads: None
) -> None:
    """The server's checksum is asked for when the download starts (it hashes while the
    bytes travel); the bytes that arrived are still what is compared, at the end."""
    (user.home / "c.bin").write_bytes(os.urandom(300_000))
    r = xfer("get", "c.bin", "c.bin")
    assert r.returncode == 6
    assert r.stderr.strip().endswith("checksum mismatch after download")


# -- failures and exit codes --------------------------------------------------------


def test_quota_exceeded_exits_5(live_server: LiveServer, tmp_path: Path) -> None:
    small = live_server.add_user(quota=1024 * 1024)
    x = Xfer(tmp_path, f"{small.name}@127.0.0.1:{live_server.port}", small.key_path,
             live_server.known_hosts)  # fmt: skip
    blob(tmp_path / "big.bin", 3 * 1024 * 1024)
    r = x("put", "big.bin")
    assert r.returncode == 5
    assert "quota exceeded" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_wrong_password_exits_3(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    x = Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", None,
             live_server.known_hosts)  # fmt: skip
    r = x("--password-stdin", "dir", input="wrong\n")
    assert r.returncode == 3 and "authentication failed" in r.stderr
    r = x("--password-stdin", "dir", input=user.password + "\n")
    assert r.returncode == 0, r.stderr
    env_pw = subprocess.run(x.cmd("dir"), env={**x.env, "XFER_PASSWORD": user.password},
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert env_pw.returncode == 0


def test_unknown_and_changed_host_keys(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    known = tmp_path / "kh"
    x = Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", user.key_path, known)
    r = x("dir")
    assert r.returncode == 4 and "unknown host" in r.stderr and "SHA256:" in r.stderr
    assert not known.exists()
    assert x("--accept-new", "dir").returncode == 0
    assert f"[127.0.0.1]:{live_server.port}" in known.read_text()
    assert x("dir").returncode == 0
    pattern, _, _ = known.read_text().partition(" ")
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(tmp_path / "fake")], check=True)  # fmt: skip
    assert other.returncode == 0
    known.write_text(f"{pattern} {(tmp_path / 'fake.pub').read_text()}")
    r = x("--accept-new", "dir")
    assert r.returncode == 4 and "HAS CHANGED" in r.stderr


def test_cannot_connect_exits_4(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = Xfer(tmp_path, f"nobody@127.0.0.1:{port}", None, None)("dir")
    assert r.returncode == 4 and "cannot connect" in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_2(xfer: Xfer) -> None:
    assert xfer("put").returncode == 2
    assert xfer("frobnicate").returncode == 2
    r = xfer("dir", base=False)
    assert r.returncode == 2


def test_remote_errors_exit_1(xfer: Xfer) -> None:
    r = xfer("get", "nope.bin")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert xfer("cd", "nowhere").returncode == 1
    assert xfer("del", "nothing").returncode == 1


def test_ctrl_c_exits_130_and_leaves_a_resumable_file(
    xfer: Xfer, user: User, tmp_path: Path
) -> None:
    size = 128 * 1024 * 1024
    data = blob(tmp_path / "big.bin", size)

    # A shell that started the suite in the background leaves SIGINT ignored: undo that.
    def interruptible() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(xfer.cmd("put", "big.bin"), env=xfer.env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)  # fmt: skip
    part = user.home / ".big.bin.xfer-part"  # four connections: written under a part name
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size > 1 << 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "xfer: interrupted"
    assert not (user.home / "big.bin").exists()  # nothing partial under the final name
    partial = part.stat().st_size  # cut at its first gap on the way out
    r = xfer("--json", "put", "--resume", "big.bin")
    assert json.loads(ok(r))["resumed_from"] == partial > 0, r.stderr
    assert "differs" not in r.stderr
    assert (user.home / "big.bin").read_bytes() == data and not part.exists()


# -- a plain OpenSSH server -----------------------------------------------------------


def test_against_openssh_sshd(openssh_server: OpenSSHServer, tmp_path: Path) -> None:
    x = Xfer(tmp_path, f"{openssh_server.user}@127.0.0.1:{openssh_server.port}",
             openssh_server.key, openssh_server.known_hosts)  # fmt: skip
    remote = openssh_server.root / tmp_path.name
    data = blob(tmp_path / "f.bin", 5 * 1024 * 1024 + 3)
    ok(x("mkdir", "-p", str(remote)))
    r = x("put", "f.bin", str(remote) + "/")
    ok(r)
    assert (remote / "f.bin").read_bytes() == data
    assert "verified sha256" in r.stdout  # sshd offers exec, so sha256sum runs there
    (remote / "f.bin").write_bytes(data[: 2 * 1024 * 1024])
    ok(x("put", "--resume", "f.bin", str(remote / "f.bin")))
    assert (remote / "f.bin").read_bytes() == data
    ok(x("get", str(remote / "f.bin"), "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    names = [line.split()[-1] for line in ok(x("dir", str(remote))).splitlines()]
    assert names == ["f.bin"]
    ok(x("mv", str(remote / "f.bin"), str(remote / "g.bin")))
    ok(x("del", str(remote / "g.bin")))
    # Segmented: written to .f.bin.xfer-part, verified, renamed with posix-rename.
    (remote / "f.bin").write_bytes(b"old")
    r = x("--json", "put", "-j", "3", "--segment-from", "1MiB", "f.bin", str(remote) + "/")
    assert json.loads(ok(r))["verified"] == ["sha256"]
    assert (remote / "f.bin").read_bytes() == data
    assert sorted(p.name for p in remote.iterdir()) == ["f.bin"]  # no part file left
    r = x("sp")
    assert r.returncode == 1  # plain OpenSSH has no sp


async def test_openssh_checksum_prefers_openssl(
    openssh_server: OpenSSHServer, tmp_path: Path
) -> None:
    """On a server with a shell, ``openssl dgst`` (SHA instructions; about 4x coreutils'
    9.1 sha256sum here) answers first; without openssl, sha256sum still does."""
    import asyncssh

    from cli.remote import Remote

    data = blob(openssh_server.root / f"{tmp_path.name}.bin", 3_000_000)
    async with asyncssh.connect(
        "127.0.0.1", openssh_server.port, username=openssh_server.user,
        client_keys=[str(openssh_server.key)], known_hosts=str(openssh_server.known_hosts),
        agent_path=None,
    ) as conn:  # fmt: skip
        async with conn.start_sftp_client() as sftp:
            remote = Remote(conn, sftp, "/")
            path = str(openssh_server.root / f"{tmp_path.name}.bin")
            assert await remote.checksum(path) == ("sha256", hashlib.sha256(data).hexdigest())
            openssl = "openssl dgst -sha256 -r"
            assert remote._exec_ok == (
                {openssl: True} if shutil.which("openssl") else {openssl: False, "sha256sum": True}
            )


def test_sftp_only_openssh_warns_instead_of_verifying(tmp_path: Path) -> None:
    """sshd with ``ForceCommand internal-sftp`` (the usual SFTP-only setup) offers no
    checksum at all: transfers and resumes still work, with a warning, exit 0."""
    server = start_sshd(tmp_path / "sshd", "ForceCommand internal-sftp\n")
    try:
        x = Xfer(tmp_path, f"{server.user}@127.0.0.1:{server.port}", server.key,
                 server.known_hosts)  # fmt: skip
        data = blob(tmp_path / "f.bin", 1_000_000)
        dest = str(server.root / "f.bin")
        r = x("--json", "put", "f.bin", dest)
        assert json.loads(ok(r)) | {"seconds": 0} == {
            "files": 1, "bytes": 1_000_000, "seconds": 0, "resumed_from": 0,
            "verified": [], "unverified": 1,
        }  # fmt: skip
        assert "not verified" in r.stderr
        (server.root / "f.bin").write_bytes(data[:300_000])
        r = x("put", "--resume", "f.bin", dest)
        assert r.returncode == 0 and "cannot prove" in r.stderr
        assert (server.root / "f.bin").read_bytes() == data
    finally:
        server.proc.terminate()
        server.proc.wait(10)


def test_ssh_config_alias_and_progress_on_a_terminal(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    import pexpect

    x = Xfer(tmp_path, "myalias", None, None)
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "config").write_text(
        f"Host myalias\n  HostName 127.0.0.1\n  Port {live_server.port}\n  User {user.name}\n"
        f"  IdentityFile {user.key_path}\n"
    )
    assert "unknown host" in x("dir").stderr
    ok(x("--accept-new", "dir"))
    assert (ssh_dir / "known_hosts").read_text().startswith(f"[127.0.0.1]:{live_server.port} ")
    ok(x("dir"))  # now known: no prompt, no complaint
    data = blob(tmp_path / "p.bin", 48 * 1024 * 1024)
    import io

    screen = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-m", "cli", *x.base[3:], "put", "p.bin"],
                          env=x.env, cwd=str(tmp_path), encoding="utf-8", timeout=60)  # fmt: skip
    child.logfile_read = screen
    child.expect_exact("uploaded 1 file(s)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "━" in screen.getvalue() and "total" in screen.getvalue()  # rich's bars were drawn
    assert (user.home / "p.bin").read_bytes() == data
    quiet = ok(x("--quiet", "put", "p.bin"))  # not a terminal: no bars, and quiet: nothing
    assert quiet == ""


async def test_xfer_prefers_aes_gcm_unless_ssh_config_chooses(
    live_server: LiveServer, user: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.connect import ConnectOptions, Target, _cpu_has_aes, connect

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    opts = ConnectOptions(
        Target.parse(f"{user.name}@127.0.0.1:{live_server.port}"),
        keys=[str(user.key_path)],
        known_hosts=live_server.known_hosts,
    )
    conn = await connect(opts)
    try:
        wanted = "aes128-gcm@openssh.com" if _cpu_has_aes() else "chacha20-poly1305@openssh.com"
        assert conn.get_extra_info("send_cipher") == wanted
    finally:
        conn.close()
    (tmp_path / ".ssh" / "config").write_text("Host *\n  Ciphers aes256-ctr\n")
    conn = await connect(opts)
    try:
        assert conn.get_extra_info("send_cipher") == "aes256-ctr"
    finally:
        conn.close()


# -- the remote starting directory, saved logins, options after the verb ---------------


@pytest.fixture(scope="module")
def sshd_plain_user() -> Iterator[tuple[OpenSSHServer, Path]]:
    """OpenSSH's sshd and a fresh non-root account whose home is not ``/``.

    The tests run as root (CI installs packages with apt-get); the account is removed after.
    """
    import pwd
    import shutil
    import tempfile

    if os.getuid() != 0 or not shutil.which("useradd"):
        pytest.fail("needs root and useradd to create a throwaway non-root account")
    # sshd reads authorized_keys as the user: outside pytest's 0700 tree, world-readable
    sshd_dir = Path(tempfile.mkdtemp(prefix="xfer-sshd-", dir="/tmp"))
    server = start_sshd(sshd_dir)
    os.chmod(sshd_dir / "authorized_keys", 0o644)
    name = f"xfer{os.getpid() % 100000}"
    home = Path(tempfile.mkdtemp(prefix="xfer-home-", dir="/tmp"))
    subprocess.run(["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/sh",
                    "--password", "*", name], check=True)  # fmt: skip
    try:
        os.chmod(home, 0o755)
        info = pwd.getpwnam(name)
        os.chown(home, info.pw_uid, info.pw_gid)
        server.user = name
        yield server, home
    finally:
        server.proc.terminate()
        server.proc.wait(10)
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(sshd_dir, ignore_errors=True)


def test_relative_paths_start_where_the_server_starts(
    sshd_plain_user: tuple[OpenSSHServer, Path], tmp_path: Path
) -> None:
    """Against sshd (no chroot) a relative path is in the user's home, as with sftp."""
    server, home = sshd_plain_user
    x = Xfer(tmp_path, f"{server.user}@127.0.0.1:{server.port}", server.key, server.known_hosts)
    data = blob(tmp_path / "o.bin", 300_000)
    assert ok(x("pwd")).strip() == str(home)
    ok(x("put", "o.bin", "o.bin"))
    assert (home / "o.bin").read_bytes() == data
    assert not Path("/o.bin").exists()
    ok(x("mkdir", "sub"))
    assert (home / "sub").is_dir()
    ok(x("mv", "o.bin", "sub"))
    assert (home / "sub" / "o.bin").read_bytes() == data
    assert [e["name"] for e in json.loads(ok(x("dir", "sub", "--json")))] == ["o.bin"]
    ok(x("get", "sub/o.bin", "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    assert ok(x("cd", "sub")).strip() == str(home / "sub")  # remembered per profile
    assert ok(x("pwd")).strip() == str(home / "sub")
    ok(x("del", "o.bin"))
    assert not (home / "sub" / "o.bin").exists()
    assert ok(x("cd")).strip() == str(home)  # no argument: back to the start
    shell = x("shell", input="put o.bin s.bin\ncd sub\npwd\nmkdir deeper\n")
    ok(shell)
    assert (home / "s.bin").read_bytes() == data
    assert (home / "sub" / "deeper").is_dir()
    assert f"{home}/sub\n" in shell.stdout


def test_login_keeps_the_key_and_known_hosts_in_either_position(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    target = f"{user.name}@127.0.0.1:{live_server.port}"
    key, known = str(user.key_path), str(live_server.known_hosts)
    for i, argv in enumerate((
        ["-i", key, "--known-hosts", known, "login", target],
        ["--known-hosts", known, "login", target, "-i", key],
    )):  # fmt: skip
        (tmp_path / str(i)).mkdir()
        x = Xfer(tmp_path / str(i), target, None, None)
        assert "logged in" in ok(x(*argv, base=False))
        saved = json.loads((tmp_path / str(i) / "cfg" / "profiles.json").read_text())
        profile = saved["profiles"][target]
        assert profile["keys"] == [str(user.key_path.resolve())]
        assert profile["known_hosts"] == str(live_server.known_hosts.resolve())
        ok(x("mkdir", f"made{i}", base=False))  # no -i, no -t: the profile carries them
        assert (user.home / f"made{i}").is_dir()


def test_output_options_work_after_the_verb(xfer: Xfer, user: User, tmp_path: Path) -> None:
    blob(tmp_path / "a.bin", 1000)
    assert ok(xfer("put", "a.bin", "-q")) == ""
    assert json.loads(ok(xfer("put", "a.bin", "--json")))["files"] == 1
    assert [e["name"] for e in json.loads(ok(xfer("dir", "--json")))] == ["a.bin"]
    assert json.loads(ok(xfer("sp", "--json")))["used"] == 1000
    assert json.loads(ok(xfer("--json", "sp")))["used"] == 1000
    assert ok(xfer("mkdir", "q", "-q")) == ""


# -- several connections -------------------------------------------------------------


def _logins(live_server: LiveServer, user: User) -> int:
    return sum(1 for r in live_server.logs.events("login") if r.get("user") == user.name
               and r.get("outcome") == "ok")  # fmt: skip


def test_many_files_over_several_connections(
    xfer: Xfer, live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    tree = tmp_path / "many"
    tree.mkdir()
    files = {f"f{i:03}.bin": os.urandom(random.randint(0, 200_000)) for i in range(60)}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    before = _logins(live_server, user)
    out = json.loads(ok(xfer("--json", "put", "-r", "-j", "4", "many")))
    assert out["files"] == 60 and _logins(live_server, user) - before == 4
    assert {p.name: p.read_bytes() for p in (user.home / "many").iterdir()} == files
    ok(xfer("get", "-r", "-j", "3", "many", "back"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "back").iterdir()} == files


def test_one_big_file_in_segments_and_resumed(
    xfer: Xfer, live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    size = 100 * 1024 * 1024 + 12345
    data = blob(tmp_path / "big.bin", size)
    out = json.loads(ok(xfer("--json", "put", "-j", "4", "big.bin")))
    assert out["verified"] == ["sha256"] and (user.home / "big.bin").read_bytes() == data
    ok(xfer("get", "-j", "4", "big.bin", "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    # Killed once several stripes are recorded: the resume keeps the contiguous part.
    (user.home / "big.bin").unlink()
    marks = tmp_path / "cfg" / "partial"
    proc = subprocess.Popen(xfer.cmd("put", "-j", "4", "big.bin"), env=xfer.env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def recorded() -> bool:
        for mark in marks.glob("*.json"):
            try:
                if set(range(4)) <= set(json.loads(mark.read_text())["done"]):
                    return True
            except (OSError, ValueError, KeyError):
                pass
        return False

    deadline = time.monotonic() + 60
    while not recorded():
        assert time.monotonic() < deadline and proc.poll() is None, "no stripes recorded"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (user.home / "big.bin").exists()  # the stripes went to .big.bin.xfer-part
    out = json.loads(ok(xfer("--json", "put", "-j", "4", "--resume", "big.bin")))
    assert out["resumed_from"] >= 4 * 8 * 1024 * 1024
    assert (user.home / "big.bin").read_bytes() == data
    assert not list(marks.glob("*.json"))  # done: the record is gone


def test_limit_rate_caps_all_connections_together(xfer: Xfer, user: User, tmp_path: Path) -> None:
    (tmp_path / "paced").mkdir()
    for i in range(4):
        blob(tmp_path / "paced" / f"f{i}.bin", 1024 * 1024)
    start = time.monotonic()
    ok(xfer("put", "-r", "-j", "4", "--limit-rate", "2MiB", "paced"))
    assert time.monotonic() - start >= 1.9  # 4 MiB at 2 MiB/s over four connections
    names = sorted(p.name for p in (user.home / "paced").iterdir())
    assert names == [f"f{i}.bin" for i in range(4)]
    bad = xfer("get", "--limit-rate", "fast", "paced/f0.bin")
    assert bad.returncode == 2 and "--limit-rate" in bad.stderr
