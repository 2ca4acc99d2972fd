"""Confinement in the core, without a network: every escape route is refused or stays inside."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sftpd.core import errors
from sftpd.core.files import AttrChanges, OpenMode
from sftpd.core.jail import relative_to
from sftpd.core.quota import QuotaLedger
from sftpd.core.session import Session
from sftpd.store import UserRecord, open_store

READ = OpenMode(read=True)
WRITE = OpenMode(write=True, create=True, truncate=True)


@pytest.fixture
def homes(tmp_path: Path) -> Path:
    root = tmp_path / "homes"
    (root / "alice").mkdir(parents=True)
    (root / "alice2").mkdir()
    (root / "alice2" / "theirs.txt").write_text("alice2's file")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (tmp_path / "secretdir").mkdir()
    (tmp_path / "secretdir" / "inner.txt").write_text("TOP SECRET")
    return root


@pytest.fixture
async def session(homes: Path, tmp_path: Path) -> AsyncIterator[Session]:
    store = await open_store(str(tmp_path / "sftpd.db"))
    await store.add_user(UserRecord("alice", quota_bytes=0))
    s = Session("alice", str(homes / "alice"), QuotaLedger("alice", store, "test", 0))
    yield s
    await s.aclose()
    await store.close()


@pytest.fixture
def home(homes: Path) -> Path:
    return homes / "alice"


async def read_all(session: Session, path: str) -> bytes:
    f = await session.open(path, READ)
    try:
        return f.read(0, 1 << 20)
    finally:
        await f.close()


async def write(session: Session, path: str, data: bytes) -> None:
    f = await session.open(path, WRITE)
    try:
        await f.write(0, data)
    finally:
        await f.close()


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "../../secret.txt", "/../secret.txt", "a/../../secret.txt",
     "//..//..//secret.txt", "/./../secret.txt", "../" * 50 + "secret.txt",
     "../alice2/theirs.txt", "/../alice2/theirs.txt"],
)  # fmt: skip
async def test_dotdot_chains_stay_at_the_home(session: Session, home: Path, path: str) -> None:
    (home / "a").mkdir()
    (home / "alice2").mkdir()
    with pytest.raises(errors.NotFound):
        await read_all(session, path)
    inside = session.realpath(path)
    assert inside in ("/secret.txt", "/alice2/theirs.txt")
    (home / inside.lstrip("/")).write_text("mine")
    assert await read_all(session, path) == b"mine"


async def test_absolute_and_double_slash_paths_are_home_relative(
    session: Session, home: Path
) -> None:
    (home / "a").mkdir()
    await write(session, "//a//y.txt", b"hello")
    assert (home / "a" / "y.txt").read_bytes() == b"hello"
    assert session.realpath("//a/..//a/./y.txt") == "/a/y.txt"
    assert session.realpath("..") == "/"
    assert session.realpath("") == "/"


async def test_realpath_never_names_a_server_path(session: Session, home: Path) -> None:
    (home / "d").mkdir()
    os.symlink("d", home / "link")
    assert session.realpath("link") == "/d"
    assert session.realpath("link/../..") == "/"
    assert str(home) not in session.realpath("/../../..")


@pytest.mark.parametrize("name", ["a\0b", "x/\0", "\0"])
async def test_nul_bytes_are_invalid_names(session: Session, name: str) -> None:
    with pytest.raises(errors.InvalidName):
        session.stat(name)
    with pytest.raises(errors.InvalidName):
        await write(session, name, b"x")


async def test_over_long_names_and_paths_are_refused(session: Session) -> None:
    with pytest.raises(errors.InvalidName):
        await write(session, "n" * 256, b"x")
    with pytest.raises(errors.InvalidName):
        session.stat("/".join(["d"] * 3000))
    await write(session, "n" * 255, b"ok")  # the longest legal name works


async def test_existing_absolute_symlink_to_outside_is_refused(
    session: Session, home: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path / "secret.txt", home / "evil")
    os.symlink(tmp_path / "secretdir", home / "evildir")
    for path in ("evil", "evildir/inner.txt"):
        with pytest.raises(errors.OutsideHome):
            await read_all(session, path)
    with pytest.raises(errors.OutsideHome):
        session.listdir("evildir")
    with pytest.raises(errors.OutsideHome):
        session.stat("evildir/inner.txt")
    with pytest.raises(errors.OutsideHome):
        session.readlink("evil")
    with pytest.raises(errors.OutsideHome):
        await write(session, "evildir/new.txt", b"x")
    assert not (tmp_path / "secretdir" / "new.txt").exists()
    # lstat of the link itself is fine and shows a link, not the target
    assert stat.S_ISLNK(session.stat("evil", follow=False).st_mode)


async def test_existing_relative_symlink_climbing_out_is_refused(
    session: Session, home: Path, tmp_path: Path
) -> None:
    (home / "sub").mkdir()
    os.symlink("../../../secret.txt", home / "sub" / "up")
    os.symlink("../alice2", home / "sibling")
    with pytest.raises(errors.OutsideHome):
        await read_all(session, "sub/up")
    with pytest.raises(errors.OutsideHome):
        await read_all(session, "sibling/theirs.txt")
    with pytest.raises(errors.OutsideHome):
        session.readlink("sub/up")
    with pytest.raises(errors.OutsideHome):
        session.realpath("sibling")


async def test_symlinks_inside_the_home_work(session: Session, home: Path) -> None:
    (home / "a" / "b").mkdir(parents=True)
    (home / "a" / "b" / "f.txt").write_text("inside")
    os.symlink("a/b", home / "ab")
    os.symlink("../b/f.txt", home / "a" / "rel")  # a/../b/f.txt -> /b/f.txt missing
    os.symlink("b/f.txt", home / "a" / "ok")
    assert await read_all(session, "ab/f.txt") == b"inside"
    assert await read_all(session, "a/ok") == b"inside"
    assert session.readlink("a/ok") == "b/f.txt"
    with pytest.raises(errors.NotFound):
        await read_all(session, "a/rel")


async def test_symlink_loops_end_with_a_loop_error(session: Session, home: Path) -> None:
    os.symlink("loop2", home / "loop1")
    os.symlink("loop1", home / "loop2")
    with pytest.raises(errors.LinkLoop):
        await read_all(session, "loop1")
    with pytest.raises(errors.LinkLoop):
        session.stat("loop1/x")


async def test_new_symlink_above_its_directory_is_stored_as_the_server_path(
    session: Session, home: Path
) -> None:
    (home / "d").mkdir()
    await write(session, "target.txt", b"t")
    session.symlink("/target.txt", "d/link")
    assert os.readlink(home / "d" / "link") == str(home / "target.txt")
    assert session.readlink("d/link") == "../target.txt"  # never the server path
    assert await read_all(session, "d/link") == b"t"
    # followed by any process on the server, it stays inside the home
    assert (home / "d" / "link").resolve() == (home / "target.txt").resolve()


async def test_new_symlink_below_its_directory_is_stored_relative_without_dotdot(
    session: Session, home: Path
) -> None:
    (home / "d" / "e").mkdir(parents=True)
    session.symlink("/d/e/../e/./f", "d/link")
    assert os.readlink(home / "d" / "link") == "e/f"
    session.symlink(".", "d/self")
    assert os.readlink(home / "d" / "self") == "."


async def test_a_chain_of_links_cannot_lead_a_process_out(
    session: Session, home: Path, homes: Path
) -> None:
    """Issue 25, finding 1: each target is harmless as text, the chain on disk was not."""
    await session.mkdir("d")
    session.symlink("..", "d/up")
    session.symlink("d/up/../alice2", "processed")
    for link in ("d/up", "processed"):
        resolved = os.path.realpath(home / link)
        assert os.path.commonpath([resolved, str(home)]) == str(home), (link, resolved)
    # a directory holding an upward link moved up a level: still inside
    await session.mkdir("a")
    await session.mkdir("a/b")
    session.symlink("/x", "a/b/l")
    await session.rename("a/b", "b")
    resolved = os.path.realpath(home / "b" / "l")
    assert os.path.commonpath([resolved, str(home)]) == str(home)


async def test_a_stored_absolute_target_outside_the_tree_is_refused(
    session: Session, home: Path, homes: Path
) -> None:
    os.symlink(str(homes / "alice2"), home / "abs")
    os.symlink(str(home) + "/../alice2", home / "abs2")
    for link in ("abs", "abs2"):
        with pytest.raises(errors.OutsideHome):
            session.stat(link + "/theirs.txt")
        with pytest.raises(errors.OutsideHome):
            session.readlink(link)


@pytest.mark.parametrize("target", ["../secret.txt", "d/../../secret.txt", "../../../etc/passwd"])
async def test_new_symlink_climbing_out_is_refused(
    session: Session, home: Path, target: str
) -> None:
    with pytest.raises(errors.OutsideHome):
        session.symlink(target, "link")
    assert not os.path.lexists(home / "link")


async def test_absolute_symlink_target_to_etc_stays_in_the_home(
    session: Session, home: Path
) -> None:
    session.symlink("/etc/passwd", "pw")
    assert os.readlink(home / "pw") == "etc/passwd"
    with pytest.raises(errors.NotFound):
        await read_all(session, "pw")


async def test_relative_to_goes_from_a_directory_to_a_path() -> None:
    assert relative_to(("a", "b"), ["a", "c", "f"]) == "../c/f"
    assert relative_to((), ["f"]) == "f"
    assert relative_to(("a",), []) == ".."
    assert relative_to(("a",), ["a"]) == "."


async def test_hard_links_cannot_reach_outside(
    session: Session, home: Path, tmp_path: Path
) -> None:
    with pytest.raises(errors.NotFound):
        await session.link("../secret.txt", "copy")  # clamps to /secret.txt, which does not exist
    os.symlink(tmp_path / "secret.txt", home / "evil")
    await session.link("evil", "evil2")  # links the symlink itself, never its target
    assert os.path.islink(home / "evil2")
    with pytest.raises(errors.OutsideHome):
        await read_all(session, "evil2")
    await write(session, "mine.txt", b"mine")
    await session.link("mine.txt", "/../../hard.txt")
    assert (home / "hard.txt").read_bytes() == b"mine"
    assert not (tmp_path / "hard.txt").exists()


async def test_rename_to_outside_lands_inside(session: Session, home: Path, tmp_path: Path) -> None:
    await write(session, "f.txt", b"data")
    await session.rename("f.txt", "../../../moved.txt")
    assert (home / "moved.txt").read_bytes() == b"data"
    assert not (tmp_path / "moved.txt").exists()
    os.symlink(tmp_path / "secretdir", home / "evildir")
    with pytest.raises(errors.OutsideHome):
        await session.rename("moved.txt", "evildir/moved.txt")
    assert (home / "moved.txt").exists()


async def test_rename_replaces_an_existing_file(session: Session, home: Path) -> None:
    await write(session, "a.filepart", b"new")
    await write(session, "a", b"old")
    await session.rename("a.filepart", "a")
    assert (home / "a").read_bytes() == b"new"
    assert not (home / "a.filepart").exists()


async def test_the_home_itself_cannot_be_removed_or_renamed(session: Session, home: Path) -> None:
    for path in ("/", ".."):
        with pytest.raises(errors.SftpdError):
            await session.rmdir(path)
        with pytest.raises(errors.SftpdError):
            await session.rename(path, "x")
        with pytest.raises(errors.SftpdError):
            await session.remove(path)
    assert home.is_dir()


async def test_chmod_cannot_set_setuid_setgid_or_sticky(session: Session, home: Path) -> None:
    await write(session, "f", b"x")
    await session.setstat("f", AttrChanges(permissions=0o7777))
    assert stat.S_IMODE((home / "f").stat().st_mode) == 0o777
    f = await session.open("f", OpenMode(write=True))
    await f.setstat(AttrChanges(permissions=0o4755))
    await f.close()
    assert stat.S_IMODE((home / "f").stat().st_mode) == 0o755
    (home / "d").mkdir()
    await session.setstat("d", AttrChanges(permissions=0o3777))
    assert stat.S_IMODE((home / "d").stat().st_mode) == 0o777


async def test_chmod_through_a_symlink_to_outside_is_refused(
    session: Session, home: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path / "secret.txt", home / "evil")
    before = (tmp_path / "secret.txt").stat().st_mode
    with pytest.raises(errors.OutsideHome):
        await session.setstat("evil", AttrChanges(permissions=0o777))
    with pytest.raises(errors.PermissionDenied):
        await session.setstat("evil", AttrChanges(permissions=0o777), follow=False)
    assert (tmp_path / "secret.txt").stat().st_mode == before


async def test_chown_is_refused_but_restating_the_owner_is_not(
    session: Session, home: Path
) -> None:
    await write(session, "f", b"x")
    st = (home / "f").stat()
    await session.setstat("f", AttrChanges(uid=st.st_uid, gid=st.st_gid))
    with pytest.raises(errors.PermissionDenied):
        await session.setstat("f", AttrChanges(uid=st.st_uid + 1))


async def test_opening_a_fifo_does_not_block_and_is_refused(session: Session, home: Path) -> None:
    os.mkfifo(home / "fifo")
    with pytest.raises(errors.PermissionDenied):
        await session.open("fifo", READ)


async def test_listing_shows_names_not_targets(
    session: Session, home: Path, tmp_path: Path
) -> None:
    await write(session, "f", b"x")
    os.symlink(tmp_path / "secretdir", home / "evildir")
    names = {name for name, _ in session.listdir("/")}
    assert names == {".", "..", "f", "evildir"}


async def test_open_honours_offsets_and_never_appends(session: Session, home: Path) -> None:
    await write(session, "f", b"0123456789")
    f = await session.open("f", OpenMode(write=True))  # a resume: no TRUNC
    await f.write(8, b"XY")
    await f.write(2, b"ab")
    await f.close()
    assert (home / "f").read_bytes() == b"01ab4567XY"


async def test_race_swapping_a_directory_for_a_symlink_never_leaks(
    session: Session, home: Path, tmp_path: Path
) -> None:
    """A thread flips ``d`` between a real directory and a symlink to outside while
    the session reads, lists, writes and stats through it: nothing outside is touched."""
    (tmp_path / "secretdir" / "f.txt").write_text("TOP SECRET")
    stop = time.monotonic() + 2.0
    real = home / "d"

    def flip() -> None:
        while time.monotonic() < stop:
            real.mkdir(exist_ok=True)
            (real / "f.txt").write_text("inside")
            shutil.rmtree(real, ignore_errors=True)
            if not os.path.lexists(real):
                os.symlink(tmp_path / "secretdir", real)
                os.unlink(real)

    flipper = threading.Thread(target=flip)
    flipper.start()
    leaks = []
    ops = 0
    try:
        while time.monotonic() < stop:
            ops += 1
            try:
                if b"SECRET" in await read_all(session, "d/f.txt"):
                    leaks.append("read")
            except errors.SftpdError:
                pass
            try:
                for name, _ in session.listdir("d"):
                    if name == "inner.txt":
                        leaks.append("list")
            except errors.SftpdError:
                pass
            with contextlib.suppress(errors.SftpdError):
                await write(session, "d/planted.txt", b"x")
            try:
                session.stat("d/inner.txt")
                leaks.append("stat")
            except errors.SftpdError:
                pass
    finally:
        flipper.join()
    assert ops > 50
    assert leaks == []
    assert not (tmp_path / "secretdir" / "planted.txt").exists()
