"""Events you can build on: one per complete file, recorded before the operation is answered,
delivered at least once with a stable id, and kept as a history (issue 26)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sftpd.events import EVENT_NAMES, Event
from sftpd.events.hooks import Hook
from sftpd.store import FolderRecord, open_store
from sftpd.store.outbox import EventQuery, NewEvent
from tests.support import Xfer, run
from tests.support.live import LiveServer, User, start_live_server, stop_live_server
from tests.support.receiver import Receiver, wait_until

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def atomic(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LiveServer]:
    """--upload-mode atomic, the shipped example hook on /incoming/*, a webhook for all."""
    tmp = tmp_path_factory.mktemp("events")
    example = (sys.executable, str(ROOT / "docs" / "examples" / "move_to_processed.py"))
    hooks = (
        Hook(events=("upload",), paths=("/incoming/*",), command=example, timeout=20),
        Hook(events=EVENT_NAMES, url=receiver.url, timeout=5),
    )
    server = start_live_server(tmp, hooks=hooks, upload_mode="atomic")
    yield server
    stop_live_server(server)


def settled(server: LiveServer) -> None:
    """Wait until the outbox holds no pending delivery (a repeat would have to be one)."""
    wait_until(lambda: server.call(server.service.store.outbox_stats()).pending == 0, "pending")


def mine(receiver: Receiver, user: User, name: str = "upload") -> list[dict[str, Any]]:
    return [e for e in receiver.events() if e["user"] == user.name and e["name"] == name]


def test_a_segmented_xfer_put_is_one_upload_event(
    atomic: LiveServer, receiver: Receiver, tmp_path: Path
) -> None:
    """Segments over four connections (64 MiB by default; 20 here): before, five early
    events (the first with size 0), the example hook moved a partial file and xfer failed."""
    user = atomic.add_user()
    (user.home / "incoming").mkdir()
    data = os.urandom(20 * MiB + 4321)
    (tmp_path / "big.bin").write_bytes(data)
    xfer = Xfer(tmp_path, f"{user.name}@127.0.0.1:{atomic.port}", user.key_path,
                atomic.known_hosts)  # fmt: skip
    r = xfer("--json", "put", "-j", "4", "--segment-from", "16MiB", "big.bin", "incoming/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] == ["sha256"]
    moved = user.home / "processed" / "big.bin"
    wait_until(moved.exists, "the example hook never moved the file")
    assert moved.read_bytes() == data
    wait_until(lambda: mine(receiver, user), "no upload event")
    settled(atomic)  # every delivery made: no second event can still come
    [event] = mine(receiver, user)
    assert event["path"] == "/incoming/big.bin" and event["size"] == len(data)
    assert event["sha256"] == hashlib.sha256(data).hexdigest()  # what xfer had it compute
    assert not [e for e in receiver.events() if "xfer-part" in e.get("path", "")
                and e["name"] == "upload"]  # fmt: skip
    assert list((user.home / "incoming").iterdir()) == []  # no part file left
    history = atomic.call(atomic.service.store.query_events(EventQuery(user=user.name)))
    parts = {e.data["path"] for e in history if e.data["name"] == "upload-part"}
    assert parts == {"/incoming/.big.bin.xfer-part"}  # the history still shows who wrote it


async def test_a_partial_name_renamed_is_the_upload_even_in_a_drop_box(
    atomic: LiveServer, receiver: Receiver
) -> None:
    """rclone's NAME.XXXXXXXX.partial and WinSCP's NAME.filepart: the rename is the upload.
    A user who may only upload (no rename, no list) can finish it too."""
    user = atomic.add_user()
    (user.home / "drop").mkdir()
    atomic.set_access(user, paths=(("/drop", "upload"),))
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        for part, final in (("/drop/r.bin.1f2e3d4c.partial", "/drop/r.bin"),
                            ("/drop/w.txt.filepart", "/drop/w.txt")):  # fmt: skip
            async with sftp.open(part, "wb") as f:
                await f.write(b"x" * 1000)
            await sftp.rename(part, final)
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="rename not allowed"):
            await sftp.rename("/drop/w.txt", "/drop/v.txt")
    await asyncio.to_thread(wait_until, lambda: len(mine(receiver, user)) >= 2, "no uploads")
    await asyncio.to_thread(settled, atomic)
    uploads = mine(receiver, user)
    assert sorted((e["path"], e["size"]) for e in uploads) == [
        ("/drop/r.bin", 1000), ("/drop/w.txt", 1000)]  # fmt: skip
    assert mine(receiver, user, "rename") == []
    assert (user.home / "drop" / "r.bin").stat().st_size == 1000


async def test_only_the_writer_of_a_closed_part_file_finishes_it(
    atomic: LiveServer, receiver: Receiver
) -> None:
    """Two users of one shared folder (upload, and overwrite for eve): eve cannot publish
    (or be named in the history for) bob's part file, not even after opening it for
    writing and writing nothing. A part file still being written (a handle here, or a
    descriptor in another process: any worker) is not finished by a rename; a hard link
    never takes an in-progress name."""
    store = atomic.service.store
    shared = atomic.tmp / "shared-drop"
    shared.mkdir()
    atomic.call(store.add_folder(FolderRecord("drop", str(shared), 0)))
    bob, eve = atomic.add_user(), atomic.add_user()
    for u, rights in ((bob, "upload"), (eve, "upload,overwrite")):
        atomic.call(store.mount(u.name, "team", "drop"))
        atomic.set_access(u, paths=(("/team", rights),))
    async with (
        atomic.connect(bob) as cb, cb.start_sftp_client() as sb,
        atomic.connect(eve) as ce, ce.start_sftp_client() as se,
    ):  # fmt: skip
        async with sb.open("/team/.x.xfer-part", "wb") as f:
            await f.write(b"bob's" * 100)
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="rename not allowed"):
            await se.rename("/team/.x.xfer-part", "/team/x")
        async with se.open("/team/.x.xfer-part", "ab"):
            pass  # opened for writing, nothing written: still bob's
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="rename not allowed"):
            await se.rename("/team/.x.xfer-part", "/team/x")
        await sb.rename("/team/.x.xfer-part", "/team/x")
    async with atomic.connect(bob) as cb, cb.start_sftp_client() as sb:  # bob's home: all
        async with sb.open("/.w.xfer-part", "wb") as f:
            await f.write(b"half")
        async with sb.open("/.w.xfer-part", "ab") as f:  # in place, even in atomic mode
            await f.write(b" and")
            await sb.rename("/.w.xfer-part", "/w")  # still written: a rename, not an upload
            await f.write(b" the rest")
        async with sb.open("/.v.xfer-part", "wb") as f:
            await f.write(b"v")
        fd = os.open(bob.home / ".v.xfer-part", os.O_WRONLY)  # another process writing it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            await sb.rename("/.v.xfer-part", "/v")
        finally:
            os.close(fd)
        async with sb.open("/.z.xfer-part", "wb") as f:
            await f.write(b"linked")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="finished by a rename"):
            await sb.link("/.z.xfer-part", "/z")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="finished by a rename"):
            await sb.link("/w", "/.y.xfer-part")
    await asyncio.to_thread(wait_until, lambda: len(mine(receiver, bob, "rename")) >= 2, "none")
    await asyncio.to_thread(settled, atomic)
    assert [(e["path"], e["size"]) for e in mine(receiver, bob)] == [("/team/x", 500)]
    assert sorted((e["path"], e["target"]) for e in mine(receiver, bob, "rename")) == [
        ("/.v.xfer-part", "/v"), ("/.w.xfer-part", "/w")]  # fmt: skip
    assert mine(receiver, eve) == []


async def test_an_upload_event_never_carries_a_digest_of_other_content(
    atomic: LiveServer, receiver: Receiver
) -> None:
    """A digest computed by a checksum command, then the file changed at the same size and
    its mtime set back: the rename's event must not carry the old digest."""
    user = atomic.add_user()
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/.d.xfer-part", "wb") as f:
            await f.write(b"A" * 4096)
        then = asyncssh.SFTPAttrs(atime=1_700_000_000, mtime=1_700_000_000)
        await sftp.setstat("/.d.xfer-part", then)  # whole seconds: a setstat can repeat it
        r = await conn.run("sha256sum .d.xfer-part", check=True)
        assert hashlib.sha256(b"A" * 4096).hexdigest() in str(r.stdout)
        async with sftp.open("/.d.xfer-part", "r+b") as f:
            await f.write(b"B")
        await sftp.setstat("/.d.xfer-part", then)
        await sftp.rename("/.d.xfer-part", "/d")
    await asyncio.to_thread(wait_until, lambda: mine(receiver, user), "no upload event")
    [event] = mine(receiver, user)
    assert event.get("sha256", "") in ("", hashlib.sha256(b"B" + b"A" * 4095).hexdigest())


async def test_an_event_is_recorded_before_the_operation_is_answered(
    atomic: LiveServer,
) -> None:
    user = atomic.add_user()
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        for i in range(20):
            async with sftp.open(f"/f{i}", "wb") as f:
                await f.write(b"data")
            # No wait: the close's answer means the event is in the store.
            found = atomic.call(atomic.service.store.query_events(EventQuery(user=user.name)))
            uploads = [e for e in found if e.data["name"] == "upload"]
            assert [e.data["path"] for e in uploads][-1] == f"/f{i}"
            assert len(uploads) == i + 1 and len(uploads[-1].deliveries) == 1  # the webhook's
        for verb, op in (("mkdir", sftp.mkdir), ("rmdir", sftp.rmdir)):  # so are these
            await op("/m")
            found = atomic.call(atomic.service.store.query_events(EventQuery(user=user.name)))
            assert (found[-1].data["name"], found[-1].data["path"]) == (verb, "/m")


async def test_a_refusing_receiver_gets_the_same_event_again_with_its_id(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=2)
    server = start_live_server(tmp_path, hooks=(Hook(events=("upload",), url=receiver.url,
                                                     timeout=5),))  # fmt: skip
    try:
        user = server.add_user()
        async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("/a.txt", "wb") as f:
                await f.write(b"hello")
        await asyncio.to_thread(wait_until, receiver.events, "never delivered", 30)
        [(headers, body)] = receiver.requests
        assert receiver.attempts == 3  # 503, 503 (backoff 1 s, 2 s), then 204
        event = json.loads(body)
        assert headers["X-Sftpd-Event-Id"] == event["id"] and len(event["id"]) == 24
        shown = run(tmp_path, "--data-dir", str(tmp_path / "data"), "events", "show", event["id"])
        assert shown.returncode == 0, shown.stderr
        assert "delivered after 3 attempt(s)" in shown.stdout and "HTTP 503" not in shown.stdout
    finally:
        stop_live_server(server)
        receiver.close()


async def test_events_wait_in_the_store_across_a_restart(tmp_path: Path) -> None:
    """The receiver is down while 20 files are uploaded and the server stops; the next
    start delivers every one, each once, with the id it was recorded with."""
    receiver = Receiver(down=True)
    hooks = (Hook(events=("upload",), url=receiver.url, timeout=5, backoff_max=1),)
    server = start_live_server(tmp_path, hooks=hooks)
    user = server.add_user()
    try:
        async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
            for i in range(20):
                async with sftp.open(f"/f{i}", "wb") as f:
                    await f.write(b"x" * i)
        recorded = server.call(server.service.store.query_events(EventQuery(names=("upload",))))
    finally:
        stop_live_server(server)
    assert receiver.attempts >= 1 and receiver.events() == []
    receiver.down = False
    again = start_live_server(tmp_path, hooks=hooks)
    try:
        await asyncio.to_thread(wait_until, lambda: len(receiver.events()) >= 20, "lost", 30)
        await asyncio.to_thread(settled, again)
        ids = [e["id"] for e in receiver.events()]
        assert sorted(ids) == sorted(e.id for e in recorded) and len(set(ids)) == 20
        stats = again.call(again.service.store.outbox_stats())
        assert (stats.pending, stats.delivered, stats.dead) == (0, 20, 0)
    finally:
        stop_live_server(again)
        receiver.close()


async def test_dead_letters_are_listed_and_retried(tmp_path: Path) -> None:
    receiver = Receiver(down=True)
    hooks = (Hook(events=("upload",), url=receiver.url, timeout=5, horizon=1.5, backoff_max=0.5),)
    server = start_live_server(tmp_path, hooks=hooks)
    data = ("--data-dir", str(tmp_path / "data"))
    try:
        user = server.add_user()
        async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
            for name in ("a", "b"):
                async with sftp.open(f"/{name}", "wb") as f:
                    await f.write(b"1")

        def dead() -> list[dict[str, Any]]:
            r = run(tmp_path, *data, "events", "list", "--state", "dead", "--json")
            assert r.returncode == 0, r.stderr
            return list(json.loads(r.stdout))

        await asyncio.to_thread(wait_until, lambda: len(dead()) == 2, "never dead-lettered", 30)
        assert {d["deliveries"][0]["error"] for d in dead()} == {"HTTP 503"}
        receiver.down = False
        r = run(tmp_path, *data, "events", "retry", "--all-dead")
        assert r.returncode == 0 and "2 deliveries pending again" in r.stdout
        await asyncio.to_thread(wait_until, lambda: len(receiver.events()) == 2, "not retried")
        assert dead() == []
        bad = run(tmp_path, *data, "events", "retry")
        assert bad.returncode == 1 and "--all-dead" in bad.stderr
    finally:
        stop_live_server(server)
        receiver.close()


async def test_history_says_who_logged_in_and_what_they_touched(
    atomic: LiveServer, receiver: Receiver
) -> None:
    user = atomic.add_user()
    with pytest.raises(Exception):  # noqa: B017 (asyncssh's auth error)
        await atomic.connect(user, client_keys=None, password="wrong")
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/d")
        async with sftp.open("/d/a.txt", "wb") as f:
            await f.write(b"hello")
        async with sftp.open("/d/a.txt", "rb") as f:
            await f.read()
        await sftp.rename("/d/a.txt", "/d/b.txt")
        await sftp.remove("/d/b.txt")
    data = ("--data-dir", str(atomic.settings.data_dir))

    def listed(*args: str) -> list[dict[str, Any]]:
        r = run(atomic.tmp, *data, "events", "list", "--user", user.name, "--json", *args)
        assert r.returncode == 0, r.stderr
        return list(json.loads(r.stdout))

    await asyncio.to_thread(wait_until, lambda: listed("--type", "logout"), "no logout")
    names = [e["name"] for e in listed()]
    assert names == ["login-failed", "login", "mkdir", "upload", "download", "rename", "delete",
                     "logout"]  # fmt: skip
    failed, ok = listed("--type", "login-failed", "--type", "login")
    assert (failed["method"], failed["addr"]) == ("password", "127.0.0.1")
    assert (ok["method"], ok["addr"]) == ("publickey", "127.0.0.1")
    assert [e["name"] for e in listed("--path", "/d/*")] == ["upload", "download", "rename",
                                                             "delete"]  # fmt: skip
    assert listed("--since", "1h") and listed("--since", "2099-01-01") == []
    text = run(atomic.tmp, *data, "events", "list", "--user", user.name, "--type", "rename")
    assert "/d/a.txt -> /d/b.txt" in text.stdout and "1 delivered" in text.stdout
    bad = run(atomic.tmp, *data, "events", "list", "--type", "uplaod")
    assert bad.returncode == 1 and "unknown event type 'uplaod'" in bad.stderr


async def test_history_lines_cannot_be_forged_by_a_file_name(atomic: LiveServer) -> None:
    user = atomic.add_user()
    evil = "a\nb\rc\x1b[2K\u202egnp.txt"
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/" + evil, "wb") as f:
            await f.write(b"x")
    data = ("--data-dir", str(atomic.settings.data_dir))
    listed = run(atomic.tmp, *data, "events", "list", "--user", user.name, "--type", "upload")
    [line] = listed.stdout.splitlines()
    assert "/a\\nb\\rc\\x1b[2K\\u202egnp.txt" in line
    [event] = json.loads(run(atomic.tmp, *data, "events", "list", "--user", user.name,
                             "--type", "upload", "--json").stdout)  # fmt: skip
    assert event["path"] == "/" + evil  # the JSON keeps the name as it is
    shown = run(atomic.tmp, *data, "events", "show", event["id"]).stdout
    assert all(ord(c) >= 32 and c not in "\x7f\u202e" for c in shown.replace("\n", ""))


async def test_a_name_that_is_not_utf8_is_recorded_and_holds_nothing_up(
    atomic: LiveServer, receiver: Receiver
) -> None:
    """No database column takes a lone surrogate (how such a name decodes): the first one
    stopped every later event of the process, and the operations waiting for them."""
    user = atomic.add_user()
    async with atomic.connect(user) as conn, conn.start_sftp_client() as sftp:
        await asyncio.wait_for(sftp.mkdir(b"/bad\xff"), 10)
        async with sftp.open(b"/bad\xff/f\xfe.txt", "wb") as f:
            await f.write(b"odd")
        async with sftp.open("/ok.txt", "wb") as f:
            await asyncio.wait_for(f.write(b"fine"), 10)
    found = atomic.call(atomic.service.store.query_events(EventQuery(user=user.name)))
    assert [(e.data["name"], e.data.get("path")) for e in found][1:4] == [
        ("mkdir", "/bad\udcff"),
        ("upload", "/bad\udcff/f\udcfe.txt"),
        ("upload", "/ok.txt"),
    ]
    data = ("--data-dir", str(atomic.settings.data_dir))
    listed = run(atomic.tmp, *data, "events", "list", "--user", user.name, "--json")
    assert "/bad\udcff/f\udcfe.txt" in [e.get("path") for e in json.loads(listed.stdout)]
    await asyncio.to_thread(wait_until, lambda: len(mine(receiver, user)) == 2, "undelivered")


async def test_history_is_pruned_after_its_retention(tmp_path: Path) -> None:
    server = start_live_server(tmp_path, history_days=2 / 86400)  # two seconds
    try:
        user = server.add_user()
        async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
            await sftp.mkdir("/old")

        def kept() -> int:
            return len(server.call(server.service.store.query_events(EventQuery(user=user.name))))

        assert kept() >= 2  # login, mkdir
        await asyncio.to_thread(wait_until, lambda: kept() == 0, "never pruned", 20)
    finally:
        stop_live_server(server)


async def test_a_path_filter_finds_matches_behind_many_that_share_its_start(
    tmp_path: Path,
) -> None:
    """The store narrows by the pattern's literal start (``/report``); matching the rest
    pages back until enough match: 2,500 newer ``/report...`` events that do not match
    once hid an upload that did."""
    assert run(tmp_path, "user", "add", "eve").returncode == 0
    store = await open_store(str(tmp_path / "data" / "sftpd.db"))
    try:
        await store.record_events([NewEvent(Event("upload", "eve", path="/report1.csv")
                                            .to_dict())])  # fmt: skip
        noise = [NewEvent(Event("upload", "eve", path=f"/report{i}.txt").to_dict())
                 for i in range(2500)]  # fmt: skip
        await store.record_events(noise)
    finally:
        await store.close()
    r = run(tmp_path, "events", "list", "--path", "/report*.csv", "--json")
    assert r.returncode == 0, r.stderr
    assert [e["path"] for e in json.loads(r.stdout)] == ["/report1.csv"]
    r = run(tmp_path, "events", "list", "--path", "/report*.txt", "--limit", "3", "--json")
    assert [e["path"] for e in json.loads(r.stdout)] == [
        f"/report{i}.txt" for i in (2497, 2498, 2499)
    ]
