"""xfer sync both ways, against sftpd and OpenSSH's sshd: idempotence, --delete, --dry-run,
exclusions, checksums, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.remote import safe_name
from cli.sync import excluded
from tests.support import Xfer
from tests.support.live import LiveServer, OpenSSHServer, User

MiB = 1 << 20


@pytest.fixture
def xfer(live_server: LiveServer, user: User, tmp_path: Path) -> Xfer:
    return Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", user.key_path,
                live_server.known_hosts)  # fmt: skip


def make_tree(root: Path) -> None:
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "docs" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "docs" / "deep" / "c.txt").write_text("gamma\n" * 100)
    (root / "docs" / "skip.tmp").write_text("never sent")
    (root / "cache" / "big.dat").write_bytes(b"x" * 1000)
    old = time.time() - 86_400
    for p in root.rglob("*"):
        os.utime(p, (old, int(old)))


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Relative path -> (size, whole-second mtime, content) of every regular file."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, int(p.stat().st_mtime), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def sync(x: Xfer, *args: str) -> dict[str, object]:
    r = x("--json", "sync", *args)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return dict(json.loads(r.stdout.splitlines()[-1]))


EXCLUDES = ("--exclude", "*.tmp", "--exclude", "cache")


def test_push_is_idempotent_keeps_mtimes_and_excludes(
    xfer: Xfer, user: User, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first = sync(xfer, *EXCLUDES, str(src), "backup")
    assert first["transferred"] == 3 and first["skipped"] == 0 and first["deleted"] == 0
    want = {k: v for k, v in snapshot(src).items() if not k.endswith(".tmp") and "cache" not in k}
    assert snapshot(user.home / "backup") == want  # sizes, mtimes and bytes
    again = sync(xfer, *EXCLUDES, str(src), "backup")
    assert again["transferred"] == 0 and again["skipped"] == 3 and again["bytes"] == 0
    # a size change, an mtime-only change, a same-size content change seen only by -c
    (src / "a.txt").write_text("alpha, longer\n")
    os.utime(src / "docs" / "deep" / "c.txt", (time.time(), time.time()))
    mtime = (src / "docs" / "b.bin").stat().st_mtime
    (src / "docs" / "b.bin").write_bytes(os.urandom(300_000))
    os.utime(src / "docs" / "b.bin", (mtime, mtime))
    plain = sync(xfer, *EXCLUDES, str(src), "backup")
    assert plain["transferred"] == 2  # a.txt (size) and c.txt (mtime, resumed: no bytes)
    assert plain["bytes"] == len("alpha, longer\n")
    assert (user.home / "backup" / "docs" / "b.bin").read_bytes() != (
        src / "docs" / "b.bin"
    ).read_bytes()
    deep = sync(xfer, *EXCLUDES, "--checksum", str(src), "backup")
    assert deep["transferred"] == 1
    want = {k: v for k, v in snapshot(src).items() if not k.endswith(".tmp") and "cache" not in k}
    assert snapshot(user.home / "backup") == want


def test_dry_run_then_delete_never_outside_the_destination(
    xfer: Xfer, user: User, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    sync(xfer, str(src), "dst")
    (user.home / "dst" / "extra.txt").write_text("only remote")
    (user.home / "dst" / "olddir" / "inner").mkdir(parents=True)
    (user.home / "dst" / "olddir" / "inner" / "x.txt").write_text("x")
    (user.home / "sibling.txt").write_text("outside the destination")
    (src / "a.txt").write_text("changed size\n")
    before = snapshot(user.home)
    r = xfer("sync", "--delete", "--dry-run", str(src), "dst")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "upload a.txt (size)" in lines and "delete extra.txt" in lines
    assert "delete olddir/inner/x.txt" in lines and "rmdir olddir" in lines
    assert lines[-1].startswith("dry run: 1 to copy, 4 to remove")
    assert snapshot(user.home) == before  # nothing changed
    done = sync(xfer, "--delete", str(src), "dst")
    assert done["deleted"] == 2 and done["transferred"] == 1
    assert not (user.home / "dst" / "extra.txt").exists()
    assert not (user.home / "dst" / "olddir").exists()
    assert (user.home / "sibling.txt").read_text() == "outside the destination"
    assert snapshot(user.home / "dst") == snapshot(src)


def test_pull_mirrors_and_deletes_locally(xfer: Xfer, user: User, tmp_path: Path) -> None:
    make_tree(user.home / "remote")
    local = tmp_path / "mirror"
    first = sync(xfer, "--pull", "remote", str(local))
    assert first["transferred"] == 5
    assert snapshot(local) == snapshot(user.home / "remote")
    assert sync(xfer, "--pull", "remote", str(local))["transferred"] == 0
    (local / "stray.txt").write_text("local only")
    (user.home / "remote" / "a.txt").unlink()
    gone = sync(xfer, "--pull", "--delete", "remote", str(local))
    assert gone["deleted"] == 2
    assert snapshot(local) == snapshot(user.home / "remote")


def test_an_interrupted_sync_resumes(xfer: Xfer, user: User, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(160 * MiB)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_text("small\n")
    argv = xfer.cmd("sync", "-P", "1", str(src), "dst")
    proc = subprocess.Popen(argv, env=xfer.env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    part = user.home / "dst" / "big.bin"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 16 * MiB):
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    had = part.stat().st_size
    assert had < len(data)
    resumed = sync(xfer, str(src), "dst")
    assert resumed["transferred"] == 2  # big.bin went first (-P 1, by name)
    assert int(str(resumed["bytes"])) <= len(data) - had + len("small\n")  # not from zero
    assert part.read_bytes() == data


def test_against_openssh_sshd(openssh_server: OpenSSHServer, tmp_path: Path) -> None:
    x = Xfer(tmp_path, f"{openssh_server.user}@127.0.0.1:{openssh_server.port}",
             openssh_server.key, openssh_server.known_hosts)  # fmt: skip
    src = tmp_path / "src"
    make_tree(src)
    remote = openssh_server.root / tmp_path.name / "copy"
    assert sync(x, *EXCLUDES, str(src), str(remote))["transferred"] == 3
    assert sync(x, *EXCLUDES, str(src), str(remote))["transferred"] == 0
    want = {k: v for k, v in snapshot(src).items() if not k.endswith(".tmp") and "cache" not in k}
    assert snapshot(remote) == want
    back = tmp_path / "back"
    assert sync(x, "--pull", str(remote), str(back))["transferred"] == 3
    assert snapshot(back) == want
    assert sync(x, "--pull", "--checksum", str(remote), str(back))["transferred"] == 0


def test_patterns_and_hostile_names() -> None:
    assert excluded("docs/skip.tmp", ["*.tmp"]) and excluded("cache/big.dat", ["cache"])
    assert excluded("a/cache/x", ["cache"]) and not excluded("cached/x", ["cache"])
    assert excluded("docs/deep/c.txt", ["docs/deep/*"]) and not excluded("a.txt", ["*.tmp"])
    for bad in ("..", ".", "", "a/b", "../etc", "x\0y"):
        assert not safe_name(bad)
    assert safe_name("..hidden") and safe_name("name with spaces")
