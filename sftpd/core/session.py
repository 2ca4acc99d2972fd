"""A user's view of their home: every file operation, confined and accounted, as plain Python.

Protocol adapters (SFTP, SCP, exec commands) call these methods and map the
domain errors they raise; none of them touches the disk or checks a permission
by itself. Each operation runs as: confine (``Jail.locate``) -> permit (the
user's permissions for the directory it resolved to) -> check quota -> act ->
account.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sftpd.core.access import Access
from sftpd.core.checksum import known_sha256
from sftpd.core.errors import (
    AlreadyExists,
    IsADirectory,
    OutsideHome,
    PermissionDenied,
    SftpdError,
    Unsupported,
    from_oserror,
)
from sftpd.core.files import (
    OPEN_BASE,
    PERMISSION_MASK,
    AttrChanges,
    OpenFile,
    OpenMode,
    resize_fd,
    set_times,
)
from sftpd.core.jail import Jail, Location, lexical_parts, require_exists
from sftpd.core.permissions import NotPermitted
from sftpd.core.quota import QuotaLedger, is_counted, note_shrink, noted_shrink
from sftpd.core.uploads import (
    hold_writing,
    in_progress,
    is_temp,
    mark_uploader,
    part_state,
    temp_name,
)
from sftpd.events import Done, Emit, Event, no_emit

audit = logging.getLogger("sftpd.audit")


@dataclass(frozen=True)
class Folder:
    """A shared folder as one session sees it: at ``/at`` in the tree, counted by ``ledger``."""

    at: str  # a top-level name
    name: str
    path: str
    ledger: QuotaLedger


@dataclass(frozen=True)
class UsageReport:
    used: int
    files: int
    quota: int  # 0 = unlimited
    max_files: int  # 0 = no limit

    @property
    def free(self) -> int | None:
        return max(0, self.quota - self.used) if self.quota else None


class Session:
    """One authenticated user's file operations, all confined to their home."""

    def __init__(
        self,
        user: str,
        home: str,
        ledger: QuotaLedger,
        addr: str = "local",
        access: Access | None = None,
        folders: Sequence[Folder] = (),
        upload_mode: str = "standard",
        process_tag: str = "0",
        emit: Emit = no_emit,
        protocol: str = "sftp",
    ) -> None:
        self.user = user
        self.addr = addr  # the client's address, for audit lines
        self.jail = Jail(home, {f.at: f.path for f in folders})
        self.home = home
        self.emit = emit  # events, after an operation succeeded (sftpd/events)
        self.protocol = protocol
        self.ledger = ledger
        self.folders = {f.at: f for f in folders}
        self.access = access or Access(user)
        self.jail.barrier = self._require_visible
        self.upload_mode = upload_mode
        self.process_tag = process_tag  # this server process, in temporary upload names
        for counted in (ledger, *(f.ledger for f in folders)):
            counted.session_opened()
        self._closed = False

    async def aclose(self) -> None:
        """End the session: settle usage, hand back an unused claim, close the home fd."""
        if self._closed:
            return
        self._closed = True
        self.jail.close()
        for counted in (self.ledger, *(f.ledger for f in self.folders.values())):
            await counted.session_closed()

    def _ledger(self, loc: Location) -> QuotaLedger:
        """The ledger that counts ``loc``: its folder's, or the user's own."""
        return self.folders[loc.mount].ledger if loc.mount else self.ledger

    def _require_visible(self, directory: tuple[str, ...]) -> None:
        self.access.permissions.require_visible(directory)

    def _require(self, permission: str, directory: tuple[str, ...]) -> None:
        self.access.permissions.require(permission, directory)

    @contextmanager
    def _op(self, op: str) -> Iterator[None]:
        """Map OSError to domain errors; audit every attempt to leave the home and every
        refusal by the user's permissions."""
        try:
            yield
        except NotPermitted as exc:
            audit.warning(
                "operation not permitted",
                extra={
                    "event": "permission",
                    "user": self.user,
                    "addr": self.addr,
                    "op": op,
                    "reason": exc.message,
                },
            )
            raise
        except OutsideHome as exc:
            audit.warning(
                "confinement violation attempt",
                extra={
                    "event": "confinement",
                    "user": self.user,
                    "addr": self.addr,
                    "op": op,
                    "reason": exc.message,
                },
            )
            raise
        except OSError as exc:
            raise from_oserror(exc) from None

    # -- files -------------------------------------------------------------------

    async def open(
        self, path: str, mode: OpenMode, permissions: int = 0o644, *, size: int | None = None
    ) -> OpenFile:
        """Open a regular file. A mode without access flags reads (and needs ``download``);
        a file this open creates counts as a file whatever the mode (``--max-files``).

        ``size``: a whole upload whose size the client announced (SCP). Whatever the upload
        mode it goes to a temporary file that replaces the target only when complete, and
        its size is reserved before the open returns: a file that cannot fit is refused
        now, not after part of it was written.
        """
        mode = mode.accessing
        with self._op("open"), self.jail.locate(path) as loc:
            if size is not None and loc.name != ".":
                upload = OpenMode(write=True, create=True, truncate=True)
                return await self._open_atomic(loc, upload, permissions & PERMISSION_MASK, size)
            if self._atomic(mode) and loc.name != ".":
                return await self._open_atomic(loc, mode, permissions & PERMISSION_MASK)
            fd, created = self._open_at(loc, mode, permissions & PERMISSION_MASK)
            if not created and mode.write and "overwrite" not in self._allowed(loc):
                os.close(fd)
                self._require("overwrite", _directory(loc))
            finish = functools.partial(self._finished, None)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise (
                        IsADirectory()
                        if stat.S_ISDIR(st.st_mode)
                        else PermissionDenied("permission denied: not a regular file")
                    )
                if created:
                    await self._count_new_file(loc, st)
                if not mode.write:
                    if created:  # no close of a writer will write the count: do it now
                        await self._ledger(loc).flush_or_defer()
                    return OpenFile(fd, loc.vpath, mode, finish=finish, created=created)
                if not created and not mode.truncate:
                    await self._ledger(loc).check_not_full()
            except BaseException:
                os.close(fd)
                raise
            ledger = self._ledger(loc)
            inode = ledger.open_inode(st, noted_shrink(fd))
            writer = self._writing_part(fd, loc, created or mode.truncate)
            handle = OpenFile(fd, loc.vpath, mode, ledger, inode, finish, created, writer)
            if mode.truncate and st.st_size:
                try:
                    await resize_fd(ledger, inode, fd, 0)
                except BaseException:
                    await handle.close(completed=False)
                    raise
            return handle

    def _writing_part(self, fd: int, loc: Location, fresh: bool) -> str:
        """A file opened for writing under an in-progress name is held as being written
        (any worker sees it) and, if this open replaced its content, is this user's; a
        later write makes it this user's too (``OpenFile.writer``). Returns that user."""
        if not in_progress(loc.name):
            return ""
        hold_writing(fd)
        if fresh:
            mark_uploader(fd, self.user)
        return self.user

    def _atomic(self, mode: OpenMode) -> bool:
        """A new upload (write, create, truncate) in an atomic mode goes to a temporary file."""
        return (
            self.upload_mode != "standard"
            and mode.write
            and mode.create
            and mode.truncate
            and not mode.exclusive
        )

    async def _open_atomic(
        self, loc: Location, mode: OpenMode, permissions: int, size: int | None = None
    ) -> OpenFile:
        """Write under a hidden name beside the target; :meth:`_put_in_place` finishes.
        With ``size`` (see :meth:`open`) those bytes are reserved first and a broken
        upload is removed even in ``atomic-resume``."""
        try:
            old: os.stat_result | None = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and stat.S_ISDIR(old.st_mode):
            raise IsADirectory()
        if old is not None and not stat.S_ISREG(old.st_mode):
            raise PermissionDenied("permission denied: not a regular file")
        self._require("overwrite" if old is not None else "upload", _directory(loc))
        if mode.read:
            self._require("download", _directory(loc))
        temp = Location(
            loc.dir_fd, temp_name(self.process_tag), (*loc.parts[:-1], "tmp"), loc.mount
        )
        fd = os.open(temp.name, mode.os_flags() | os.O_CREAT | os.O_EXCL, permissions,
                     dir_fd=loc.dir_fd)  # fmt: skip
        ledger = self._ledger(loc)
        try:
            st = os.fstat(fd)
            await self._count_new_file(temp, st)
            inode = ledger.open_inode(st)
            writer = self._writing_part(fd, loc, True)
            if size:
                try:
                    await ledger.resize(inode, size)
                except BaseException:
                    await ledger.close_inode(inode, None)
                    os.unlink(temp.name, dir_fd=loc.dir_fd)
                    await self._forget(st, ledger)
                    raise
            dir_fd = os.dup(loc.dir_fd)
        except BaseException:
            os.close(fd)
            raise
        keep = self.upload_mode == "atomic-resume" and size is None
        place = functools.partial(
            self._put_in_place, dir_fd, temp.name, loc.name, ledger, _directory(loc), keep
        )
        finish = functools.partial(self._finished, place)
        return OpenFile(fd, loc.vpath, mode, ledger, inode, finish, old is None, writer)

    async def _finished(
        self, place: Callable[[bool], Awaitable[None]] | None, f: OpenFile, completed: bool
    ) -> None:
        """After a file's close: an atomic upload goes into place, then the event, then
        the usage write the close left to us (the event rides in it where the store can),
        and only then the answer."""
        failure: SftpdError | None = None
        try:
            if place is not None:
                with self._op("close"):
                    await place(completed)
        except SftpdError as exc:
            f.failed, failure = True, exc
        except BaseException:  # cancelled: what the close changed is written later
            if f.ledger is not None:
                f.ledger.settle_soon()
            raise
        recorded = self._file_event(f, completed)
        if f.ledger is not None:
            await f.ledger.flush_or_defer()
        await recorded
        if failure is not None:
            raise failure

    def _file_event(self, f: OpenFile, completed: bool) -> Awaitable[None]:
        """``upload`` or ``download`` (``-failed``), recorded before the close is answered.
        A file written under an in-progress name is ``upload-part``: not an upload yet (see
        rename), but in the history all the same."""
        if self.protocol == "exec" and not f.mode.write:
            return Done()  # a checksum command's read
        name = "upload" if f.mode.write else "download"
        done = completed and not f.failed
        if done and f.mode.write and in_progress(_parts(f.vpath)[-1]):
            name = "upload-part"
        return self.emit(
            Event(
                name if done else f"{name}-failed",
                self.user,
                self.addr,
                self.protocol,
                f.vpath,
                local_path=self.local_path(f.vpath),
                local_root=self.local_root(f.vpath),
                size=f.final_size,
                bytes=f.moved,
                duration=round(time.monotonic() - f.opened_at, 6),
            )
        )

    def _event(self, name: str, path: str, target: str = "", **fields: Any) -> Awaitable[None]:
        """Emit; the result is done when the event is recorded (await it where the caller
        can: an operation is then answered only after its event is safe)."""
        return self.emit(
            Event(name, self.user, self.addr, self.protocol, path, target,
                  self.local_path(path), self.local_path(target) if target else "",
                  local_root=self.local_root(path), **fields)
        )  # fmt: skip

    def local_root(self, vpath: str) -> str:
        """The server directory a canonical virtual path is below: the home, or the
        folder it is in. A hook resolves ``local_path`` beneath it without following
        links (docs/examples/move_to_processed.py)."""
        parts = _parts(vpath)
        return self.folders[parts[0]].path if parts and parts[0] in self.folders else self.home

    def local_path(self, vpath: str) -> str:
        """Where a canonical virtual path is on the server's disk (for hooks only)."""
        parts = _parts(vpath)
        if parts and parts[0] in self.folders:
            return os.path.join(self.folders[parts[0]].path, *parts[1:])
        return os.path.join(self.home, *parts)

    async def _put_in_place(
        self,
        dir_fd: int,
        temp: str,
        name: str,
        ledger: QuotaLedger,
        directory: tuple[str, ...],
        keep_broken: bool,
        completed: bool,
    ) -> None:
        """After the close: rename the temporary file over the target (a broken upload too
        with ``keep_broken``, ``atomic-resume``), or remove it; the ledger forgets what was
        replaced or removed.

        Without ``overwrite`` the file goes into place only if the name is still free
        (a hard link, which fails if it exists, then the temporary name's removal): a
        file another handle completed meanwhile is never replaced.
        """
        try:
            st = os.stat(temp, dir_fd=dir_fd, follow_symlinks=False)
            if not completed and not keep_broken:
                os.unlink(temp, dir_fd=dir_fd)
                await self._forget(st, ledger)
                return
            try:
                old: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            replace = "overwrite" in self.access.permissions.at(directory)
            same = old is not None and (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino)
            gone = replace and old is not None and not same
            with _held_at(dir_fd, name) as held:
                try:
                    if replace:
                        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    else:
                        os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                                follow_symlinks=False)  # fmt: skip
                        os.unlink(temp, dir_fd=dir_fd)
                except OSError as exc:
                    os.unlink(temp, dir_fd=dir_fd)
                    await self._forget(st, ledger)
                    if isinstance(exc, FileExistsError):
                        self._require("overwrite", directory)
                    raise from_oserror(exc) from None
                if gone and old is not None:
                    _note_removed(old, ledger, held)
            if gone and old is not None:  # the inode is freed first: on a full disk too
                await self._forget(old, ledger)
        finally:
            os.close(dir_fd)

    def _allowed(self, loc: Location) -> frozenset[str]:
        return self.access.permissions.at(_directory(loc))

    def _open_at(self, loc: Location, mode: OpenMode, permissions: int) -> tuple[int, bool]:
        """Open, creating with O_EXCL first so we know whether the file is new.

        Reading needs ``download``; creating needs ``upload`` (without it, only an
        existing file opens); writing to an existing file needs ``overwrite`` (the
        caller checks that, once it knows the file was not created).
        """
        allowed = self._allowed(loc)
        if mode.read:
            self._require("download", _directory(loc))
        if mode.write and not {"upload", "overwrite"} & allowed:
            self._require("upload", _directory(loc))
        flags = mode.os_flags()
        if mode.create and "upload" in allowed:
            try:
                return os.open(loc.name, flags | os.O_CREAT | os.O_EXCL, permissions,
                               dir_fd=loc.dir_fd), True  # fmt: skip
            except FileExistsError:
                if mode.exclusive:
                    raise AlreadyExists() from None
        try:
            return os.open(loc.name, flags, dir_fd=loc.dir_fd), False
        except FileNotFoundError:
            if mode.create:  # it would have been created
                self._require("upload", _directory(loc))
            raise

    async def _count_new_file(self, loc: Location, st: os.stat_result) -> None:
        try:
            await self._ledger(loc).file_created()
        except SftpdError:
            here = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
            if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(loc.name, dir_fd=loc.dir_fd)
            raise

    # -- metadata ----------------------------------------------------------------

    def stat(self, path: str, *, follow: bool = True) -> os.stat_result:
        """lstat/stat; needs ``list`` where the entry is (the home itself is always visible)."""
        with self._op("stat"), self.jail.locate(path, follow=follow) as loc:
            if loc.parts:
                self._require("list", _directory(loc))
            return require_exists(loc)

    def fstat(self, f: OpenFile) -> os.stat_result:
        """fstat needs what stat needs (``list``), unless this handle created the file."""
        with self._op("fstat"):
            if not f.created:
                self._require("list", _parts(f.vpath)[:-1])
            return f.stat()

    async def setstat(self, path: str, changes: AttrChanges, *, follow: bool = True) -> None:
        """Change attributes; the home's root and a folder's mount point are not the
        user's to change (a read-only mount's root would otherwise follow ``/``'s rules)."""
        with self._op("setstat"), self.jail.locate(path, follow=follow) as loc:
            if loc.is_root and changes != AttrChanges():
                raise PermissionDenied("permission denied: cannot change this directory")
            self._require_changes(changes, _directory(loc))
            if self.access.permissions.guards(loc.parts):  # a ruled directory: its own rule too
                self._require_changes(changes, loc.parts)
            st = require_exists(loc)
            changes.check_owner(st)
            if changes.size is not None:
                await self._truncate(loc, changes.size)
            if changes.permissions is not None:
                if stat.S_ISLNK(st.st_mode):
                    raise PermissionDenied("permission denied: cannot chmod a symlink")
                self._chmod(loc, changes.permissions & PERMISSION_MASK)
            set_times(loc.dir_fd, loc.name, changes)

    def _require_changes(self, changes: AttrChanges, directory: tuple[str, ...]) -> None:
        """Check every permission a setstat needs before changing anything."""
        if changes.size is not None:
            self._require("overwrite", directory)
        if changes.permissions is not None:
            self._require("chmod", directory)
        if changes.atime_ns is not None or changes.mtime_ns is not None:
            self._require("chtimes", directory)

    async def fsetstat(self, f: OpenFile, changes: AttrChanges) -> None:
        """setstat through an open handle: the same permissions as by name."""
        with self._op("fsetstat"):
            self._require_changes(changes, _parts(f.vpath)[:-1])
            await f.setstat(changes)

    async def _truncate(self, loc: Location, size: int) -> None:
        fd = os.open(loc.name, os.O_WRONLY | OPEN_BASE, dir_fd=loc.dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PermissionDenied("permission denied: not a regular file")
            ledger = self._ledger(loc)
            inode = ledger.open_inode(st, noted_shrink(fd))
            try:
                await resize_fd(ledger, inode, fd, size)
            finally:
                await ledger.close_inode(inode, None)  # flushes: read-your-writes
        finally:
            os.close(fd)

    @staticmethod
    def _chmod(loc: Location, mode: int) -> None:
        # fchmodat cannot refuse symlinks on Linux, so chmod the inode through
        # an O_PATH fd opened with O_NOFOLLOW: it names exactly what we checked.
        fd = os.open(loc.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.dir_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise PermissionDenied("permission denied: cannot chmod a symlink")
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)

    async def usage(self, ledger: QuotaLedger | None = None) -> UsageReport:
        """The user's usage (or a folder's), this process's pending growth written first."""
        ledger = ledger or self.ledger
        await ledger.flush()
        u = await ledger.store.usage(ledger.user, ledger.default_quota)
        if u is None:
            return UsageReport(0, 0, 0, 0)
        return UsageReport(u.used, u.files, u.quota, u.max_files)

    async def folder_usage(self) -> list[tuple[str, UsageReport]]:
        """Each mounted folder's usage, by where it is mounted."""
        return [("/" + at, await self.usage(f.ledger)) for at, f in sorted(self.folders.items())]

    async def statvfs(self, path: str = "/") -> os.statvfs_result:
        """The filesystem as the user sees it at ``path``: the quota of the home, or of the
        folder ``path`` is in, is the size, its usage is used."""
        with self._op("statvfs"), self.jail.locate(path) as loc:
            if loc.parts:
                self._require("list", _directory(loc))
            real = os.statvfs(loc.dir_fd)
            ledger = self._ledger(loc)
        u = await self.usage(ledger)
        if not u.quota:
            return real
        block = 1024
        blocks = u.quota // block
        free = min(
            (u.quota - min(u.used, u.quota)) // block, real.f_bavail * real.f_frsize // block
        )
        files = u.max_files or real.f_files
        ffree = max(0, u.max_files - u.files) if u.max_files else real.f_ffree
        return os.statvfs_result(
            (block, block, blocks, free, free, files, ffree, ffree, real.f_flag, real.f_namemax)
        )

    # -- directories -------------------------------------------------------------

    def listdir(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        """Yield ``(name, lstat)`` for ``.``, ``..`` and every entry, lazily; the home's
        root also lists the folders mounted in it (hiding entries of the same name)."""
        with self._op("listdir"), self.jail.locate(path) as loc:
            self._require("list", loc.parts)
            fd = os.open(loc.name, os.O_RDONLY | os.O_DIRECTORY | OPEN_BASE, dir_fd=loc.dir_fd)
            parent = os.stat(loc.dir_fd) if loc.name != "." else None
            mounts = (
                {at: os.stat(mount_fd) for at, mount_fd in self.jail.mounts.items()}
                if not loc.parts
                else {}
            )
        return self._entries(fd, parent, mounts)

    @staticmethod
    def _entries(
        fd: int, parent: os.stat_result | None, mounts: dict[str, os.stat_result]
    ) -> Iterator[tuple[str, os.stat_result]]:
        try:
            here = os.fstat(fd)
            yield ".", here
            yield "..", parent or here
            yield from sorted(mounts.items())
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name in mounts or is_temp(entry.name):
                        continue
                    try:
                        yield entry.name, entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listing
        finally:
            os.close(fd)

    async def mkdir(self, path: str, permissions: int = 0o755) -> None:
        with self._op("mkdir"), self.jail.locate(path, follow=False) as loc:
            self._require("mkdir", _directory(loc))
            os.mkdir(loc.name, permissions & PERMISSION_MASK, dir_fd=loc.dir_fd)
            vpath = loc.vpath
        await self._event("mkdir", vpath)

    async def rmdir(self, path: str) -> None:
        with self._op("rmdir"), self.jail.locate(path, follow=False) as loc:
            if loc.name == ".":
                raise PermissionDenied("permission denied: cannot remove this directory")
            self._require("rmdir", _directory(loc))
            self._require_unguarded(loc, "removed")
            os.rmdir(loc.name, dir_fd=loc.dir_fd)
            vpath = loc.vpath
        await self._event("rmdir", vpath)

    # -- names -------------------------------------------------------------------

    async def remove(self, path: str) -> None:
        with self._op("remove"), self.jail.locate(path, follow=False) as loc:
            if loc.name == ".":
                raise IsADirectory()
            self._require("delete", _directory(loc))
            self._require_unguarded(loc, "removed")
            st = require_exists(loc)
            ledger = self._ledger(loc)
            with _held(loc) as held:
                os.unlink(loc.name, dir_fd=loc.dir_fd)
                _note_removed(st, ledger, held)
            await self._forget(st, ledger)  # the inode is freed first: on a full disk too
            await self._event("delete", loc.vpath)

    @staticmethod
    async def _forget(st: os.stat_result, ledger: QuotaLedger) -> None:
        """A name is gone: if it was the file's last, the file no longer counts."""
        if is_counted(st):
            size = ledger.counted_size(st)
            ledger.detach(st)
            await ledger.file_removed(size)

    async def rename(self, old: str, new: str) -> None:
        """Rename, replacing an existing target (what WinSCP, lftp and rclone rely on).

        A file renamed from an in-progress name to a final one (``.a.xfer-part`` -> ``a``,
        sftpd.core.uploads) is how xfer, rclone and WinSCP finish an upload: if the user
        renaming it wrote it and no handle here still writes it (:meth:`_finishing`), that
        rename is the ``upload`` event, and in the same directory it needs what uploading
        the file there needs (``upload``, ``overwrite`` to replace), ``rename`` or not."""
        with (
            self._op("rename"),
            self.jail.locate(old, follow=False) as src,
            self.jail.locate(new, follow=False) as dst,
        ):
            if "." in (src.name, dst.name):
                raise PermissionDenied("permission denied: cannot rename this directory")
            _same_tree(src, dst, "rename")
            src_st = require_exists(src)
            try:
                dst_st: os.stat_result | None = os.stat(
                    dst.name, dir_fd=dst.dir_fd, follow_symlinks=False
                )
            except FileNotFoundError:
                dst_st = None
            finishing = self._finishing(src, src_st, dst)
            self._require_rename(src, src_st, dst, dst_st, finishing)
            sha256 = known_sha256(src_st) if finishing else ""  # the rename changes ctime
            replaced = dst_st is not None and (dst_st.st_dev, dst_st.st_ino) != (
                src_st.st_dev,
                src_st.st_ino,
            )
            with _held(dst) as held:
                os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
                if replaced and dst_st is not None:
                    _note_removed(dst_st, self._ledger(dst), held)
            if replaced and dst_st is not None:
                await self._forget(dst_st, self._ledger(dst))
            if finishing:
                await self._event("upload", dst.vpath, size=src_st.st_size, sha256=sha256)
            else:
                await self._event("rename", src.vpath, dst.vpath)

    def _finishing(self, src: Location, src_st: os.stat_result, dst: Location) -> bool:
        """Does moving ``src`` to ``dst`` finish an upload of this user's: a regular file
        from an in-progress name to a final one, which this user wrote (UPLOADER_XATTR;
        where the file system keeps no extended attributes, in the user's own home) and
        which no handle in this process still writes?"""
        if not _finishes_upload(src, src_st, dst):
            return False
        if (src_st.st_dev, src_st.st_ino) in self._ledger(src).inodes:
            return False
        part = part_state(src.dir_fd, src.name)
        if part.busy:
            return False
        return part.uploader == self.user or (part.uploader is None and src.mount is None)

    def _require_rename(
        self, src: Location, src_st: os.stat_result, dst: Location,
        dst_st: os.stat_result | None, finishing: bool,
    ) -> None:  # fmt: skip
        """``rename`` on both sides; moving into another directory also needs what creating
        there needs, and replacing a file needs ``overwrite``.

        Other routes to what a rule protects, closed here: a path that carries or holds a
        rule is neither moved nor replaced (the rule would stay behind, its content
        not); a move between directories whose sets differ needs what a copy would
        (read the source there, create its kind here), since a moved entry takes the
        destination's rules (tests/server/test_routes.py)."""
        here, there = _directory(src), _directory(dst)
        if finishing and here == there:
            allowed = self._allowed(dst)
            if "upload" in allowed and (dst_st is None or "overwrite" in allowed):
                self._require_unguarded(src, "renamed")
                self._require_unguarded(dst, "replaced")
                return
        self._require("rename", here)
        self._require("rename", there)
        self._require_unguarded(src, "renamed")
        self._require_unguarded(dst, "replaced")
        if here != there:
            self._require(_creating(src_st.st_mode), there)
        if self._allowed(src) != self._allowed(dst):
            for permission in _copy_rights(src_st.st_mode):
                self._require(permission, here)
            self._require(_creating(src_st.st_mode), there)
            if stat.S_ISDIR(src_st.st_mode):  # the files it holds are created there too
                self._require("upload", there)
        if dst_st is not None and not stat.S_ISDIR(dst_st.st_mode):
            self._require("overwrite", there)

    def _require_unguarded(self, loc: Location, what: str) -> None:
        """A path that carries or holds an access rule keeps its place."""
        if self.access.permissions.guards(loc.parts):
            raise NotPermitted(
                f"permission denied: {loc.vpath} holds access rules and cannot be {what}"
            )

    def realpath(self, path: str) -> str:
        with self._op("realpath"), self.jail.locate(path) as loc:
            return loc.vpath

    def readlink(self, path: str) -> str:
        with self._op("readlink"), self.jail.locate(path, follow=False) as loc:
            self._require("list", _directory(loc))
            require_exists(loc)
            return self.jail.client_target(loc, os.readlink(loc.name, dir_fd=loc.dir_fd))

    def symlink(self, target: str, linkpath: str) -> None:
        """A link whose stored form cannot climb out of its tree (``Jail.disk_target``):
        not by a chain of links, not after a rename, not for a hook or a backup that
        follows it on the server."""
        with self._op("symlink"), self.jail.locate(linkpath, follow=False) as loc:
            if loc.name == ".":
                raise PermissionDenied()
            self._require("symlink", _directory(loc))
            resolved = lexical_parts(loc.parent_parts, target)
            if resolved is not None and _tree_of(resolved, self.folders) != loc.mount:
                raise OutsideHome("permission denied: link target is in another folder")
            os.symlink(self.jail.disk_target(loc, target), loc.name, dir_fd=loc.dir_fd)

    async def link(self, old: str, new: str) -> None:
        """A hard link: usage counts the inode once, so nothing changes. Never to or from
        an in-progress name: a second name would let a published file change through its
        part name (an ``upload-part``, never an ``upload``), or finish an upload quietly."""
        with (
            self._op("link"),
            self.jail.locate(old, follow=False) as src,
            self.jail.locate(new, follow=False) as dst,
        ):
            if "." in (src.name, dst.name):
                raise PermissionDenied()
            _same_tree(src, dst, "link")
            self._require("download", _directory(src))
            self._require("symlink", _directory(dst))
            self._require("upload", _directory(dst))
            # The new name shares the inode: whatever it lets the user change there must
            # already be allowed where the file is (a read-only file stays read-only).
            for permission in sorted(_THROUGH_INODE & self._allowed(dst)):
                self._require(permission, _directory(src))
            if in_progress(src.name) or in_progress(dst.name):
                raise PermissionDenied(
                    "permission denied: an in-progress upload is finished by a rename, not a link"
                )
            os.link(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd,
                    follow_symlinks=False)  # fmt: skip


#: What a second name of a file lets a user change in the file itself.
_THROUGH_INODE = frozenset({"overwrite", "chmod", "chtimes"})


def _finishes_upload(src: Location, src_st: os.stat_result, dst: Location) -> bool:
    """A regular file moving from an in-progress name to a final one."""
    return stat.S_ISREG(src_st.st_mode) and in_progress(src.name) and not in_progress(dst.name)


def _creating(mode: int) -> str:
    """The permission that creating an entry of this kind needs."""
    return "mkdir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "upload"


def _copy_rights(mode: int) -> tuple[str, ...]:
    """What copying an entry of this kind out of a directory needs there."""
    if stat.S_ISDIR(mode):
        return ("list", "download")
    return ("list",) if stat.S_ISLNK(mode) else ("download",)


@contextlib.contextmanager
def _held_at(dir_fd: int, name: str) -> Iterator[int | None]:
    """An O_PATH descriptor on the entry ``name``, kept across its removal or replacement
    so a note can still reach the inode (:func:`note_shrink`); None if there is none."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _held(loc: Location) -> contextlib.AbstractContextManager[int | None]:
    return _held_at(loc.dir_fd, loc.name)


def _note_removed(st: os.stat_result, ledger: QuotaLedger, held: int | None) -> None:
    """The last name of ``st`` is gone: note on the inode (``held``, from :func:`_held`)
    what the ledger takes off for it, for a process that still has it open for writing.
    The caller closes the descriptor before the store write, so a full disk gets the
    space back first."""
    if held is not None and is_counted(st):
        note_shrink(held, ledger.counted_size(st))


def _directory(loc: Location) -> tuple[str, ...]:
    """The virtual directory whose permissions govern ``loc``: the one it is an entry of."""
    return loc.parts[:-1]


def _parts(vpath: str) -> tuple[str, ...]:
    return tuple(p for p in vpath.split("/") if p)


def _tree_of(parts: Sequence[str], folders: Mapping[str, Folder]) -> str | None:
    """The folder a virtual path is in (its top-level mount), or None for the home."""
    return parts[0] if parts and parts[0] in folders else None


def _same_tree(src: Location, dst: Location, op: str) -> None:
    """A rename or link cannot cross a folder boundary, like one across filesystems."""
    if src.mount != dst.mount:
        raise Unsupported(f"cannot {op} across a folder boundary")
