"""A hostile user as a state machine: random sequences of file operations against a live
server, over every area of a home with access rules, invariants checked after every step.

Each example is a fresh user whose home is built on disk before the session:

    /secret        none           files of random bytes >= 0x80 (nothing else holds such a
                                  byte), unguessable names, distinctive (size, mtime) pairs
    /reports       list,download  a few files and a subdirectory
    /drop          upload         upload only; the file already there is not downloadable
    /top/reports   none           below an unrestricted /top: the rules of a path's ancestors
    /team          a shared folder with its own quota, writable
    /arch          a shared folder mounted list,download
    /, /w, /d      all

and a second user, the victim, has a canary file the hostile user must never reach. Paths are
drawn from a small alphabet over every area (so operations collide often), from the places that
exist, and from the paths the user made earlier, with suffixes through and out of them (``/..``,
``/../VICTIM``). Besides one rule per operation, two tactics make a move and use it at once: a
link (hard or symbolic) then an access through it, and a symlink then a second one whose target
goes through the first. Without them a random walk reaches a two-link escape once in tens of
thousands of steps.

Invariants, after every step (a failure lists every step of the example and its answers):

(a) nothing the rules hide reached the client: no data read, listing, checksum, readlink,
    realpath, error message or ``sp`` output held a hidden file's bytes, digest or name, or a
    server path; no attributes received (stat, fstat, listing) were a hidden file's
    (size, mtime) pair;
(b) the trees under read-only rules are unchanged on disk, their roots' mode and times included
    (/secret, /reports, /top/reports, /arch, and the file already in /drop), and still at their
    paths (a rename away is a change); in the upload-only /drop an entry, once there, stays
    with its inode (checked at every close too: an atomic upload must not replace a file that
    another handle completed meanwhile);
(c) nothing on disk leads out: every symlink in the home and the folders resolves physically
    (``os.path.realpath``, as any process following it would) inside its own tree, dangling
    or not (creating its missing components would make a dangling one lead there); no file is
    a hard link into another tree; no stray entry appeared beside the homes or the folders;
    the victim's home is as it was;
(d) usage is exact: the store's (bytes, files) for the user and both folders equal a scan of
    the disk after every step that leaves no handle open. An open handle may hold growth the
    ledger settles at its close (and, in atomic mode, a temporary file), so with kept handles
    the comparison waits until they are closed: by a later step, or at the example's end;
(e) the server still serves: ``stat /`` answers, ``sp --json`` exits 0 with JSON, and no step
    waits more than STEP_TIMEOUT.

Two servers, one per test: the standard upload mode and ``--upload-mode atomic``. Each example
has its own user and folders, built before and removed after it, so nothing carries over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import posixpath
import random
import secrets
import shlex
import shutil
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sftpd.core.quota import scan_home
from sftpd.core.uploads import is_temp
from sftpd.reconcile import scan_user
from sftpd.store import FolderRecord, KeyRecord, UserRecord, folder_account
from tests.stress.conftest import report, scale
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

T = TypeVar("T")

READ, WRITE, APPEND = asyncssh.FXF_READ, asyncssh.FXF_WRITE, asyncssh.FXF_APPEND
CREAT, TRUNC, EXCL = asyncssh.FXF_CREAT, asyncssh.FXF_TRUNC, asyncssh.FXF_EXCL
FLAG_NAMES = ((READ, "R"), (WRITE, "W"), (APPEND, "A"), (CREAT, "C"), (TRUNC, "T"), (EXCL, "X"))

HOME_QUOTA = 256 * 1024
TEAM_QUOTA = 64 * 1024
STEP_TIMEOUT = 30.0
MAX_OPEN = 3  # handles kept open across steps
RULES = (
    ("/secret", "none"),
    ("/reports", "list,download"),
    ("/drop", "upload"),
    ("/top/reports", "none"),
    ("/arch", "list,download"),
)
READ_ONLY = ("secret", "reports", "top/reports")  # in the home; /arch and /drop/a besides

EXAMPLES = scale(40, 1500)
STEPS = scale(40, 80)

# -- what the hostile user sends ------------------------------------------------------

VICTIM = "VICTIM"  # stands for the victim's name, which the attacker knows
AREAS = (
    "/", "/w", "/w/d", "/d", "/secret", "/reports", "/reports/sub", "/drop", "/top",
    "/top/reports", "/team", "/team/d", "/arch", "", "/..",
)  # fmt: skip
NAMES = ("a", "b", "d", "up", "g", "sub", "..", ".", VICTIM)


def join(area: str, parts: list[str]) -> str:
    if not parts:
        return area or "."
    return (area.rstrip("/") + "/" if area else "") + "/".join(parts)


PATHS = st.builds(join, st.sampled_from(AREAS), st.lists(st.sampled_from(NAMES), max_size=3))
# Where things are, or are most worth trying; a rule prefers the kind it acts on.
FILES = (
    "/secret/g", "/top/reports/g", "/reports/a", "/reports/sub/b", "/drop/a", "/arch/a",
    "/team/a", "/a", "/top/a",
)  # fmt: skip
DIRS = (
    "/", "/secret", "/top", "/top/reports", "/reports", "/reports/sub", "/drop", "/team", "/arch",
    "/d", "/w", "/w/d",
)  # fmt: skip
NEW = ("/x", "/d/up", "/w/d/up", "/drop/x", "/team/x", "/d/up/../VICTIM/canary")
KNOWN = st.sampled_from(FILES + DIRS + NEW)
KNOWN_FILES = st.sampled_from(FILES + NEW)
KNOWN_DIRS = st.sampled_from(DIRS + NEW)
# Appended to a path the user made earlier: through it, beside it, out of it.
SUFFIXES = st.sampled_from(
    ["", "", "/a", "/x", "/..", "/up", "/../VICTIM", "/../VICTIM/canary", "/../secret/g"]
)
MADE = 12  # paths made earlier that rules go back to, latest first
KINDS = st.sampled_from(("generated", "known", "made"))
KINDS_BEFORE_MADE = st.sampled_from(("generated", "known"))
BACK = [st.integers(0, n) for n in range(MADE)]  # built once: a strategy per draw is slow
CLIMBS = st.sampled_from([".", "..", "../..", "/", "up/..", "../VICTIM", "../secret"])
TARGETS = st.one_of(
    PATHS,
    KNOWN,
    CLIMBS,
    st.lists(st.sampled_from((*NAMES, "canary")), min_size=1, max_size=4).map("/".join),
)
USES = st.sampled_from(["open", "checksum", "readdir", "stat"])
TIMES = (0, 1_000_000_000, 1_700_000_000)  # hidden files' mtimes are none of these
CHANGE = st.one_of(
    st.tuples(st.just("size"), st.sampled_from([0, 7, 5000, 300_000])),
    st.tuples(st.just("mode"), st.sampled_from([0, 0o600, 0o777, 0o4755])),
    st.tuples(st.just("times"), st.sampled_from(TIMES)),
)
ACTION = st.one_of(
    st.tuples(st.just("read"), st.sampled_from([1, 100, 70_000]), st.sampled_from([0, 5, 1000])),
    st.tuples(st.just("write"), st.sampled_from([0, 1, 3000, 70_000]),
              st.sampled_from([0, 10, 100_000])),
    st.tuples(st.just("fstat")),
    st.tuples(st.just("fsetstat"), CHANGE),
)  # fmt: skip
ACTIONS = st.lists(ACTION, max_size=4)
# Every combination of READ, WRITE, APPEND, CREAT, TRUNC, EXCL; the usual ones more often.
PFLAGS = st.one_of(
    st.integers(0, 63),
    st.sampled_from([0, READ, CREAT, WRITE | CREAT, WRITE | CREAT | TRUNC, WRITE | APPEND]),
)


def flags(pflags: int) -> str:
    return "".join(name for bit, name in FLAG_NAMES if pflags & bit) or "0"


def attrs_for(change: tuple[str, int]) -> asyncssh.SFTPAttrs:
    kind, value = change
    if kind == "size":
        return asyncssh.SFTPAttrs(size=value)
    if kind == "mode":
        return asyncssh.SFTPAttrs(permissions=value)
    return asyncssh.SFTPAttrs(atime=value, mtime=value)


# -- the tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hidden:
    """A file whose bytes, digests, (size, mtime) and, unless guessable, name the client may
    never receive."""

    where: str
    data: bytes
    mtime: int
    name: str
    guessable: bool
    digests: tuple[str, ...]


def plant(path: Path, where: str, guessable: bool) -> Hidden:
    data = bytes(b | 0x80 for b in os.urandom(random.randrange(200, 900)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    mtime = random.randrange(1_100_000_000, 1_200_000_000)
    os.utime(path, (mtime, mtime))
    digests = tuple(
        hashlib.new(algo, data).hexdigest() for algo in ("md5", "sha1", "sha256", "sha512")
    )
    return Hidden(where, data, mtime, path.name, guessable, digests)


Entry = tuple[Any, ...]


_digests: dict[tuple[int, ...], str] = {}


def digest(p: Path, s: os.stat_result) -> str:
    """sha256 of a file, read again only if its inode, size, mtime or ctime moved (a write
    always moves ctime, which no client can set)."""
    key = (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
    if key not in _digests:
        _digests[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _digests[key]


def entry(p: Path) -> Entry:
    """(type, mode, size, mtime_ns, sha256 or link target) of one entry, not followed."""
    s = p.lstat()
    if stat.S_ISLNK(s.st_mode):
        body = os.readlink(p)
    elif stat.S_ISREG(s.st_mode):
        body = digest(p, s)
    else:
        body = ""
    size = 0 if stat.S_ISDIR(s.st_mode) else s.st_size
    return stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), size, s.st_mtime_ns, body


def tree_state(root: Path) -> dict[str, Entry]:
    """``root`` and every entry under it; a missing root (or a link in its place) shows."""
    if root.is_symlink() or not root.is_dir():
        return {".": ("missing",)}
    out = {".": entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = entry(p)
    return out


def state_of(paths: list[Path]) -> dict[str, Entry]:
    return {str(p): entry(p) if os.path.lexists(p) else ("missing",) for p in paths}


def diff(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    return [
        f"{k}: {before.get(k, 'absent')} -> {after.get(k, 'absent')}"
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]


def walk_links(root: Path) -> tuple[list[str], set[tuple[int, int]]]:
    """Symlinks under ``root`` whose physical resolution (as any process following them
    would do) is not inside ``root``, and the inodes of its regular files. A dangling link
    counts too: creating its missing components would make it lead there."""
    base = os.path.realpath(root)
    found, inodes = [], set()
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            if stat.S_ISREG(s.st_mode):
                inodes.add((s.st_dev, s.st_ino))
            elif stat.S_ISLNK(s.st_mode):
                real = os.path.realpath(p)
                if real != base and not real.startswith(base + os.sep):
                    rel = os.path.relpath(p, root)
                    found.append(f"{rel} -> {os.readlink(p)!r} resolves to {real}")
    return found, inodes


def add_user(server: LiveServer, name: str, quota: int) -> User:
    """A user with the test key and no password (``LiveServer.add_user`` hashes one with
    argon2: 0.1 s an example)."""
    key = asyncssh.read_public_key(str(server.client_key) + ".pub")
    record = KeyRecord(
        key.get_fingerprint("sha256"), key.get_algorithm(), key.export_public_key().decode().strip()
    )
    server.call(server.service.store.add_user(UserRecord(name, None, quota, False, (record,))))
    home = server.settings.homes_dir / name
    home.mkdir(mode=0o700)
    return User(name, "", server.client_key, home)


@dataclass
class World:
    """One server for a test, a client event loop, the victim, and the figures."""

    server: LiveServer
    mode: str
    loop: asyncio.AbstractEventLoop
    victim: User
    canary: Hidden
    victim_state: dict[str, Entry]
    folders_dir: Path
    homes: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    examples: int = 0
    steps: int = 0
    ok: int = 0
    refused: int = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT) -> T:
        """Run ``coro`` on the client loop; a server that does not answer fails the test."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return future.result(timeout + 5)

    def restore_victim(self) -> None:
        """Undo what an earlier failing example did outside its home, so that one violation
        does not fail every later example."""
        homes = self.server.settings.homes_dir
        for stray in set(os.listdir(homes)) - self.homes:
            shutil.rmtree(homes / stray, ignore_errors=True)
            if os.path.lexists(homes / stray):
                os.unlink(homes / stray)
        for stray in set(os.listdir(self.folders_dir)) - self.folders:
            shutil.rmtree(self.folders_dir / stray, ignore_errors=True)
        if tree_state(self.victim.home) != self.victim_state:
            shutil.rmtree(self.victim.home)
            self.victim.home.mkdir(mode=0o700)
            canary = self.victim.home / "canary"
            canary.write_bytes(self.canary.data)
            os.utime(canary, (self.canary.mtime, self.canary.mtime))
            self.victim_state = tree_state(self.victim.home)


@dataclass
class Tree:
    """One example's user, their folders and what must never leak or change."""

    user: User
    team: Path
    arch: Path
    accounts: tuple[str, str]
    hidden: list[Hidden]
    guarded: dict[str, dict[str, Entry]]


_serial = itertools.count()


def build_tree(world: World) -> Tree:
    server = world.server
    n = next(_serial)
    name = f"h{n}"
    world.homes.add(name)
    user = add_user(server, name, HOME_QUOTA)
    home = user.home
    hidden = [
        plant(home / "secret" / "g", "/secret/g", True),
        plant(home / "secret" / f"k{secrets.token_hex(5)}", "/secret/<k>", False),
        plant(home / "secret" / f"k{secrets.token_hex(5)}" / f"k{secrets.token_hex(5)}",
              "/secret/<k>/<k>", False),
        plant(home / "top" / "reports" / "g", "/top/reports/g", True),
        plant(home / "top" / "reports" / f"k{secrets.token_hex(5)}", "/top/reports/<k>", False),
        plant(home / "drop" / "a", "/drop/a", True),
        world.canary,
    ]  # fmt: skip
    for rel, text in (
        ("reports/a", "report a\n"),
        ("reports/b", "report b\n"),
        ("reports/sub/b", "report sub b\n"),
        ("top/a", "top a\n"),
        ("a", "a\n"),
    ):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    for d in ("w/d", "d"):
        (home / d).mkdir(parents=True)
    team, arch = world.folders_dir / f"{name}-team", world.folders_dir / f"{name}-arch"
    world.folders |= {team.name, arch.name}
    for folder in (team, arch):
        (folder / "sub").mkdir(parents=True)
        (folder / "a").write_text(f"{folder.name} a\n")
        (folder / "sub" / "b").write_text(f"{folder.name} sub b\n")
    (team / "d").mkdir()
    store = server.service.store
    for folder, quota, at in ((team, TEAM_QUOTA, "/team"), (arch, 0, "/arch")):
        server.call(store.add_folder(FolderRecord(folder.name, str(folder), quota)))
        server.call(store.mount(name, at, folder.name))
    server.set_access(user, paths=RULES)
    accounts = (folder_account(team.name), folder_account(arch.name))
    for account in (name, *accounts):
        assert server.call(scan_user(store, server.settings, account)).stored
    guarded = {
        **{f"/{t}": tree_state(home / t) for t in READ_ONLY},
        "/arch": tree_state(arch),
        "/drop/a": state_of([home / "drop" / "a"]),
    }
    return Tree(user, team, arch, accounts, hidden, guarded)


@pytest.fixture(scope="module", params=["standard", "atomic"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"model-{mode}")
    server = start_live_server(
        tmp, upload_mode=mode, max_connections_per_address=0, max_sessions_per_user=0
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    victim = add_user(server, "victim", 0)
    canary = plant(victim.home / "canary", "victim's canary", True)
    folders_dir = tmp / "folders"
    folders_dir.mkdir()
    state = tree_state(victim.home)
    w = World(server, mode, loop, victim, canary, state, folders_dir, homes={"victim"})
    yield w

    async def cancel_rest() -> None:  # what a failing example could not close
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    w.run(cancel_rest())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    stop_live_server(server)


# -- the machine ----------------------------------------------------------------------


@dataclass
class Handle:
    file: asyncssh.SFTPClientFile
    desc: str


class HostileUser(RuleBasedStateMachine):
    world: World  # set on a subclass per test: see machine_for

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        w.examples += 1
        w.restore_victim()
        self.tree = build_tree(w)
        self.user = self.tree.user
        self.log: list[list[str]] = []  # per step, what was sent and what came back
        self.leaks: list[str] = []
        self.broken: list[str] = []
        self.handles: list[Handle] = []
        self.made: list[str] = []
        self.drop: dict[str, tuple[int, int] | None] = {}
        self.drop_changes: list[str] = []
        self.held = True  # every invariant held after the last step
        server = w.server
        self.markers = [str(server.tmp), os.path.realpath(server.tmp)] + [
            h.name for h in self.tree.hidden if not h.guessable
        ]
        self.pairs = {(len(h.data), h.mtime): h.where for h in self.tree.hidden}

        async def connect() -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
            conn = await server.connect(self.user)
            return conn, await conn.start_sftp_client()

        self.conn, self.sftp = w.run(connect())
        self.watch_drop("the start")

    def teardown(self) -> None:
        """Close what is open; if the example held so far, check usage once more (handles
        kept to the end were never compared), then remove the user's trees."""

        async def close_handles() -> None:
            for h in self.handles:
                with contextlib.suppress(asyncssh.Error, OSError):
                    await h.file.close()

        async def close() -> None:
            self.sftp.exit()
            self.conn.close()
            await self.conn.wait_closed()

        try:
            kept = bool(self.handles)
            self.world.run(close_handles())
            self.handles = []
            if kept and self.held:
                self.log.append(["(closed the handles kept to the end)"])
                self.usage_is_exact()
        finally:
            try:
                self.world.run(close())
            finally:
                for root in (self.user.home, self.tree.team, self.tree.arch):
                    shutil.rmtree(root, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------

    def failure(self, title: str, details: list[str]) -> str:
        lines = [f"{i}. " + "; ".join(ops) for i, ops in enumerate(self.log, 1)]
        if len(lines) > 80:
            lines = [*lines[:10], "...", *lines[-70:]]
        steps = "\n  ".join(lines) or "(none)"
        shown = "\n  ".join(details[:20])
        return (
            f"{title}\n  {shown}\nafter these steps ({self.world.mode} upload mode, user "
            f"{self.user.name}, victim {self.world.victim.name}):\n  {steps}"
        )

    def path(self, p: str) -> str:
        return p.replace(VICTIM, self.world.victim.name)

    def check_text(self, what: str, text: str | bytes | None) -> None:
        if text is None:
            return
        s = text.decode("latin-1") if isinstance(text, bytes) else text
        for marker in self.markers:
            if marker in s:
                self.leaks.append(f"{what}: answer names {marker!r}: {s[:160]!r}")
        for h in self.tree.hidden:
            if any(d in s for d in h.digests):
                self.leaks.append(f"{what}: answer holds a digest of {h.where}")

    def check_data(self, what: str, data: bytes) -> None:
        if data and max(data) >= 0x80:
            whose = [h.where for h in self.tree.hidden if data[:16] in h.data] or ["a hidden file"]
            self.leaks.append(f"{what}: read {len(data)} bytes of {whose[0]}")

    def check_attrs(self, what: str, attrs: asyncssh.SFTPAttrs) -> None:
        where = self.pairs.get((attrs.size or 0, attrs.mtime or 0))
        if where:
            self.leaks.append(f"{what}: attributes of {where} (size {attrs.size}, mtime)")

    def check(self, what: str, result: object) -> None:
        if isinstance(result, bytes):
            self.check_data(what, result)
        elif isinstance(result, str):
            self.check_text(what, result)
        elif isinstance(result, asyncssh.SFTPAttrs):
            self.check_attrs(what, result)
        elif isinstance(result, asyncssh.SFTPName):
            self.check_text(what, result.filename)
            self.check_text(what, result.longname)
            self.check_attrs(what, result.attrs)
        elif isinstance(result, list | tuple):
            for item in result:
                self.check(what, item)
        elif isinstance(result, asyncssh.SSHCompletedProcess):
            self.check_text(what, result.stdout)
            self.check_text(what, result.stderr)

    async def attempt(self, what: str, op: Awaitable[T]) -> tuple[bool, T | None]:
        """One request: (True, its answer), or (False, None) if the server refused it."""
        w = self.world
        try:
            result = await op
        except asyncssh.SFTPError as exc:
            self.check_text(what, exc.reason)
            w.refused += 1
            self.log[-1].append(f"{what} -> refused: {exc.reason}")
            return False, None
        self.check(what, result)
        if isinstance(result, asyncssh.SSHCompletedProcess) and result.exit_status != 0:
            w.refused += 1
            err = str(result.stderr).strip()[:80]
            self.log[-1].append(f"{what} -> exit {result.exit_status}: {err}")
            return False, result
        w.ok += 1
        self.log[-1].append(f"{what} -> ok")
        return True, result

    def step(self, coro: Coroutine[Any, Any, object]) -> None:
        self.world.steps += 1
        self.held = False
        self.log.append([])
        try:
            self.world.run(coro)
        except TimeoutError:
            raise AssertionError(
                self.failure(f"(e) no answer within {STEP_TIMEOUT} s", [])
            ) from None
        except (asyncssh.Error, ConnectionError) as exc:  # refusals are caught in attempt
            raise AssertionError(self.failure("(e) the session broke:", [repr(exc)])) from exc

    def one(self, what: str, op: Awaitable[object], made: str = "") -> None:
        async def go() -> None:
            done, _ = await self.attempt(what, op)
            if done and made:
                self.made_path(made)

        self.step(go())

    async def use(self, h: Handle, actions: list[tuple[Any, ...]]) -> None:
        for action in actions:
            kind = action[0]
            what = f"{kind} {h.desc} {action[1:]}"
            if kind == "read":
                await self.attempt(what, h.file.read(action[1], action[2]))
            elif kind == "write":
                await self.attempt(what, h.file.write(b"w" * action[1], action[2]))
            elif kind == "fstat":
                await self.attempt(what, h.file.stat())
            else:
                await self.attempt(what, h.file.setstat(attrs_for(action[1])))

    async def open(self, path: str, pflags: int) -> Handle | None:
        """Open, then always fstat: a handle's attributes are an answer like any other."""
        desc = f"{path!r} [{flags(pflags)}]"
        opened, f = await self.attempt(f"open {desc}", self.sftp.open(path, pflags, encoding=None))
        if not opened or f is None:
            return None
        if pflags & CREAT:
            self.made_path(path)
        h = Handle(f, desc)
        await self.attempt(f"fstat {desc}", f.stat())
        return h

    async def close(self, h: Handle) -> None:
        closed, _ = await self.attempt(f"close {h.desc}", h.file.close())
        if closed:
            self.watch_drop(f"close {h.desc}")

    def made_path(self, path: str) -> None:
        """Remember a path the user made, to go through and beside it later."""
        if path not in self.made:
            self.made = [*self.made[1 - MADE :], path]

    def draw_made(self, data: st.DataObject) -> str:
        """A path made earlier, the latest by preference (like a hypothesis ``Bundle``: a
        shrunk example keeps the steps that made what it uses)."""
        back = data.draw(BACK[len(self.made) - 1], label="made, counted back")
        return self.made[-1 - back] + data.draw(SUFFIXES, label="suffix")

    def draw_path(
        self, data: st.DataObject, label: str, known: st.SearchStrategy[str] = KNOWN
    ) -> str:
        """A generated path, a known one, or one made earlier (with a suffix)."""
        kind = data.draw(KINDS if self.made else KINDS_BEFORE_MADE)
        if kind == "made":
            return self.path(self.draw_made(data))
        return self.path(data.draw(PATHS if kind == "generated" else known, label=label))

    def draw_target(self, data: st.DataObject) -> str:
        relative: bool = bool(self.made) and data.draw(st.booleans(), label="relative to made")
        if relative:
            return self.path(self.draw_made(data).lstrip("/"))
        return self.path(data.draw(TARGETS, label="target"))

    def watch_drop(self, when: str) -> None:
        """Upload-only /drop: an entry, once there, stays, with its inode (no overwrite,
        delete or rename there). Checked at every acknowledged close and after every step,
        so a replacement between two closes of one step is seen too."""
        drop = self.user.home / "drop"
        try:
            names = {n for n in os.listdir(drop) if not is_temp(n)}
        except OSError:
            names = set()
        for name in names | self.drop.keys():
            try:
                s = os.lstat(drop / name)
                now: tuple[int, int] | None = (s.st_dev, s.st_ino)
            except OSError:
                now = None
            before = self.drop.setdefault(name, now)
            if before is not None and now != before:
                what = "gone" if now is None else "replaced by another inode"
                self.drop_changes.append(f"/drop/{name} {what} (seen at {when})")
                self.drop[name] = now

    # -- rules -----------------------------------------------------------------------

    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        path = self.draw_path(data, "path", KNOWN_DIRS)
        self.one(f"mkdir {path!r}", self.sftp.mkdir(path), made=path)

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = self.draw_path(data, "path", KNOWN_DIRS)
        self.one(f"rmdir {path!r}", self.sftp.rmdir(path))

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        path = self.draw_path(data, "path", KNOWN_FILES)
        self.one(f"remove {path!r}", self.sftp.remove(path))

    @rule(data=st.data(), posix=st.booleans())
    def rename(self, data: st.DataObject, posix: bool) -> None:
        src, dst = self.draw_path(data, "src"), self.draw_path(data, "dst")
        if posix:
            self.one(f"posix-rename {src!r} {dst!r}", self.sftp.posix_rename(src, dst), made=dst)
        else:
            self.one(f"rename {src!r} {dst!r}", self.sftp.rename(src, dst), made=dst)

    @rule(data=st.data())
    def symlink(self, data: st.DataObject) -> None:
        to, path = self.draw_target(data), self.draw_path(data, "path")
        self.one(f"symlink {path!r} -> {to!r}", self.sftp.symlink(to, path), made=path)

    @rule(data=st.data())
    def hardlink(self, data: st.DataObject) -> None:
        src, dst = self.draw_path(data, "src", KNOWN_FILES), self.draw_path(data, "dst")
        self.one(f"hardlink {src!r} as {dst!r}", self.sftp.link(src, dst), made=dst)

    @rule(data=st.data(), pflags=PFLAGS, actions=ACTIONS, keep=st.booleans())
    def open_file(
        self, data: st.DataObject, pflags: int, actions: list[tuple[Any, ...]], keep: bool
    ) -> None:
        path = self.draw_path(data, "path", KNOWN_FILES)

        async def go() -> None:
            h = await self.open(path, pflags)
            if h is None:
                return
            await self.use(h, actions)
            if keep and len(self.handles) < MAX_OPEN:
                self.handles.append(h)
                self.log[-1].append(f"(kept {h.desc} open)")
            else:
                await self.close(h)

        self.step(go())

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(0, MAX_OPEN - 1), actions=ACTIONS)
    def use_kept(self, index: int, actions: list[tuple[Any, ...]]) -> None:
        self.step(self.use(self.handles[index % len(self.handles)], actions))

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(0, MAX_OPEN - 1))
    def close_kept(self, index: int) -> None:
        self.step(self.close(self.handles.pop(index % len(self.handles))))

    @rule(data=st.data(), first=PFLAGS, second=PFLAGS, size=st.sampled_from([1, 3000, 70_000]))
    def two_handles(self, data: st.DataObject, first: int, second: int, size: int) -> None:
        """One handle stays open while another creates, writes and closes the same name."""
        path = self.draw_path(data, "path", KNOWN_FILES)

        async def go() -> None:
            h1 = await self.open(path, first)
            if h1 is not None:
                await self.attempt(f"write {h1.desc}", h1.file.write(b"1" * size, 0))
            h2 = await self.open(path, second)
            if h2 is not None:
                await self.attempt(f"write {h2.desc}", h2.file.write(b"2" * size, 0))
                await self.close(h2)
            if h1 is not None:
                await self.attempt(f"write {h1.desc}", h1.file.write(b"1" * size, size))
                await self.close(h1)

        self.step(go())

    @rule(data=st.data(), change=CHANGE, follow=st.booleans())
    def setstat(self, data: st.DataObject, change: tuple[str, int], follow: bool) -> None:
        p = self.draw_path(data, "path")
        what = f"{'setstat' if follow else 'lsetstat'} {p!r} {change}"
        self.one(what, self.sftp.setstat(p, attrs_for(change), follow_symlinks=follow))

    @rule(
        kind=st.sampled_from(["stat", "lstat", "readlink", "readdir", "realpath"]), data=st.data()
    )
    def look(self, kind: str, data: st.DataObject) -> None:
        p = self.draw_path(data, "path")
        ops: dict[str, Callable[[str], Awaitable[object]]] = {
            "stat": self.sftp.stat,
            "lstat": self.sftp.lstat,
            "readlink": self.sftp.readlink,
            "readdir": self.sftp.readdir,
            "realpath": self.sftp.realpath,
        }
        self.one(f"{kind} {p!r}", ops[kind](p))

    @rule(
        data=st.data(),
        dst_flags=st.sampled_from(
            [WRITE | CREAT | TRUNC, WRITE | CREAT, WRITE, WRITE | CREAT | EXCL]
        ),
        src_offset=st.sampled_from([0, 10]),
        length=st.sampled_from([0, 50, 100_000]),
        dst_offset=st.sampled_from([0, 100_000]),
    )
    def copy(
        self, data: st.DataObject, dst_flags: int, src_offset: int, length: int, dst_offset: int
    ) -> None:
        """copy-data between two handles (asyncssh's ``remote_copy`` with open files: given
        paths it would open them and never close them)."""
        src, dst = self.draw_path(data, "src", KNOWN_FILES), self.draw_path(data, "dst")

        async def go() -> None:
            s = await self.open(src, READ)
            d = await self.open(dst, dst_flags)
            if s is not None and d is not None:
                what = f"copy-data {s.desc} @{src_offset}+{length} to {d.desc} @{dst_offset}"
                await self.attempt(
                    what, self.sftp.remote_copy(s.file, d.file, src_offset, length, dst_offset)
                )
            for h in (s, d):
                if h is not None:
                    await self.close(h)

        self.step(go())

    @rule(algo=st.sampled_from(["md5sum", "sha1sum", "sha256sum", "sha512sum"]), data=st.data())
    def checksum(self, algo: str, data: st.DataObject) -> None:
        command = f"{algo} {shlex.quote(self.draw_path(data, 'path', KNOWN_FILES))}"
        self.one(command, self.conn.run(command, check=False))

    # Tactics: two moves an attacker makes together, each part still drawn at random. Alone,
    # each part is a rule above; together they reach in one step what a random walk reaches
    # once in tens of thousands.

    @rule(data=st.data(), hard=st.booleans(), how=USES, pflags=PFLAGS, actions=ACTIONS)
    def link_then_use(
        self,
        data: st.DataObject,
        hard: bool,
        how: str,
        pflags: int,
        actions: list[tuple[Any, ...]],
    ) -> None:
        """Make a link (hard, to a file; or symbolic) and go through it at once."""
        path = self.draw_path(data, "path")
        if hard:
            src = self.draw_path(data, "src", KNOWN_FILES)
            what, through = f"hardlink {src!r} as {path!r}", path
        else:
            to = self.draw_target(data)
            what = f"symlink {path!r} -> {to!r}"
            through = path + self.path(data.draw(SUFFIXES, label="suffix"))

        async def go() -> None:
            make = self.sftp.link(src, path) if hard else self.sftp.symlink(to, path)
            made, _ = await self.attempt(what, make)
            if made:
                self.made_path(path)
                await self.use_path(through, how, pflags, actions)

        self.step(go())

    @rule(
        data=st.data(),
        climb=CLIMBS,
        suffix=SUFFIXES,
        absolute=st.booleans(),
        how=USES,
        pflags=PFLAGS,
        actions=ACTIONS,
    )
    def chain(
        self,
        data: st.DataObject,
        climb: str,
        suffix: str,
        absolute: bool,
        how: str,
        pflags: int,
        actions: list[tuple[Any, ...]],
    ) -> None:
        """A symlink, then a second one whose target goes through the first, then use it."""
        first, second = self.draw_path(data, "first"), self.draw_path(data, "second")
        climb = self.path(climb)
        suffix = self.path(suffix)
        via = posixpath.normpath(posixpath.join("/", first))  # as the user thinks of it
        if not absolute:
            via = posixpath.relpath(via, posixpath.dirname(posixpath.join("/", second)))
        to = via + suffix

        async def go() -> None:
            made, _ = await self.attempt(
                f"symlink {first!r} -> {climb!r}", self.sftp.symlink(climb, first)
            )
            if not made:
                return
            self.made_path(first)
            made, _ = await self.attempt(
                f"symlink {second!r} -> {to!r}", self.sftp.symlink(to, second)
            )
            if made:
                self.made_path(second)
                await self.use_path(second, how, pflags, actions)

        self.step(go())

    async def use_path(
        self, path: str, how: str, pflags: int, actions: list[tuple[Any, ...]]
    ) -> None:
        if how == "open":
            h = await self.open(path, pflags)
            if h is not None:
                await self.use(h, actions)
                await self.close(h)
        elif how == "checksum":
            command = f"sha256sum {shlex.quote(path)}"
            await self.attempt(command, self.conn.run(command, check=False))
        elif how == "readdir":
            await self.attempt(f"readdir {path!r}", self.sftp.readdir(path))
        else:
            await self.attempt(f"stat {path!r}", self.sftp.stat(path))

    @rule()
    def space(self) -> None:
        async def go() -> None:
            _, result = await self.attempt("sp --json", self.conn.run("sp --json", check=False))
            try:
                assert result is not None and result.exit_status == 0
                json.loads(str(result.stdout))
            except (AssertionError, ValueError):
                self.broken.append(f"sp --json: {result and (result.stdout, result.stderr)}")

        self.step(go())

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        """(a) to (e) of the module docstring, after every step."""
        self.nothing_hidden_reached_the_client()
        self.read_only_trees_unchanged()
        self.nothing_leads_out()
        self.usage_is_exact()
        self.server_serves()
        self.held = True

    def nothing_hidden_reached_the_client(self) -> None:
        assert not self.leaks, self.failure(
            "(a) the client received what the rules hide:", self.leaks
        )

    def read_only_trees_unchanged(self) -> None:
        home, tree = self.user.home, self.tree
        now = {
            **{f"/{t}": tree_state(home / t) for t in READ_ONLY},
            "/arch": tree_state(tree.arch),
            "/drop/a": state_of([home / "drop" / "a"]),
        }
        changes = [
            f"{where} {line}"
            for where, before in tree.guarded.items()
            for line in diff(before, now[where])
        ]
        self.watch_drop("the end of the step")
        changes += self.drop_changes
        assert not changes, self.failure("(b) a read-only tree changed on disk:", changes)

    def nothing_leads_out(self) -> None:
        w, tree = self.world, self.tree
        found, trees = [], {}
        for where, root in (
            ("home", self.user.home),
            ("/team", tree.team),
            ("/arch", tree.arch),
            ("victim", w.victim.home),
        ):
            links, trees[where] = walk_links(root)
            found += [f"{where}: {e}" for e in links]
        names = list(trees)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if trees[a] & trees[b]:
                    found.append(f"a file of {a} is a hard link to one of {b}")
        found += [
            f"stray entry beside the homes: {n}"
            for n in set(os.listdir(w.server.settings.homes_dir)) - w.homes
        ]
        found += [
            f"stray entry beside the folders: {n}"
            for n in set(os.listdir(w.folders_dir)) - w.folders
        ]
        found += [f"victim: {line}" for line in diff(w.victim_state, tree_state(w.victim.home))]
        assert not found, self.failure("(c) something on disk leads out of its tree:", found)

    def usage_is_exact(self) -> None:
        if self.handles:
            return  # see the module docstring
        server = self.world.server
        wrong = []
        for account, root in (
            (self.user.name, self.user.home),
            (self.tree.accounts[0], self.tree.team),
            (self.tree.accounts[1], self.tree.arch),
        ):
            u = server.call(server.service.store.usage(account, server.settings.default_quota))
            assert u is not None
            disk = scan_home(str(root))
            if (u.used, u.files) != disk:
                wrong.append(f"{account}: store (bytes, files) {(u.used, u.files)}, disk {disk}")
        assert not wrong, self.failure("(d) usage differs from the disk:", wrong)

    def server_serves(self) -> None:
        try:
            self.world.run(self.sftp.stat("/"))
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            self.broken.append(f"stat / failed: {exc!r}")
        assert not self.broken, self.failure("(e) the server stopped serving:", self.broken)


def machine_for(world: World) -> type[HostileUser]:
    """The machine bound to one test's world (hypothesis builds a machine per example)."""
    return type(f"HostileUser_{world.mode}", (HostileUser,), {"world": world})


# A passing run takes STEPS * EXAMPLES / (about 80 steps/s); shrinking a failure takes minutes.
@pytest.mark.timeout(scale(1200, 14_400))
def test_hostile_user_keeps_every_invariant(world: World) -> None:
    started = time.monotonic()
    held = False
    try:
        run_state_machine_as_test(
            machine_for(world),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )
        held = True
    finally:
        seconds = time.monotonic() - started
        report(
            f"model ({world.mode} uploads)",
            examples=world.examples,
            steps=world.steps,
            ok=world.ok,
            refused=world.refused,
            seconds=round(seconds, 1),
            steps_per_second=round(world.steps / seconds, 1),
            invariants_held=held,
        )
