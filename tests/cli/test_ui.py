"""``xfer ui`` driven by Textual's pilot against a live sftpd, at 80x24: browse, copy both
ways, mkdir, rename, delete with confirmation, filter, cancel and resume, a permission
error, an unknown host key. With XFER_UI_SHOTS=DIR the screens are saved there as SVG
(docs/ui.md's pictures come from here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from cli.session import Options
from cli.ui.app import XferApp
from cli.ui.dialogs import Ask, Confirm, Help
from cli.ui.panes import Pane
from tests.support.live import LiveServer, OpenSSHServer, User

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XFER_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("XFER_TARGET", raising=False)


def local_dir(tmp_path: Path, files: dict[str, bytes] | None = None) -> Path:
    """The left pane's directory, with ``files`` (relative name -> content) in it."""
    local = tmp_path / "local"
    local.mkdir()
    for name, content in (files or {}).items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(content)
    return local


def app_for(live_server: LiveServer, user: User, local: Path, known: Path | None = None) -> XferApp:
    opts = Options(
        target=f"{user.name}@127.0.0.1:{live_server.port}",
        keys=(str(user.key_path),),
        known_hosts=known or live_server.known_hosts,
    )
    return XferApp(opts, None, str(local))


async def until(pilot: object, check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)  # type: ignore[attr-defined]


def names(pane: Pane) -> list[str]:
    return [r.name for r in pane.rows_shown]


async def go_to(pilot: object, pane: Pane, name: str) -> None:
    pane.focus()
    pane.move_cursor(row=names(pane).index(name))
    await pilot.pause()  # type: ignore[attr-defined]


def shot(app: XferApp, name: str) -> None:
    svg = app.export_screenshot()
    assert svg.startswith("<svg") and "xfer" in svg
    where = os.environ.get("XFER_UI_SHOTS")
    if where:
        Path(where, f"{name}.svg").write_text(svg)


async def test_browse_copy_and_manage(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    local = local_dir(
        tmp_path, {"report.pdf": os.urandom(300_000), "photos/a.jpg": os.urandom(50_000)}
    )
    (user.home / "inbox").mkdir()
    (user.home / "notes.txt").write_text("remote notes\n")
    app = app_for(live_server, user, local)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "notes.txt" in names(app.right), "the remote listing")
        assert names(app.left) == ["..", "photos", "report.pdf"]  # directories first
        assert names(app.right) == ["inbox", "notes.txt"]  # the home is "/": no ".."
        # the quota bar, from sp --json
        await until(pilot, lambda: "of 5.0 GiB" in str(app.right.border_subtitle), "the quota")
        assert user.name in str(app.right.border_title)

        # upload a file and a directory, both marked, in one copy
        await go_to(pilot, app.left, "photos")
        await pilot.press("space", "space")  # marks photos, then report.pdf
        assert app.left.marked == {"photos", "report.pdf"}
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the copy question")
        shot(app, "copy")
        await pilot.press("y")
        await until(pilot, lambda: app.queue is not None and app.queue.jobs != [], "a job")
        queue = app.queue
        assert queue is not None
        await queue.wait()
        assert (user.home / "report.pdf").read_bytes() == (local / "report.pdf").read_bytes()
        jpg = (local / "photos" / "a.jpg").read_bytes()
        assert (user.home / "photos" / "a.jpg").read_bytes() == jpg
        await until(pilot, lambda: "report.pdf" in names(app.right), "the upload listed")
        shot(app, "panes")

        # download: Tab to the right pane, Enter into nothing (a file), F5
        await pilot.press("tab")
        assert app.right.has_focus
        await go_to(pilot, app.right, "notes.txt")
        await pilot.press("f5", "y")
        await until(pilot, lambda: (local / "notes.txt").exists() and queue.idle, "download")
        assert (local / "notes.txt").read_text() == "remote notes\n"
        assert [j.state for j in queue.jobs] == ["done"]

        # into a directory and back out
        await go_to(pilot, app.right, "inbox")
        await pilot.press("enter")
        await until(pilot, lambda: app.right.cwd.endswith("/inbox"), "cd inbox")
        await pilot.press("backspace")
        await until(pilot, lambda: not app.right.cwd.endswith("/inbox"), "cd ..")
        assert app.right.current is not None and app.right.current.name == "inbox"

        # mkdir, rename, delete (no, then yes)
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, Ask), "the mkdir question")
        await pilot.press(*"made")
        await pilot.press("enter")
        await until(pilot, lambda: (user.home / "made").is_dir(), "mkdir")
        await go_to(pilot, app.right, "notes.txt")
        await pilot.press("f6")
        await until(pilot, lambda: isinstance(app.screen, Ask), "the rename question")
        app.screen.query_one(Input).value = "renamed.txt"
        await pilot.press("enter")
        await until(pilot, lambda: (user.home / "renamed.txt").exists(), "rename")
        assert not (user.home / "notes.txt").exists()
        await go_to(pilot, app.right, "made")
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the delete question")
        shot(app, "delete")
        await pilot.press("n")
        await pilot.pause()
        assert (user.home / "made").is_dir()
        await pilot.press("f8", "y")
        await until(pilot, lambda: not (user.home / "made").exists(), "delete")
        await until(pilot, lambda: "made" not in names(app.right), "the listing")

        # filter, help, and a refresh that sees a change made elsewhere
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, Ask), "the filter question")
        await pilot.press(*"*.txt", "enter")
        await until(pilot, lambda: names(app.right) == ["renamed.txt"], "the filter")
        await pilot.press("question_mark")
        assert isinstance(app.screen, Help)
        shot(app, "help")
        await pilot.press("escape")
        (user.home / "late.txt").write_text("x")
        await pilot.press("r")
        await until(pilot, lambda: "late.txt" in names(app.right), "refresh")
        await pilot.press("q")
    assert app.return_value == 0


async def test_cancel_leaves_a_partial_that_resumes(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB)
    local = local_dir(tmp_path, {"big.bin": data})
    live_server.set_access(user, upload_bps=2 * MiB)
    app = app_for(live_server, user, local)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.queue is not None, "the connection")
        queue = app.queue
        assert queue is not None
        await go_to(pilot, app.left, "big.bin")
        await pilot.press("f5", "y")
        await until(pilot, lambda: bool(queue.jobs) and queue.jobs[0].done > MiB, "bytes")
        queue_line = app.query_one("#queue", Static)
        await until(pilot, lambda: "big.bin" in str(queue_line.content), "the queue line")
        shot(app, "transfer")
        await pilot.press("escape")
        await queue.wait()
        assert queue.jobs[0].state == "cancelled"
        partial = (user.home / "big.bin").stat().st_size
        assert 0 < partial < len(data)
        live_server.set_access(user, upload_bps=0)  # reaches the session within a second
        await pilot.press("f5", "y")
        await until(pilot, lambda: queue.idle and queue.jobs[-1].state != "queued", "the job")
        job = queue.jobs[-1]
        assert job.state == "done", job.message
        assert job.resumed_from >= partial - 256 * 1024  # kept, proven, continued
        assert (user.home / "big.bin").read_bytes() == data


async def test_permission_error_is_a_message(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    local = local_dir(tmp_path, {"f.txt": b"hello\n"})
    live_server.set_access(user, permissions="list,download")
    app = app_for(live_server, user, local)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.queue is not None, "the connection")
        assert app.queue is not None
        await go_to(pilot, app.left, "f.txt")
        await pilot.press("f5", "y")
        await until(pilot, lambda: any("ermission" in m for m in app.messages), "the error")
        assert app.queue.jobs[0].state == "failed"
        assert not (user.home / "f.txt").exists()
        await pilot.press("tab", "f7")  # still usable: the next refusal is a message too
        await until(pilot, lambda: isinstance(app.screen, Ask), "the mkdir question")
        await pilot.press(*"d", "enter")
        await until(pilot, lambda: sum("ermission" in m for m in app.messages) >= 2, "refusal")
        assert not (user.home / "d").exists()


async def test_unknown_host_key_is_asked_about(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    local = local_dir(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text("")
    app = app_for(live_server, user, local, known)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the host key question")
        question = app.screen
        assert isinstance(question, Confirm) and "SHA256:" in question.question
        await pilot.press("n")
        await until(pilot, lambda: any("not accepted" in m for m in app.messages), "refusal")
        assert known.read_text() == "" and app.remote is None
        await pilot.press("r")  # try again, and accept this time
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the question again")
        await pilot.press("y")
        await until(pilot, lambda: app.remote is not None, "the connection")
    assert f"[127.0.0.1]:{live_server.port} " in known.read_text()


async def test_password_is_asked_in_a_dialog(live_server: LiveServer, tmp_path: Path) -> None:
    keyless = live_server.add_user(with_key=False)
    local = local_dir(tmp_path)
    app = app_for(live_server, keyless, local)  # its key is not the user's: refused
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, Ask), "the password question")
        first = app.screen
        await pilot.press(*"wrong", "enter")
        again = lambda: isinstance(app.screen, Ask) and app.screen is not first  # noqa: E731
        await until(pilot, again, "the question again")
        app.screen.query_one(Input).value = keyless.password
        await pilot.press("enter")
        await until(pilot, lambda: app.remote is not None, "the connection")
        assert app.messages[-1].startswith("connected to")


async def test_a_lost_connection_is_said_and_r_reconnects(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    local = local_dir(tmp_path, {"f.txt": b"x\n"})
    (user.home / "inbox").mkdir()
    app = app_for(live_server, user, local)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "inbox" in names(app.right), "the remote listing")
        await go_to(pilot, app.right, "inbox")
        await pilot.press("enter")
        await until(pilot, lambda: app.right.cwd == "/inbox", "cd inbox")
        first = app.remote
        assert first is not None
        first.conn.close()  # the network goes away
        await first.conn.wait_closed()
        await go_to(pilot, app.left, "f.txt")
        await pilot.press("f5", "y")  # not a traceback: a message, and the pane says so
        await until(pilot, lambda: app.remote is None, "the loss noticed")
        assert any("connection lost" in m for m in app.messages)
        assert "not connected" in str(app.right.border_title)
        await pilot.press("r")
        await until(pilot, lambda: app.remote is not None, "the reconnection")
        assert app.remote is not first and app.right.cwd == "/inbox"
        await pilot.press("f5", "y")
        await until(pilot, lambda: (user.home / "inbox" / "f.txt").exists(), "the upload")


def test_without_a_terminal_it_says_so(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cli", "-t", "me@127.0.0.1:1", "ui"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       cwd=tmp_path, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == "xfer: xfer ui needs a terminal (use put/get/sync in scripts)"


async def test_against_openssh_sshd(openssh_server: OpenSSHServer, tmp_path: Path) -> None:
    """Any SFTP server: OpenSSH's, with no `sp`, so no quota bar; copies both ways."""
    data = os.urandom(700_000)
    local = local_dir(tmp_path, {"up.bin": data})
    remote = openssh_server.root / f"{tmp_path.name}-ui"
    remote.mkdir()
    (remote / "down.txt").write_text("from sshd\n")
    opts = Options(
        target=f"{openssh_server.user}@127.0.0.1:{openssh_server.port}",
        keys=(str(openssh_server.key),),
        known_hosts=openssh_server.known_hosts,
    )
    app = XferApp(opts, None, str(local))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.queue is not None, "the connection")
        queue = app.queue
        assert queue is not None
        await app.enter(app.right, str(remote))  # an absolute path: what Enter does with it
        await until(pilot, lambda: names(app.right) == ["..", "down.txt"], "the listing")
        assert str(app.right.border_subtitle) == ""  # no sp: no quota bar
        await go_to(pilot, app.left, "up.bin")
        await pilot.press("f5", "y")
        await until(pilot, lambda: "up.bin" in names(app.right), "the upload listed")
        await go_to(pilot, app.right, "down.txt")
        await pilot.press("f5", "y")
        await until(pilot, lambda: (local / "down.txt").exists() and queue.idle, "download")
        assert [j.state for j in queue.jobs] == ["done"]
    assert (remote / "up.bin").read_bytes() == data
    assert (local / "down.txt").read_text() == "from sshd\n"
