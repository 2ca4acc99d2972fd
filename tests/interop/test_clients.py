"""Real clients beyond OpenSSH against sftpd: curl (libssh2) over sftp:// and scp://, sshfs
with fio on top, and restic's sftp backend; OpenSSH's sshd where a side-by-side settles
what a client means.

Checked with curl 7.88.1 (libssh2 1.10.0), sshfs 3.7.3 (FUSE 3.14.0), fio 3.33,
restic 0.14.0 and OpenSSH 9.2p1 (Debian 12); scripts/test.sh installs them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sftpd.core.quota import scan_home
from tests.support import Serve, known_hosts, ledger_row, new_user
from tests.support.live import (
    LiveServer,
    OpenSSHServer,
    User,
    assert_exact,
    live_usage,
    require_binary,
)

pytestmark = pytest.mark.interop

MiB = 1024 * 1024
Run = subprocess.CompletedProcess[bytes]


def ok(result: Run) -> bytes:
    assert result.returncode == 0, (
        f"rc={result.returncode}\n{result.stdout[-2000:]!r}\n{result.stderr.decode()[-2000:]}"
    )
    return result.stdout


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until ``check()`` holds or the deadline passes; the caller asserts after."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def ssh_options(key: Path, hosts: Path) -> list[str]:
    return [
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={key}",
        "-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "LogLevel=ERROR", "-F", "/dev/null",
    ]  # fmt: skip


# -- curl ---------------------------------------------------------------------------


class Curl:
    """curl with a HOME of its own whose ``.ssh/known_hosts`` pins the servers' keys:
    curl 7.88 has no ``--knownhosts``, but without ``-k`` it checks that file and accepts
    an exact match only (an unknown key ends in exit 60)."""

    def __init__(self, tmp: Path, *hosts: Path) -> None:
        require_binary("curl")
        self.home = tmp / "curl-home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True)
        (self.home / ".ssh" / "known_hosts").write_text("".join(h.read_text() for h in hosts))
        self.env = {**os.environ, "HOME": str(self.home)}

    def __call__(self, *args: str | Path, timeout: float = 60) -> Run:
        return subprocess.run(
            ["curl", "-q", "--silent", "--show-error", *map(str, args)],
            env=self.env, capture_output=True, timeout=timeout,
        )  # fmt: skip


@pytest.fixture
def curl(live_server: LiveServer, tmp_path: Path) -> Curl:
    return Curl(tmp_path, live_server.known_hosts)


def url(live_server: LiveServer, path: str = "", scheme: str = "sftp") -> str:
    """``/~/`` is the login directory in curl's SSH URLs."""
    return f"{scheme}://127.0.0.1:{live_server.port}/~/{path}"


def login(user: User) -> list[str]:
    return ["-u", f"{user.name}:{user.password}"]


def test_curl_sftp_upload_download_and_range_are_byte_identical(
    live_server: LiveServer, user: User, curl: Curl, tmp_path: Path
) -> None:
    """Password login, ``-T`` upload, download and ``-r`` ranges; checked with curl 7.88.1."""
    data = os.urandom(3 * MiB + 4321)
    (tmp_path / "up.bin").write_bytes(data)
    ok(curl(*login(user), "-T", tmp_path / "up.bin", url(live_server, "up.bin")))
    assert (user.home / "up.bin").read_bytes() == data
    ok(curl(*login(user), "-o", tmp_path / "back.bin", url(live_server, "up.bin")))
    assert (tmp_path / "back.bin").read_bytes() == data
    assert ok(curl(*login(user), "-r", "0-99", url(live_server, "up.bin"))) == data[:100]
    middle = ok(curl(*login(user), "-r", "2000000-2000099", url(live_server, "up.bin")))
    assert middle == data[2_000_000:2_000_100]
    assert_exact(live_server, user)


def test_curl_sftp_resumes_an_upload_and_a_download(
    live_server: LiveServer, user: User, curl: Curl, tmp_path: Path
) -> None:
    """``-C -`` continues from the size the other side already has, both ways; checked
    with curl 7.88.1."""
    data = os.urandom(3 * MiB + 11)
    (tmp_path / "full.bin").write_bytes(data)
    (tmp_path / "head.bin").write_bytes(data[:1_000_000])
    ok(curl(*login(user), "-T", tmp_path / "head.bin", url(live_server, "r.bin")))
    ok(curl(*login(user), "-C", "-", "-T", tmp_path / "full.bin", url(live_server, "r.bin")))
    assert (user.home / "r.bin").read_bytes() == data
    (tmp_path / "partial.bin").write_bytes(data[:1_234_567])
    ok(curl(*login(user), "-C", "-", "-o", tmp_path / "partial.bin", url(live_server, "r.bin")))
    assert (tmp_path / "partial.bin").read_bytes() == data
    assert_exact(live_server, user)


def test_curl_sftp_lists_a_directory_and_runs_quote_commands(
    live_server: LiveServer, user: User, curl: Curl, tmp_path: Path
) -> None:
    """A listing (long and ``-l``), then ``-Q`` rename/mkdir/chmod/rm before it; a quote
    that fails ends in curl's exit 21; checked with curl 7.88.1."""
    (tmp_path / "a").write_text("alpha\n")
    (tmp_path / "b").write_text("beta\n")
    ok(curl(*login(user), "--ftp-create-dirs", "-T", tmp_path / "a", url(live_server, "d/a.txt")))
    ok(curl(*login(user), "-T", tmp_path / "b", url(live_server, "d/b.txt")))
    long = ok(curl(*login(user), url(live_server, "d/"))).decode()
    assert {line.split()[-1] for line in long.splitlines()} == {".", "..", "a.txt", "b.txt"}
    assert all(line.startswith(("-rw", "drw")) for line in long.splitlines()), long
    quotes = [
        "-Q", "rename /d/a.txt /d/renamed.txt",
        "-Q", "mkdir /d/new",
        "-Q", "chmod 600 /d/renamed.txt",
        "-Q", "rm /d/b.txt",
    ]  # fmt: skip
    quoted = ok(curl(*login(user), *quotes, "-l", url(live_server, "d/")))
    assert set(quoted.decode().split()) == {".", "..", "renamed.txt", "new"}
    assert (user.home / "d" / "renamed.txt").read_text() == "alpha\n"
    assert (user.home / "d" / "renamed.txt").stat().st_mode & 0o777 == 0o600
    assert (user.home / "d" / "new").is_dir()
    failed = curl(*login(user), "-Q", "rename /d/gone /d/x", "-l", url(live_server, "d/"))
    assert failed.returncode == 21, failed.stderr
    assert_exact(live_server, user)


def test_curl_scp_upload_over_the_quota_fails_and_leaves_nothing(
    live_server: LiveServer, curl: Curl, tmp_path: Path
) -> None:
    """libssh2 announces the size up front (``C0644 SIZE name``): 5 MiB into a 4 MiB quota
    must fail, with no file (whole or partial) under any name; checked with curl 7.88.1."""
    user = live_server.add_user(quota=4 * MiB)
    (tmp_path / "big.bin").write_bytes(os.urandom(5 * MiB))
    result = curl(*login(user), "-T", tmp_path / "big.bin", url(live_server, "big.bin", "scp"))
    assert result.returncode != 0, result.stderr
    assert list(user.home.iterdir()) == []
    assert_exact(live_server, user)


def test_curl_scp_upload_that_fits_arrives_whole(
    live_server: LiveServer, curl: Curl, tmp_path: Path
) -> None:
    """libssh2 ends an SCP upload with EOF, not the ``\\0`` status byte OpenSSH's scp sends
    after the data; OpenSSH's ``scp -t`` keeps the file either way. curl reports success,
    so the file must be there, whole; checked with curl 7.88.1."""
    user = live_server.add_user(quota=4 * MiB)
    data = os.urandom(MiB + 4321)
    (tmp_path / "fits.bin").write_bytes(data)
    ok(curl(*login(user), "-T", tmp_path / "fits.bin", url(live_server, "fits.bin", "scp")))
    assert (user.home / "fits.bin").exists(), "curl exited 0 but the file is not there"
    assert (user.home / "fits.bin").read_bytes() == data
    assert_exact(live_server, user)


@pytest.mark.parametrize("target_exists", [True, False], ids=["target-exists", "dangling"])
def test_curl_symlink_quote_makes_link_to_target_as_on_openssh(
    live_server: LiveServer,
    user: User,
    openssh_server: OpenSSHServer,
    tmp_path: Path,
    target_exists: bool,
) -> None:
    """``-Q "symlink TARGET LINK"`` (libssh2 sends TARGET first, as OpenSSH's sftp does)
    makes LINK -> TARGET on OpenSSH's sshd; sftpd must make the same link. Checked with
    curl 7.88.1 (libssh2 1.10.0) and OpenSSH 9.2p1."""
    curl = Curl(tmp_path, live_server.known_hosts, openssh_server.known_hosts)
    ref = openssh_server.root / f"curl-symlink-{user.name}"
    ref.mkdir()
    if target_exists:
        (tmp_path / "t.txt").write_text("target\n")
        ok(curl(*login(user), "-T", tmp_path / "t.txt", url(live_server, "t.txt")))
        (ref / "t.txt").write_text("target\n")
    ok(curl(*login(user), "-Q", "symlink t.txt /ln", "-l", url(live_server)))
    key = ["-u", f"{openssh_server.user}:", "--key", str(openssh_server.key),
           "--pubkey", f"{openssh_server.key}.pub"]  # fmt: skip
    reference = f"sftp://127.0.0.1:{openssh_server.port}{ref}/"
    ok(curl(*key, "-Q", f"symlink t.txt {ref}/ln", "-l", reference))
    assert os.readlink(ref / "ln") == "t.txt"
    assert os.readlink(user.home / "ln") == "t.txt"
    assert not (user.home / "t.txt").is_symlink()
    assert_exact(live_server, user)


# -- sshfs --------------------------------------------------------------------------


@pytest.fixture
def fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: sshfs needs FUSE (a container needs --device /dev/fuse)")
    for name in ("sshfs", "fusermount3"):
        require_binary(name)


@contextmanager
def sshfs(port: int, login: str, key: Path, hosts: Path, mnt: Path) -> Iterator[Path]:
    """sshfs in the foreground, so the test owns the process: mounted on entry; unmounted
    and the process gone on exit, whatever happened inside."""
    mnt.mkdir()
    options = ",".join(
        [f"IdentityFile={key}", f"UserKnownHostsFile={hosts}", "StrictHostKeyChecking=yes",
         "IdentitiesOnly=yes", "BatchMode=yes"]
    )  # fmt: skip
    proc = subprocess.Popen(
        ["sshfs", "-f", "-p", str(port), "-F", "/dev/null", "-o", options,
         f"{login}@127.0.0.1:/", str(mnt)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.fail(f"sshfs exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("sshfs did not mount within 30 s")
            time.sleep(0.02)
        yield mnt
    finally:
        if subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("fuse")
def test_sshfs_mount_passes_fio_verify_and_posix_file_operations(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """fio writes and reads back with crc32c through the mount; rename over an existing file,
    truncate, a hard link and statvfs (the quota is the size) work; usage is exact once
    unmounted. Checked with sshfs 3.7.3 (FUSE 3.14.0) and fio 3.33."""
    require_binary("fio")
    quota = 64 * MiB
    user = live_server.add_user(quota=quota)
    port, hosts = live_server.port, live_server.known_hosts
    with sshfs(port, user.name, user.key_path, hosts, tmp_path / "mnt") as mnt:
        fio = subprocess.run(
            ["fio", "--name=v", f"--directory={mnt}", "--size=8m", "--bs=64k", "--rw=write",
             "--verify=crc32c", "--do_verify=1", "--verify_state_save=0", "--ioengine=sync"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert fio.returncode == 0, fio.stdout + fio.stderr
        assert (user.home / "v.0.0").stat().st_size == 8 * MiB
        (mnt / "a.txt").write_text("new contents\n")
        (mnt / "b.txt").write_text("old contents, longer\n")
        os.rename(mnt / "a.txt", mnt / "b.txt")
        assert sorted(os.listdir(user.home)) == ["b.txt", "v.0.0"]
        assert (user.home / "b.txt").read_text() == "new contents\n"
        os.truncate(mnt / "v.0.0", 1_000_000)
        assert (user.home / "v.0.0").stat().st_size == 1_000_000
        os.link(mnt / "b.txt", mnt / "hard.txt")
        assert (user.home / "hard.txt").stat().st_ino == (user.home / "b.txt").stat().st_ino
        used, _ = live_usage(live_server, user)
        fs = os.statvfs(mnt)
        assert fs.f_frsize * fs.f_blocks == quota
        assert fs.f_bavail * fs.f_frsize == (quota - used) // 1024 * 1024
    # sshfs sends CLOSE at release without waiting for the answer: give the server a moment.
    eventually(lambda: live_usage(live_server, user) == scan_home(str(user.home)))
    assert_exact(live_server, user)


@pytest.mark.usefixtures("fuse")
def test_an_idle_sshfs_mount_does_not_starve_other_workers_of_quota(tmp_path: Path) -> None:
    """With ``--workers 4``, a mount that wrote 9 MiB of a 20 MiB quota and stays open holds
    room on its worker; one-file puts, which the kernel spreads over the workers, must
    still get the 11 MiB left (a claim flows back to whoever needs it), and the puts follow
    the write at once: no pause for an idle claim to expire. Checked with sshfs 3.7.3 and
    OpenSSH 9.2p1 sftp."""
    require_binary("sftp")
    key = new_user(tmp_path, "sam", quota="20MiB")
    server = Serve(tmp_path, "--no-demo", "--workers", "4", "--max-sessions-per-user", "0")
    home = tmp_path / "data" / "homes" / "sam"
    try:
        hosts = known_hosts(tmp_path, server.port)
        one = tmp_path / "one.bin"
        one.write_bytes(os.urandom(MiB))
        failures: list[str] = []
        with sshfs(server.port, "sam", key, hosts, tmp_path / "mnt") as mnt:
            (mnt / "nine.bin").write_bytes(os.urandom(9 * MiB))
            for i in range(6):
                put = subprocess.run(
                    ["sftp", "-b", "-", "-P", str(server.port), *ssh_options(key, hosts),
                     "sam@127.0.0.1"],
                    input=f"put {one} p{i}.bin\n", capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                if put.returncode:
                    failures.append(f"put {i}: {put.stderr.strip()}")
        assert failures == []
        eventually(lambda: ledger_row(tmp_path, "sam") == (*scan_home(str(home)), 0))
        assert ledger_row(tmp_path, "sam") == (*scan_home(str(home)), 0)
        assert scan_home(str(home)) == (15 * MiB, 7)
    finally:
        code, err = server.stop()
    assert code == 0, err


# -- restic -------------------------------------------------------------------------


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_restic_backup_check_restore_and_prune(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    """restic's sftp backend (temp files renamed into place, locks, pack deletes on prune):
    init, backup ~20 MB, ``check --read-data``, a byte-identical restore, a second backup and
    ``forget --keep-last 1 --prune``; usage exact at the end. Checked with restic 0.14.0."""
    require_binary("restic")
    src = tmp_path / "src"
    for d in range(4):
        (src / f"d{d}" / "sub").mkdir(parents=True)
        for i in range(5):
            (src / f"d{d}" / f"f{i}.bin").write_bytes(os.urandom(MiB + 777 * i))
        (src / f"d{d}" / "sub" / "note.txt").write_text(f"note {d}\n")
    command = " ".join(
        ["ssh", "-p", str(live_server.port), *live_server.ssh_options(), f"{user.name}@127.0.0.1",
         "-s", "sftp"]
    )  # fmt: skip
    env = {
        **os.environ,
        "RESTIC_PASSWORD": "restic test password",
        "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
    }

    def restic(*args: str | Path) -> Run:
        return subprocess.run(
            ["restic", "-r", f"sftp:{user.name}@127.0.0.1:/repo", "-o", f"sftp.command={command}",
             *map(str, args)],
            env=env, cwd=src, capture_output=True, timeout=120,
        )  # fmt: skip

    ok(restic("init"))
    ok(restic("backup", "--quiet", "."))
    ok(restic("check", "--read-data"))
    ok(restic("restore", "latest", "--target", tmp_path / "restored"))
    assert files_under(tmp_path / "restored") == files_under(src)
    (src / "d0" / "f0.bin").write_bytes(os.urandom(2 * MiB))
    (src / "d1" / "f1.bin").unlink()
    ok(restic("backup", "--quiet", "."))
    ok(restic("forget", "--keep-last", "1", "--prune"))
    assert ok(restic("snapshots", "--json")).count(b'"short_id"') == 1
    ok(restic("check"))
    assert_exact(live_server, user)
