"""Issue 25: every route to what a rule protects, each through real clients.

A rule names a path; these tests reach the same bytes another way (a renamed ancestor,
a hard link, a chain of links a server-side hook follows, a second handle, a mount's
root, a handle without access flags) and check the rule still holds. Each failed on
the main of 2026-12-04.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from sftpd.events.hooks import Hook
from sftpd.store import FolderRecord
from tests.server.test_access import snapshot
from tests.support.live import (
    LiveServer,
    User,
    assert_exact,
    start_live_server,
    stop_live_server,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "move_to_processed.py"
PFLAGS = asyncssh.FXF_READ, asyncssh.FXF_WRITE, asyncssh.FXF_CREAT


def ruled(server: LiveServer, *, permissions: str = "all") -> User:
    """A user with a hidden /secret, a read-only /reports, a rule below an unrestricted
    /top, and an upload-only /drop (that may rename), each holding a file."""
    user = server.add_user()
    for d in ("secret", "reports", "top/reports", "drop", "mine"):
        (user.home / d).mkdir(parents=True)
    (user.home / "secret" / "r.txt").write_text("hidden\n")
    (user.home / "reports" / "r.txt").write_text("figures\n")
    (user.home / "top" / "reports" / "r.txt").write_text("deeper\n")
    (user.home / "drop" / "in.txt").write_text("dropped\n")
    (user.home / "mine" / "m.txt").write_text("mine\n")
    server.set_access(
        user,
        permissions=None if permissions == "all" else permissions,
        paths=(("/secret", "none"), ("/reports", "list,download"), ("/top/reports", "none"),
               ("/drop", "upload,rename")),
    )  # fmt: skip
    return user


def wait_for(condition: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def inside(path: Path, root: Path) -> bool:
    resolved = os.path.realpath(path)
    return os.path.commonpath([resolved, os.path.realpath(root)]) == os.path.realpath(root)


# -- 1. links a process on the server follows ---------------------------------------


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server running the shipped example hook on every upload to /incoming."""
    hooks = (
        Hook(events=("upload",), paths=("/incoming/*",),
             command=(sys.executable, str(EXAMPLE)), timeout=20),
    )  # fmt: skip
    server = start_live_server(tmp_path_factory.mktemp("routes-hooked"), hooks=hooks)
    yield server
    stop_live_server(server)


def hook_outcomes(server: LiveServer) -> list[str]:
    """What the hooks of this module's server did so far, in order."""
    return [
        r.getMessage()
        for r in server.logs.records
        if r.name == "sftpd.hooks" and r.getMessage() in ("hook ran", "hook failed")
    ]


def next_outcome(server: LiveServer, seen: int) -> str:
    """Wait for the hook run after the first ``seen`` ones; its outcome."""
    wait_for(lambda: len(hook_outcomes(server)) > seen, "the hook never ran")
    return hook_outcomes(server)[seen]


async def test_a_link_chain_never_leads_the_example_hook_into_another_home(
    hooked: LiveServer,
) -> None:
    victim = hooked.add_user()
    (victim.home / "report.csv").write_text("the victim's own\n")
    user = hooked.add_user()
    seen = len(hook_outcomes(hooked))
    async with hooked.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("d")
        await sftp.symlink("..", "d/up")
        await sftp.symlink(f"d/up/../{victim.name}", "processed")
        await sftp.mkdir("incoming")
        async with sftp.open("incoming/report.csv", "w") as f:
            await f.write("planted by the hostile user\n")
    for link in ("d/up", "processed"):  # as any process on the server follows them
        assert inside(user.home / link, user.home), link
    # The hook refused the link where it expected a directory: the file stayed put.
    assert next_outcome(hooked, seen) == "hook failed"
    assert (victim.home / "report.csv").read_text() == "the victim's own\n"
    assert (user.home / "incoming" / "report.csv").exists()


async def test_the_example_hook_refuses_a_link_left_by_an_older_server(
    hooked: LiveServer,
) -> None:
    """Links on disk from before this release may climb: the example never follows one."""
    victim = hooked.add_user()
    (victim.home / "report.csv").write_text("the victim's own\n")
    user = hooked.add_user()
    os.symlink(f"../{victim.name}", user.home / "processed")
    (user.home / "incoming").mkdir()
    seen = len(hook_outcomes(hooked))
    async with hooked.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("incoming/report.csv", "w") as f:
            await f.write("planted\n")
    assert next_outcome(hooked, seen) == "hook failed"
    assert (victim.home / "report.csv").read_text() == "the victim's own\n"
    assert (user.home / "incoming" / "report.csv").read_text() == "planted\n"


async def test_a_link_chain_in_a_folder_stays_in_the_folder(
    live_server: LiveServer, user: User
) -> None:
    team = live_server.tmp / "folder-chain"
    team.mkdir()
    (live_server.tmp / "canary.txt").write_text("beside the folder\n")
    store = live_server.service.store
    live_server.call(store.add_folder(FolderRecord("chain", str(team), 0)))
    live_server.call(store.mount(user.name, "team", "chain"))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.symlink(".", "/team/up")
        await sftp.symlink("up/../canary.txt", "/team/x")
        await sftp.symlink("/team/up/..", "/team/sub-up")  # climbs via the mount: refused
    assert inside(team / "x", team) and inside(team / "up", team)
    assert not os.path.lexists(team / "sub-up") or inside(team / "sub-up", team)


# -- 2. renaming what a rule names -------------------------------------------------

RENAMES = [
    "rename secret opened",
    "rename reports open",
    "rename top t2",
    "rename top/reports top/open",
    "rename mine reports",
    "rename mine top/reports",
    "rmdir top/reports",
    "rename drop/in.txt out.txt",  # out of an upload-only place: a copy needs download
]


def test_renaming_or_removing_a_ruled_directory_is_refused(live_server: LiveServer) -> None:
    user = ruled(live_server)
    before = snapshot(user.home)
    for verb in RENAMES:
        r = live_server.sftp(user, verb + "\n")
        assert r.returncode != 0, verb
        assert "Permission denied" in r.stdout + r.stderr, (verb, r.stderr)
    assert snapshot(user.home) == before
    # and what the rules protect is still protected where it is
    r = live_server.sftp(user, f"get secret/r.txt {live_server.tmp}/got.txt\n")
    assert r.returncode != 0 and not (live_server.tmp / "got.txt").exists()
    # moves that change no rights still work, inside a ruled place too
    ok = live_server.sftp(user, "rename mine/m.txt m.txt\nrename drop/in.txt drop/in2.txt\n")
    assert ok.returncode == 0, ok.stderr


async def test_posix_rename_of_a_parent_of_a_rule_is_refused(live_server: LiveServer) -> None:
    user = ruled(live_server)
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for old, new in (("/top", "/t2"), ("/reports", "/r2"), ("/mine", "/secret")):
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="holds access rules"):
                await sftp.posix_rename(old, new)
    assert (user.home / "top" / "reports" / "r.txt").read_text() == "deeper\n"


# -- 3. a second name for a protected file -----------------------------------------


def test_a_hard_link_cannot_make_a_read_only_file_writable(
    live_server: LiveServer, tmp_path: Path
) -> None:
    user = ruled(live_server)
    evil = tmp_path / "evil.txt"
    evil.write_text("rewritten\n")
    r = live_server.sftp(user, f"ln reports/r.txt alias.txt\nput {evil} alias.txt\n")
    assert r.returncode != 0 and "Permission denied" in r.stdout + r.stderr
    assert (user.home / "reports" / "r.txt").read_text() == "figures\n"
    assert (user.home / "reports" / "r.txt").stat().st_nlink == 1
    ok = live_server.sftp(user, "ln mine/m.txt mine/again.txt\n")  # same rights: fine
    assert ok.returncode == 0, ok.stderr


# -- 4. a second handle in atomic mode -----------------------------------------------


async def test_an_atomic_upload_never_replaces_a_file_without_overwrite(
    tmp_path: Path,
) -> None:
    server = start_live_server(tmp_path, upload_mode="atomic")
    try:
        user = server.add_user()
        server.set_access(user, permissions="list,download,upload")
        async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
            a = await sftp.open("report.csv", "wb")
            await a.write(b"A's version, closed last\n")
            async with sftp.open("report.csv", "wb") as b:
                await b.write(b"B's complete file\n")
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="overwrite not allowed"):
                await a.close()
            assert await sftp.listdir("/") == [".", "..", "report.csv"]
        assert (user.home / "report.csv").read_bytes() == b"B's complete file\n"
        assert os.listdir(user.home) == ["report.csv"]  # no temporary file left
        assert_exact(server, user)
    finally:
        stop_live_server(server)


# -- 5. a read-only mount's root ---------------------------------------------------


def test_a_read_only_mount_and_the_home_root_keep_their_attributes(
    live_server: LiveServer, user: User
) -> None:
    audit = live_server.tmp / "folder-audit"
    audit.mkdir()
    store = live_server.service.store
    live_server.call(store.add_folder(FolderRecord("audit", str(audit), 0)))
    live_server.call(store.mount(user.name, "audit", "audit"))
    live_server.set_access(user, paths=(("/audit", "list,download"),))
    (audit / "sub").mkdir()
    before = os.stat(audit)
    home_before = os.stat(user.home)
    for verb in ("chmod 000 /audit", "chmod 000 /audit/sub/..", "chmod 000 /", "chmod 700 .",
                 "chmod 000 /audit/sub"):  # fmt: skip
        r = live_server.sftp(user, verb + "\n")
        assert r.returncode != 0, verb
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", live_server.port, user.name, key_filename=str(user.key_path),
                   look_for_keys=False, allow_agent=False)  # fmt: skip
    try:
        sftp = client.open_sftp()
        for path in ("/audit", "/audit/sub/.."):
            with pytest.raises(PermissionError):
                sftp.utime(path, (1, 1))
    finally:
        client.close()
    assert stat.S_IMODE(os.stat(audit / "sub").st_mode) != 0
    after, home_after = os.stat(audit), os.stat(user.home)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert home_after.st_mode == home_before.st_mode


# -- 7. a handle without access flags ----------------------------------------------


async def test_a_handle_without_access_flags_reveals_nothing_stat_would_not(
    live_server: LiveServer,
) -> None:
    user = ruled(live_server)
    (user.home / "blind").mkdir()
    (user.home / "blind" / "old.bin").write_bytes(b"x" * 1234)
    live_server.set_access(user, paths=(("/secret", "none"), ("/drop", "upload"),
                                        ("/blind", "upload,overwrite")))  # fmt: skip
    read, write, creat = PFLAGS
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for path, pflags in (("/secret/r.txt", 0), ("/secret/r.txt", creat),
                             ("/drop/in.txt", 0), ("/drop/in.txt", creat),
                             ("/drop/in.txt", read | creat)):  # fmt: skip
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open(path, pflags)
        # A writer on an existing file it may not list learns no size from fstat...
        f = await sftp.open("/blind/old.bin", write)
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="list not allowed"):
            await f.stat()
        await f.close()
        # ...while a file it created is its own.
        f = await sftp.open("/drop/new.bin", write | creat, encoding=None)
        await f.write(b"abc")
        assert (await f.stat()).size == 3
        await f.close()


# -- 8. files created without writing ------------------------------------------------


async def test_files_created_without_write_count_toward_max_files(
    live_server: LiveServer,
) -> None:
    user = live_server.add_user()
    live_server.call(live_server.service.store.set_max_files(user.name, 3))
    read, _, creat = PFLAGS
    made = 0
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for n in range(6):
            try:
                f = await sftp.open(f"f{n}", creat if n % 2 else read | creat)
            except asyncssh.SFTPFailure:
                continue
            made += 1
            await f.close()
        sp = json.loads((await conn.run("sp --json", check=True)).stdout or "{}")
    assert made == 3 and len(os.listdir(user.home)) == 3
    assert sp["files"] == 3
    assert_exact(live_server, user)


async def test_a_file_created_without_write_is_counted_before_its_open_returns(
    live_server: LiveServer,
) -> None:
    """Found by the model test: with a claim held (after any write) a CREAT-only open
    counted its file only in this process until the session ended."""
    user = live_server.add_user()
    _, _, creat = PFLAGS
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("w.bin", "wb") as f:
            await f.write(b"x" * 1000)  # claims a chunk that the session keeps
        assert_exact(live_server, user)
        await (await sftp.open("c.bin", creat)).close()
        assert_exact(live_server, user)  # while the session lives


# -- found by the hostile review: what a `none` directory holds -----------------------


async def test_nothing_tells_what_a_none_directory_holds(live_server: LiveServer) -> None:
    """realpath and the errors of stat did: "not a directory" named a file, a followed
    link named its target."""
    user = ruled(live_server)
    (user.home / "secret" / "sub").mkdir()
    os.symlink("r.txt", user.home / "secret" / "inlink")
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        for path in ("/secret/r.txt/x", "/secret/nope/x", "/secret/sub/x", "/secret/inlink",
                     "/secret/nope", "/top/reports/r.txt/x", "/secret/sub/../r.txt"):  # fmt: skip
            for call in (sftp.realpath, sftp.stat, sftp.lstat):
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="nothing is allowed"):
                    await call(path)
        assert await sftp.realpath("/secret") == "/secret"  # the name itself is listed in /
    # A user whose own set is none still reaches a mount opened below the root.
    live_server.set_access(user, permissions="none", paths=(("/reports", "list,download"),))
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        assert "r.txt" in await sftp.listdir("/reports")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.stat("/mine/m.txt")


def test_a_ruled_directory_keeps_its_attributes_under_its_own_rule(
    live_server: LiveServer,
) -> None:
    """The entry /reports is in / (all allowed), but its rule says read-only: chmod 000
    would lock even the server's own reads out of it."""
    user = ruled(live_server)
    before = os.stat(user.home / "reports")
    for verb in ("chmod 000 reports", "chmod 000 reports/.", "chmod 000 secret"):
        r = live_server.sftp(user, verb + "\n")
        assert r.returncode != 0, verb
    assert os.stat(user.home / "reports").st_mode == before.st_mode
    ok = live_server.sftp(user, "chmod 700 top\nchmod 700 mine\n")  # top's own rule: all
    assert ok.returncode == 0, ok.stderr
