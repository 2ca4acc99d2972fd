"""Hostile input against a live server: a path corpus on every path-taking operation and
exec command, a symlink-swap race, and a fuzzer of raw SFTP packets.

What must hold: nothing outside the user's home is read, written, listed or stat'd; no
answer names a server path; the server keeps serving; usage stays exact. The corpus and the
race run twice: in the home, and inside a shared folder mounted at /vault.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.packet import String
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftpd.core.quota import scan_home
from sftpd.reconcile import scan_user
from sftpd.store import FolderRecord, folder_account
from tests.stress.conftest import report, scale, snapshot
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

SECRET = b"TOP SECRET"


@dataclass
class Arena:
    server: LiveServer
    victim: User
    other: User
    outside: Path
    tmp: Path
    vault: Path  # a shared folder's directory, mounted at /vault for the victim
    leaks: list[str] = field(default_factory=list)

    def base(self, where: str) -> tuple[Path, bytes]:
        """Where a test plants its links on disk, and the virtual prefix that leads there."""
        return (self.victim.home, b"") if where == "home" else (self.vault, b"vault/")

    def guarded(self) -> dict[str, dict[str, tuple[int, int, bytes]]]:
        """Everything a confined user must never change: outside, another home, host keys."""
        return {
            "outside": snapshot(self.outside),
            "other": snapshot(self.other.home),
            "keys": snapshot(self.server.settings.keys_dir),
        }

    def check_answer(self, what: str, data: bytes | str, sent: bytes = b"") -> None:
        """Record a leak: the secret, or a server path the client did not send itself."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        if sent:
            raw = raw.replace(sent, b"")
        if SECRET in raw or str(self.tmp).encode() in raw:
            self.leaks.append(f"{what}: {raw[:200]!r}")


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    tmp = tmp_path_factory.mktemp("hostile")
    server = start_live_server(tmp, max_connections_per_address=0)
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET + b"\n")
    (outside / "sub").mkdir()
    (outside / "sub" / "deeper.txt").write_bytes(SECRET + b" TOO\n")
    other = server.add_user()
    (other.home / "private.txt").write_bytes(SECRET + b" OF ANOTHER USER\n")
    victim = server.add_user()
    vault = tmp / "vault"
    vault.mkdir()
    server.call(server.service.store.add_folder(FolderRecord("vault", str(vault))))
    server.call(server.service.store.mount(victim.name, "/vault", "vault"))
    yield Arena(server, victim, other, outside, tmp, vault)
    stop_live_server(server)


def plant_links(home: Path, arena: Arena) -> None:
    """Symlinks only something outside sftpd could make: absolute, climbing, looping."""
    links = {
        "abs_link": str(arena.outside),
        "file_link": str(arena.outside / "secret.txt"),
        "rel_link": "../../../outside",
        "other_link": f"../{arena.other.name}",
        "chain1": "chain2",
        "chain2": str(arena.outside),
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "dot_link": "..",
        "proc_link": "/proc/self/root",
        "etc_link": "/etc",
    }
    for name, target in links.items():
        if not (home / name).is_symlink():
            os.symlink(target, home / name)
    (home / "victim.txt").write_bytes(b"mine\n")


def hostile_paths(arena: Arena) -> list[bytes]:
    tmp, other = arena.tmp, arena.other.name
    targets = [
        "outside/secret.txt",
        "outside",
        "outside/sub/deeper.txt",
        "data/sftpd.db",
        "keys/ssh_host_ed25519_key",
        f"data/homes/{other}/private.txt",
        "etc/passwd",
    ]
    climbs = [
        "../", "../../", "../../../", "../../../../../../../../", "/../", "/../../../",
        "./../", "a/../../", "..//..//", "/./../../", "victim.txt/../../../",
    ]  # fmt: skip
    paths = [(c + t).encode() for c in climbs for t in targets]
    absolute = [
        tmp / "outside" / "secret.txt", tmp / "outside", tmp / "data" / "sftpd.db",
        arena.other.home / "private.txt", arena.other.home, tmp / "keys",
        Path("/etc/passwd"), Path("/etc/shadow"), Path("/proc/self/environ"),
        Path("/proc/self/cwd"), Path("/proc/self/root/etc/passwd"), Path("/dev/zero"),
    ]  # fmt: skip
    paths += [str(p).encode() for p in absolute] + [b"/", b"//", b"/..", b"~/../.."]
    paths += [
        b"abs_link", b"abs_link/secret.txt", b"abs_link/sub", b"file_link",
        b"rel_link/secret.txt", b"other_link/private.txt", b"other_link",
        b"chain1/secret.txt", b"loop_a", b"loop_a/x", b"dot_link/outside/secret.txt",
        b"dot_link/../outside/secret.txt", b"proc_link/etc/passwd", b"etc_link/passwd",
        b"a\x00/../../outside/secret.txt", b"\xff\xfe/../../outside", b"\xc0\xae\xc0\xae/outside",
        b"..\\..\\outside\\secret.txt", b"%2e%2e/%2e%2e/outside/secret.txt",
        b"~root/.ssh", b"~" + other.encode() + b"/private.txt", b"x" * 5000,
        (b"a" * 255 + b"/") * 20, b"\n../../outside/secret.txt", b" ../../outside",
        b"../../outside/secret.txt\x00.jpg", "\uff0e\uff0e/\uff0e\uff0e/outside".encode(),
        "\u2025/outside".encode(), b"outside/secret.txt/..", b"\x1b[2J../../outside",
    ]  # fmt: skip
    return paths


async def attempt(
    arena: Arena, what: str, op: Callable[[], Awaitable[Any]], sent: bytes = b""
) -> bool:
    """Run one operation; True if the server allowed it. Every answer is checked for leaks."""
    try:
        result = await op()
    except asyncssh.SFTPError as exc:
        arena.check_answer(what, exc.reason, sent)
        return False
    if isinstance(result, bytes | str):
        arena.check_answer(what, result, sent)
    elif isinstance(result, list):
        for item in result:
            arena.check_answer(what, item if isinstance(item, bytes | str) else repr(item), sent)
    elif result is not None:
        arena.check_answer(what, repr(result), sent)
    return True


async def read_all(sftp: asyncssh.SFTPClient, path: bytes) -> bytes:
    async with sftp.open(path, "rb") as f:
        return await f.read(1 << 16)


async def write_some(sftp: asyncssh.SFTPClient, path: bytes) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(b"pwned")


def path_operations(
    sftp: asyncssh.SFTPClient, p: bytes, i: int
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    return [
        ("stat", lambda: sftp.stat(p)),
        ("lstat", lambda: sftp.lstat(p)),
        ("read", lambda: read_all(sftp, p)),
        ("write", lambda: write_some(sftp, p)),
        ("listdir", lambda: sftp.listdir(p)),
        ("readlink", lambda: sftp.readlink(p)),
        ("realpath", lambda: sftp.realpath(p)),
        ("chmod", lambda: sftp.chmod(p, 0o777)),
        ("statvfs", lambda: sftp.statvfs(p)),
        ("mkdir", lambda: sftp.mkdir(p + b"/newdir")),
        ("rename from", lambda: sftp.rename(p, f"landing{i}".encode())),
        ("rename to", lambda: sftp.rename(b"victim.txt", p)),
        ("posix-rename to", lambda: sftp.posix_rename(b"victim.txt", p)),
        ("symlink target", lambda: sftp.symlink(p, f"newlink{i}".encode())),
        ("symlink at", lambda: sftp.symlink(b"victim.txt", p)),
        ("hardlink from", lambda: sftp.link(p, f"hardlink{i}".encode())),
        ("hardlink to", lambda: sftp.link(b"victim.txt", p)),
        ("remove", lambda: sftp.remove(p)),
        ("rmdir", lambda: sftp.rmdir(p)),
    ]


def execable(path: bytes) -> bool:
    """An exec command line is UTF-8 text of one line without NUL."""
    try:
        path.decode()
    except UnicodeDecodeError:
        return False
    return b"\x00" not in path and b"\n" not in path


@pytest.mark.parametrize("where", ["home", "folder"])
async def test_path_corpus_never_leaves_the_home(arena: Arena, where: str) -> None:
    server, victim = arena.server, arena.victim
    base, prefix = arena.base(where)
    plant_links(base, arena)
    before = arena.guarded()
    paths = [p if p.startswith(b"/") else prefix + p for p in hostile_paths(arena)]
    assert len(paths) >= 100
    allowed = refused = 0
    async with server.connect(victim) as conn, conn.start_sftp_client() as sftp:
        for i, p in enumerate(paths):
            for name, op in path_operations(sftp, p, i):
                if await attempt(arena, f"{name} {p[:80]!r}", op, p):
                    allowed += 1
                else:
                    refused += 1
                if not (victim.home / "victim.txt").exists():  # renamed away: put it back
                    (victim.home / "victim.txt").write_bytes(b"mine\n")
            if not execable(p):
                continue
            quoted = shlex.quote(p.decode())
            for cmd in ("sha256sum", "md5sum"):
                result = await conn.run(f"{cmd} {quoted}", check=False)
                for stream in (result.stdout, result.stderr):
                    arena.check_answer(f"{cmd} {p[:80]!r}", stream or b"", p)
    assert arena.leaks == []
    assert arena.guarded() == before
    for top in (victim.home, arena.vault):
        for dirpath, _, files in os.walk(top):  # never follows symlinks
            for name in files:
                f = Path(dirpath) / name
                assert f.is_symlink() or SECRET not in f.read_bytes(), f
    report(
        f"path corpus ({where})",
        paths=len(paths),
        sftp_operations=allowed + refused,
        allowed_inside_the_home=allowed,
        refused=refused,
        exec_commands=2 * sum(1 for p in paths if execable(p)),
        leaks=0,
    )


@pytest.mark.parametrize("where", ["home", "folder"])
async def test_symlink_swap_race_never_reaches_outside(arena: Arena, where: str) -> None:
    server, victim = arena.server, arena.victim
    base, prefix = arena.base(where)
    swap = base / "sw"
    inside = base / "sw.real"
    inside.mkdir(exist_ok=True)
    (inside / "secret.txt").write_bytes(b"harmless\n")
    stop = threading.Event()
    flips = 0

    def flipper() -> None:
        nonlocal flips
        while not stop.is_set():
            for target in (str(arena.outside), "sw.real"):
                tmp_link = base / "sw.tmp"
                os.symlink(target, tmp_link)
                os.replace(tmp_link, swap)  # atomic: sw is always one or the other
                flips += 1

    before = arena.guarded()
    secret_digest = hashlib.sha256(SECRET + b"\n").hexdigest()
    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    rounds = 0
    deadline = time.monotonic() + scale(5, 30)
    try:
        async with server.connect(victim) as conn, conn.start_sftp_client() as sftp:
            while time.monotonic() < deadline:
                rounds += 1
                for name, op in path_operations(sftp, prefix + b"sw/secret.txt", rounds)[:10]:
                    await attempt(arena, f"race {name}", op)
                await attempt(arena, "race listdir", lambda: sftp.listdir(prefix + b"sw"))
                names = await sftp.listdir(prefix + b"sw.real")
                assert "sub" not in names
                result = await conn.run(f"sha256sum {prefix.decode()}sw/secret.txt", check=False)
                assert secret_digest not in str(result.stdout)
    finally:
        stop.set()
        thread.join()
    assert arena.leaks == []
    assert arena.guarded() == before
    report(
        f"symlink swap race ({where})", seconds=scale(5, 30), rounds=rounds, swaps=flips, leaks=0
    )


# -- fuzzing raw SFTP packets --------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [b"../../outside/secret.txt", b"/../../../outside", b"abs_link", b"rel_link/secret.txt"]
    ),
    st.binary(max_size=64),
    st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b".", b"..", b"/", b"\x00", b"a" * 300, b"abs_link/secret.txt"]),
)
U32 = st.one_of(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))
U64 = st.one_of(st.sampled_from([0, 2**63, 2**64 - 1, 10 * 2**30]), st.integers(0, 2**64 - 1))
EXTENSIONS = [
    b"posix-rename@openssh.com", b"statvfs@openssh.com", b"fstatvfs@openssh.com",
    b"hardlink@openssh.com", b"fsync@openssh.com", b"lsetstat@openssh.com",
    b"limits@openssh.com", b"expand-path@openssh.com", b"copy-data", b"home-directory",
    b"check-file-name", b"check-file-handle", b"check-file", b"users-groups-by-id@openssh.com",
    b"no-such-extension",
]  # fmt: skip


@st.composite
def field_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["str", "u32", "u64", "raw"]))
    if kind == "str":
        return bytes(String(draw(NAMES)))
    if kind == "u32":
        return struct.pack(">I", draw(U32))
    if kind == "u64":
        return struct.pack(">Q", draw(U64))
    return draw(st.binary(max_size=24))


@st.composite
def sftp_packet(draw: st.DrawFn) -> bytes:
    """One packet: mostly well-framed requests with hostile fields, sometimes bad framing."""
    ptype = draw(st.one_of(st.integers(3, 20), st.just(200), st.integers(0, 255)))
    body = struct.pack(">BI", ptype, draw(U32))
    if ptype == 200:
        body += bytes(String(draw(st.sampled_from(EXTENSIONS))))
    body += b"".join(draw(st.lists(field_bytes(), max_size=6)))
    framing = draw(st.sampled_from(["ok", "ok", "ok", "short", "long", "huge"]))
    length = {"ok": len(body), "short": max(0, len(body) - 3), "long": len(body) + 7}.get(
        framing, 0xFFFFFFF0
    )
    return struct.pack(">I", length) + body


class RawSftp(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def fuzz_once(arena: Arena, packets: list[bytes], init: bool) -> str:
    server, victim = arena.server, arena.victim
    async with server.connect(victim) as conn:
        chan, session = await conn.create_session(RawSftp, subsystem="sftp", encoding=None)
        if init:
            chan.write(struct.pack(">IBI", 5, 1, 3))
        for p in packets:
            chan.write(p)
        chan.write_eof()
        try:
            await asyncio.wait_for(session.closed.wait(), 10)
            ending = "closed"
        except TimeoutError:
            ending = "open"
            chan.close()
        arena.check_answer("fuzz reply", bytes(session.received))
        return ending


FUZZ_EXAMPLES = scale(150, 1500)
_FUZZ_STATS = {"examples": 0, "packets": 0}


@pytest.fixture
def fuzz_ready(arena: Arena) -> Arena:
    """Links planted and usage rescanned once: the tests above changed the home on disk."""
    plant_links(arena.victim.home, arena)
    server = arena.server
    for account in (arena.victim.name, folder_account("vault")):
        result = server.call(scan_user(server.service.store, server.settings, account))
        assert result.stored
    return arena


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(packets=st.lists(sftp_packet(), min_size=1, max_size=12), init=st.booleans())
def test_fuzzed_sftp_packets_never_crash_or_escape(
    fuzz_ready: Arena, packets: list[bytes], init: bool
) -> None:
    arena = fuzz_ready
    before = arena.guarded()
    ending = asyncio.run(fuzz_once(arena, packets, init))
    assert ending == "closed", "the session must end cleanly after EOF"
    assert arena.leaks == []
    assert arena.guarded() == before
    _FUZZ_STATS["examples"] += 1
    _FUZZ_STATS["packets"] += len(packets)


async def test_after_fuzzing_the_server_serves_and_usage_is_exact(arena: Arena) -> None:
    server, victim = arena.server, arena.victim
    async with server.connect(victim) as conn, conn.start_sftp_client() as sftp:
        await sftp.stat(".")
    home = str(victim.home)
    for _ in range(100):
        usage = server.call(server.service.store.usage(victim.name, 0))
        assert usage is not None
        if (usage.used, usage.files) == scan_home(home) and usage.reserved == 0:
            break
        await asyncio.sleep(0.05)
    assert usage is not None and (usage.used, usage.files) == scan_home(home)
    for _ in range(100):
        folder = server.call(server.service.store.usage(folder_account("vault"), 0))
        assert folder is not None
        if (folder.used, folder.files) == scan_home(str(arena.vault)) and not folder.reserved:
            break
        await asyncio.sleep(0.05)
    assert folder is not None and (folder.used, folder.files) == scan_home(str(arena.vault))
    report("sftp fuzzer", **_FUZZ_STATS, crashes=0, leaks=0, usage_exact=True)
