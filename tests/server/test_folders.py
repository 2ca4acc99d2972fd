"""Shared folders: mounted into several users' trees, counted to their own quota, confined."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from sftpd.core.quota import scan_home
from sftpd.store import FolderRecord, folder_account
from tests.support import Serve, known_hosts, ledger_row, run, worker_pids
from tests.support.live import LiveServer, User, live_usage

MiB = 1 << 20


def add_folder(live_server: LiveServer, name: str, quota: int = 0) -> Path:
    path = live_server.tmp / f"folder-{name}"
    path.mkdir()
    live_server.call(live_server.service.store.add_folder(FolderRecord(name, str(path), quota)))
    return path


def mount(live_server: LiveServer, user: User, at: str, folder: str) -> None:
    live_server.call(live_server.service.store.mount(user.name, at, folder))


async def test_boundaries_of_a_mounted_folder(live_server: LiveServer, user: User) -> None:
    team = add_folder(live_server, "boundaries")
    (team / "plan.txt").write_text("shared plan\n")
    os.symlink("../../outside", team / "climb")  # only an outside process could plant it
    (user.home / "team").mkdir()  # hidden by the mount
    (user.home / "team" / "hidden.txt").write_text("not seen\n")
    (user.home / "mine.txt").write_text("mine\n")
    mount(live_server, user, "/team", "boundaries")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        assert "team" in await sftp.listdir("/")
        assert sorted(await sftp.listdir("/team")) == [".", "..", "climb", "plan.txt"]
        assert await sftp.realpath("/team/..") == "/"
        async with sftp.open("/team/../mine.txt", "rb") as f:
            assert await f.read() == b"mine\n"
        with pytest.raises(asyncssh.SFTPError):
            await sftp.rmdir("/team")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.rename("/team", "/gone")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.remove("/team")
        with pytest.raises(asyncssh.SFTPOpUnsupported, match="across a folder boundary"):
            await sftp.rename("/mine.txt", "/team/mine.txt")
        with pytest.raises(asyncssh.SFTPOpUnsupported, match="across a folder boundary"):
            await sftp.link("/team/plan.txt", "/plan-link")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="another folder"):
            await sftp.symlink("/mine.txt", "/team/to-home")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.stat("/team/climb/secret.txt")
        await sftp.rename("/team/plan.txt", "/team/plan-v2.txt")  # inside the folder: fine
        async with sftp.open("/team/new.bin", "wb") as f:
            await f.write(os.urandom(5000))
    assert (team / "plan-v2.txt").read_text() == "shared plan\n"
    assert (user.home / "mine.txt").exists() and (team / "new.bin").stat().st_size == 5000
    assert not (user.home / "team" / "new.bin").exists()
    folder = live_server.call(live_server.service.store.get_folder("boundaries"))
    assert folder is not None and folder.used_bytes == 5000 and folder.used_files == 1
    assert live_usage(live_server, user) == (0, 0)  # the folder's bytes are not the user's


async def test_two_users_race_into_the_folder_quota_never_a_byte_over(
    live_server: LiveServer, tmp_path: Path
) -> None:
    quota = 3 * MiB + 1234
    team = add_folder(live_server, "race", quota)
    alice, bob = live_server.add_user(), live_server.add_user()
    for u in (alice, bob):
        mount(live_server, u, "/shared", "race")
    local = tmp_path / "one.bin"
    local.write_bytes(os.urandom(MiB))
    refused = 0

    async def fill(u: User, tag: str) -> None:
        nonlocal refused
        async with live_server.connect(u) as conn, conn.start_sftp_client() as sftp:
            for i in range(4):
                try:
                    async with sftp.open(f"/shared/{tag}{i}.bin", "wb") as f:
                        for off in range(0, MiB, 64 * 1024):
                            await f.write(os.urandom(64 * 1024), off)
                except asyncssh.SFTPError:
                    refused += 1
                    return

    openssh = asyncio.to_thread(
        live_server.sftp, alice, "".join(f"put {local} /shared/ssh{i}.bin\n" for i in range(4))
    )
    results = await asyncio.gather(fill(alice, "a"), fill(bob, "b"), openssh)
    assert refused == 2 and results[2].returncode != 0  # everyone ran into the quota
    used, files = scan_home(str(team))
    assert used <= quota
    for _ in range(200):
        row = live_server.call(live_server.service.store.usage(folder_account("race"), 0))
        assert row is not None
        if (row.used, row.files, row.reserved) == (used, files, 0):
            break
        await asyncio.sleep(0.05)
    assert row is not None and (row.used, row.files, row.reserved) == (used, files, 0)
    assert live_usage(live_server, alice) == live_usage(live_server, bob) == (0, 0)
    # sp and df see the folder's own quota
    sp = live_server.ssh(alice, "sp", "--json")
    doc = json.loads(sp.stdout)
    assert doc["folders"]["/shared"]["used"] == used and doc["folders"]["/shared"]["quota"] == quota
    assert doc["used"] == 0
    df = live_server.sftp(alice, "cd /shared\ndf\n")
    assert df.returncode == 0 and str(quota // 1024) in df.stdout


async def test_permissions_per_mount(live_server: LiveServer, tmp_path: Path) -> None:
    """One folder, a writer and a read-only auditor who sees it elsewhere in their tree."""
    docs = add_folder(live_server, "docs")
    writer, auditor = live_server.add_user(), live_server.add_user()
    mount(live_server, writer, "/docs", "docs")
    mount(live_server, auditor, "/audit", "docs")
    live_server.set_access(auditor, paths=(("/audit", "list,download"),))
    local = tmp_path / "r.txt"
    local.write_text("report\n")
    assert live_server.sftp(writer, f"put {local} /docs/r.txt\n").returncode == 0
    got = live_server.sftp(auditor, f"get /audit/r.txt {tmp_path}/seen.txt\n")
    assert got.returncode == 0 and (tmp_path / "seen.txt").read_text() == "report\n"
    denied = live_server.sftp(auditor, "rm /audit/r.txt\n")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert (docs / "r.txt").exists()
    assert live_server.sftp(auditor, f"put {local} /mine.txt\n").returncode == 0  # own home


def test_admin_commands_validate_and_change_nothing_on_bad_input(tmp_path: Path) -> None:
    assert run(tmp_path, "user", "add", "ann").returncode == 0
    ok = run(tmp_path, "folder", "add", "team", str(tmp_path / "team"), "--quota", "1GiB")
    assert ok.returncode == 0 and (tmp_path / "team").is_dir()
    bad = [
        ("folder", "add", "inhome", str(tmp_path / "data" / "homes" / "ann")),
        ("folder", "add", "nested", str(tmp_path / "team" / "sub")),
        ("folder", "add", "Bad/Name", str(tmp_path / "x")),
        ("user", "folder", "add", "ann", "nope", "/x"),
        ("user", "folder", "add", "ann", "team", "/a/b"),
        ("user", "folder", "add", "ann", "team", "/t", "--perm", "read"),
        ("user", "perm", "ann", "list,fly"),
        ("user", "perm", "ann", "relative/path", "list"),
        ("user", "limit", "ann", "--allow-from", "10.0.0.0/99"),
        ("user", "limit", "ann", "--expires", "next tuesday"),
        ("user", "limit", "ann", "--upload", "fast"),
    ]
    before = run(tmp_path, "user", "show", "ann", "--json").stdout
    for args in bad:
        r = run(tmp_path, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("sftpd: "), args
    assert run(tmp_path, "user", "show", "ann", "--json").stdout == before
    assert json.loads(run(tmp_path, "folder", "list", "--json").stdout)[0]["name"] == "team"
    assert run(tmp_path, "user", "folder", "add", "ann", "team", "/t").returncode == 0
    shown = json.loads(run(tmp_path, "user", "show", "ann", "--json").stdout)
    assert shown["folders"] == {"/t": "team"}
    # one place per folder per user: a second mount would be a second set of rules
    twice = run(tmp_path, "user", "folder", "add", "ann", "team", "/t2", "--perm", "all")
    assert twice.returncode == 2 and "already sees folder team at /t" in twice.stderr
    shown = json.loads(run(tmp_path, "user", "show", "ann", "--json").stdout)
    assert shown["folders"] == {"/t": "team"}


async def test_workers_share_one_folder_quota_exactly(tmp_path: Path) -> None:
    """OpenSSH sftp from two users, spread over two worker processes, into one folder."""
    keys = {}
    for name in ("wes", "wyn"):
        key = keys[name] = tmp_path / f"id_{name}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        assert run(tmp_path, "user", "add", name, "--key", f"{key}.pub").returncode == 0
    quota = 6 * MiB + 321
    assert run(tmp_path, "folder", "add", "pool", str(tmp_path / "pool"), "--quota",
               str(quota)).returncode == 0  # fmt: skip
    for name in keys:
        assert run(tmp_path, "user", "folder", "add", name, "pool", "/pool").returncode == 0
    local = tmp_path / "chunk.bin"
    local.write_bytes(os.urandom(MiB))
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0")
    try:
        assert len(worker_pids(server.proc.pid)) == 2
        hosts = known_hosts(tmp_path, server.port)

        def client(name: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                ["sftp", "-b", "-", "-P", str(server.port), "-F", "/dev/null",
                 "-o", f"IdentityFile={keys[name]}", "-o", "IdentitiesOnly=yes",
                 "-o", f"UserKnownHostsFile={hosts}", "-o", "BatchMode=yes",
                 f"{name}@127.0.0.1"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip

        procs = [(client(name), name, n) for name in keys for n in range(3)]
        for proc, name, n in procs:  # all are running; '-put': go on after a refusal
            batch = "".join(f"-put {local} /pool/{name}{n}-{i}.bin\n" for i in range(3))
            assert proc.stdin is not None
            proc.stdin.write(batch)
            proc.stdin.close()
        for proc, _, _ in procs:
            proc.wait(120)
        errors = [proc.stderr.read() for proc, _, _ in procs if proc.stderr]
        pool = tmp_path / "pool"
        used, files = scan_home(str(pool))
        assert quota - MiB < used <= quota, errors  # 18 MiB offered: filled up, never over
        deadline = time.monotonic() + 10
        while ledger_row(tmp_path, folder_account("pool")) != (used, files, 0):
            assert time.monotonic() < deadline, ledger_row(tmp_path, folder_account("pool"))
            await asyncio.sleep(0.05)
        for name in keys:
            assert ledger_row(tmp_path, name)[:2] == (0, 0)
    finally:
        code, err = server.stop()
    assert code == 0, err
