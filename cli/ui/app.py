"""``xfer ui``: local files on the left, the server's on the right, a transfer queue below.

It connects like every verb (target, profile, keys, known_hosts), asking in dialogs where
the command line would ask on the terminal: an unknown host key, a password. Every failure
is a line in the status bar; the app stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import replace
from typing import ClassVar

import asyncssh
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Static

from cli.connect import UnknownHost
from cli.errors import AUTH, XferError, from_exception
from cli.remote import Remote
from cli.session import Options, open_remote, resolve_profile
from cli.ui.dialogs import DIALOG_CSS, Ask, Confirm, Help
from cli.ui.listing import LocalSide, RemoteSide
from cli.ui.panes import PARENT, Pane
from cli.ui.queue import Job, TransferQueue
from sftpd.sizes import format_size

ARROW = {True: "up", False: "down"}


def bar(fraction: float, width: int = 16) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class XferApp(App[int]):
    TITLE = "xfer"
    CSS = (
        DIALOG_CSS
        + """
    #panes { height: 1fr; }
    #queue { height: 2; padding: 0 1; background: $boost; }
    #status { height: 1; padding: 0 1; }
    #status.error { color: $error; text-style: bold; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5,c", "copy", "Copy"),
        Binding("f6,m", "rename", "Move"),
        Binding("f7,n", "mkdir", "Mkdir"),
        Binding("f8,d", "delete", "Delete"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "leave", "Quit"),
        Binding("slash", "filter", "Filter", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("space,insert", "mark", "Mark", show=False),
        Binding("backspace", "parent", "Up", show=False),
    ]

    def __init__(self, opts: Options, password: str | None, local_dir: str) -> None:
        super().__init__()
        self.opts = opts
        self.password = password
        self.local_dir = local_dir
        self.remote: Remote | None = None
        self.queue: TransferQueue | None = None
        self.messages: list[str] = []  # the status lines shown so far (tests read them)
        self._closing = False
        self._remote_cwd: str | None = None  # where to go back to after a lost connection
        # Held, not queried: a query looks at the active screen, which is a dialog's while
        # one is open, and the queue and transfers go on updating these meanwhile.
        self.left = Pane(LocalSide(local_dir), id="local")
        self.right = Pane(None, id="remote")
        self.queue_line = Static(id="queue")
        self.status = Static(id="status")

    # -- layout and start ------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="panes"):
            yield self.left
            yield self.right
        yield self.queue_line
        yield self.status
        yield Footer()

    async def on_mount(self) -> None:
        self.left.focus()
        await self._guard(self.left.load())
        self.set_interval(0.25, self.show_queue)
        self.connect()

    @property
    def pane(self) -> Pane:
        """The pane with the focus (the left one when a dialog has it)."""
        return self.right if self.right.has_focus else self.left

    def other(self, pane: Pane) -> Pane:
        return self.left if pane is self.right else self.right

    def say(self, text: str, error: bool = False) -> None:
        self.messages.append(text)
        self.status.update(text)
        self.status.set_class(error, "error")

    async def _guard(self, work: Awaitable[object]) -> bool:
        """Await ``work``; a failure becomes the status line. True if it succeeded."""
        try:
            await work
        except Exception as exc:
            self.say(str(from_exception(exc)), error=True)
            self._check_connection()
            return False
        return True

    def _check_connection(self) -> None:
        """After a failure: if it was the connection that went, say so and let ``r``
        reconnect (to the same directory)."""
        if self.remote is None or not self.remote.conn.is_closed():
            return
        self._remote_cwd = self.remote.cwd
        if self.queue is not None:
            self.queue.cancel()
        self.remote = self.queue = None
        self.right.side = None
        self.right.clear()
        self.right.rows_shown = []
        self.queue_line.update("")
        self._not_connected("connection lost (r: reconnect)")

    # -- connecting ------------------------------------------------------------

    @work(exclusive=True, group="connect", exit_on_error=False)
    async def connect(self) -> None:
        try:
            target, _profile = resolve_profile(self.opts)
        except XferError as exc:
            self.say(str(exc), error=True)
            return
        self.right.border_title = f"connecting to {target}..."
        password, trust, tries = self.password, None, 0
        while True:
            try:
                remote = await open_remote(
                    replace(self.opts, batch=True), password, self._remote_cwd, trust
                )
                break
            except UnknownHost as exc:
                question = (
                    f"The authenticity of host {exc.pattern} can't be established.\n"
                    f"{exc.algorithm} key fingerprint is {exc.fingerprint}.\n"
                    "Trust it and add it to known_hosts?"
                )
                if trust is not None or not await self.push_screen_wait(Confirm(question)):
                    self._not_connected(f"host key of {exc.pattern} not accepted")
                    return
                trust = exc.fingerprint
            except XferError as exc:
                if exc.code == AUTH and tries < 3 and not self.opts.batch:
                    tries += 1
                    password = await self.push_screen_wait(
                        Ask(f"Password for {target}:", password=True)
                    )
                    if password is not None:
                        continue
                self._not_connected(str(exc))
                return
        self.remote = remote
        self.queue = TransferQueue(remote, self._finished)
        self.right.side = RemoteSide(remote, str(target))
        await self._guard(self.right.load())
        await self.show_quota()
        self.say(f"connected to {target}")

    def _not_connected(self, why: str) -> None:
        self.right.border_title = "not connected (r: try again)"
        self.right.border_subtitle = ""
        self.say(why, error=True)

    async def show_quota(self) -> None:
        """The remote pane's note: sftpd's ``sp --json`` as a bar; nothing elsewhere."""
        if self.remote is None:
            return
        try:
            result = await self.remote.run("sp", "--json")
            doc = json.loads(str(result.stdout)) if result.exit_status == 0 else None
        except (asyncssh.Error, OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("used"), int):
            used, quota = doc["used"], doc.get("quota")
            if isinstance(quota, int) and quota > 0:
                gauge = bar(used / quota, 10)
                self.right.note = f"{gauge} {format_size(used)} of {format_size(quota)}"
            else:
                self.right.note = f"{format_size(used)} used"
        self.right.show_title()

    # -- the queue -------------------------------------------------------------

    def _finished(self, job: Job) -> None:
        if self._closing:  # cancelled on the way out
            return
        if job.state == "failed":
            self.say(job.message, error=True)
            self._check_connection()
        elif job.state == "done" and job.message:
            self.say(f"{job.name}: {job.message}")
        self.call_later(self._after_transfer, job)

    async def _after_transfer(self, job: Job) -> None:
        """Once the queue has drained: list the destination again (and the quota after an
        upload). Not after every file: a tree of thousands would list it thousands of times."""
        if self.queue is None or any(j.state in ("queued", "running") for j in self.queue.jobs):
            return
        dest = self.right if job.upload else self.left
        if dest.side is not None:
            await self._guard(dest.load())
        if job.upload:
            await self.show_quota()

    def show_queue(self) -> None:
        """Two lines: the running file (progress, rate, ETA of the rest), then the totals."""
        if self.queue is None:
            return
        s = self.queue.status()
        if s.running is not None:
            j = s.running
            frac = j.done / j.size if j.size else 1.0
            line1 = (
                f"{ARROW[j.upload]:>4} {j.name[:24]} {bar(frac, 12)} {frac:4.0%}  "
                f"{format_size(int(s.rate))}/s  ETA {clock(s.eta)}"
            )
        else:
            line1 = "idle"
        total = s.done_bytes / s.total_bytes if s.total_bytes else 1.0
        line2 = (
            f"total {bar(total, 12)} {format_size(s.done_bytes)} of {format_size(s.total_bytes)}"
            f"  {s.finished} done, {s.queued} queued, {s.stopped} stopped"
        )
        self.queue_line.update(f"{line1}\n{line2}" if self.queue.jobs else "")

    # -- actions ---------------------------------------------------------------

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        pane = event.data_table
        if isinstance(pane, Pane) and pane.current is not None and pane.current.is_dir:
            await self.enter(pane, pane.current.name)

    async def enter(self, pane: Pane, name: str) -> None:
        if pane.side is None:
            return
        previous = pane.cwd
        up = name == PARENT.name
        target = pane.side.parent(previous) if up else pane.side.join(previous, name)
        if await self._guard(pane.side.cd(target)):
            pane.pattern = ""
            pane.marked.clear()
            keep = previous.rstrip("/").rsplit("/", 1)[-1] if up else None
            await self._guard(pane.load(keep=keep or None))

    async def action_parent(self) -> None:
        await self.enter(self.pane, PARENT.name)

    def action_mark(self) -> None:
        self.pane.toggle_mark()

    @work(group="dialogs", exit_on_error=False)
    async def action_copy(self) -> None:
        src, dst = self.pane, self.other(self.pane)
        if self.queue is None or src.side is None or dst.side is None:
            self.say("not connected", error=True)
            return
        rows = src.selection()
        if not rows:
            return
        what = rows[0].name if len(rows) == 1 else f"{len(rows)} items"
        if not await self.push_screen_wait(Confirm(f"Copy {what} to {dst.cwd}?", "Copy", "Cancel")):
            return
        sources = [src.side.join(src.cwd, r.name) for r in rows]
        upload = src is self.left
        try:
            n = await self.queue.add(upload, sources, dst.cwd)
        except Exception as exc:
            self.say(str(from_exception(exc)), error=True)
            self._check_connection()
            return
        src.marked.clear()
        await self._guard(src.load())
        self.say(f"queued {n} file(s) to {'upload' if upload else 'download'}")

    @work(group="dialogs", exit_on_error=False)
    async def action_rename(self) -> None:
        pane = self.pane
        row = pane.current
        if pane.side is None or row is None or row is PARENT:
            return
        new = await self.push_screen_wait(Ask(f"Rename or move {row.name} to:", row.name))
        if not new or new == row.name:
            return
        old_path, new_path = pane.side.join(pane.cwd, row.name), pane.side.join(pane.cwd, new)
        if await self._guard(pane.side.rename(old_path, new_path)):
            await self._guard(pane.load(keep=new))
            self.say(f"renamed {row.name} to {new}")

    @work(group="dialogs", exit_on_error=False)
    async def action_mkdir(self) -> None:
        pane = self.pane
        if pane.side is None:
            return
        name = await self.push_screen_wait(Ask(f"New directory in {pane.cwd}:"))
        if name and await self._guard(pane.side.mkdir(pane.side.join(pane.cwd, name))):
            await self._guard(pane.load(keep=name))
            self.say(f"created {name}")

    @work(group="dialogs", exit_on_error=False)
    async def action_delete(self) -> None:
        pane = self.pane
        rows = pane.selection()
        if pane.side is None or not rows:
            return
        names = ", ".join(r.name + ("/" if r.is_dir else "") for r in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        dirs = " (directories with everything in them)" if any(r.is_dir for r in rows) else ""
        question = f"Delete {names}{more}{dirs}?"
        if not await self.push_screen_wait(Confirm(question, "Delete", "Cancel")):
            return
        deleted = 0
        for r in rows:
            if not await self._guard(pane.side.delete(pane.side.join(pane.cwd, r.name))):
                break
            deleted += 1
        pane.marked.clear()
        await self._guard(pane.load())
        if pane is self.right:
            await self.show_quota()
        if deleted == len(rows):
            self.say(f"deleted {deleted} item(s)")

    @work(group="dialogs", exit_on_error=False)
    async def action_filter(self) -> None:
        pane = self.pane
        if pane.side is None:
            return
        pattern = await self.push_screen_wait(
            Ask("Show names containing (or matching * ? [ ]):", pane.pattern)
        )
        if pattern is not None:
            pane.pattern = pattern.strip()
            await self._guard(pane.load())

    async def action_refresh(self) -> None:
        self._check_connection()
        if self.remote is None:
            self.connect()
        for pane in (self.left, self.right):
            if pane.side is not None:
                await self._guard(pane.load())
        await self.show_quota()

    def action_cancel(self) -> None:
        if self.queue is not None and self.queue.cancel():
            self.say("transfers cancelled: partials kept, copy again to resume")

    def action_help(self) -> None:
        self.push_screen(Help())

    @work(group="dialogs", exit_on_error=False)
    async def action_leave(self) -> None:
        if self.queue is not None and not self.queue.idle:
            question = "Transfers are running. Quit anyway (partials are kept)?"
            if not await self.push_screen_wait(Confirm(question, "Quit", "Stay")):
                return
            self.queue.cancel()
            await self.queue.wait()
        self.exit(0)

    async def on_unmount(self) -> None:
        self._closing = True
        if self.queue is not None:
            self.queue.cancel()
            await self.queue.wait()
        if self.remote is not None:
            self.remote.sftp.exit()
            self.remote.conn.close()
