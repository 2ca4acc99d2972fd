"""A user's view of their home: every file operation, confined, as plain Python.

Protocol adapters (SFTP, SCP, exec commands) call these methods and map the
domain errors they raise; none of them touches the disk by itself.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from sftpd.core.errors import (
    InvalidArgument,
    IsADirectory,
    OutsideHome,
    PermissionDenied,
    SftpdError,
    from_oserror,
)
from sftpd.core.jail import Jail, Location, lexical_parts, link_target_for_disk, require_exists

audit = logging.getLogger("sftpd.audit")

#: Permission bits a client may set: never setuid, setgid or sticky.
PERMISSION_MASK = 0o777
_OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class OpenMode:
    """What a client asked for when opening a file (protocol-neutral)."""

    read: bool = False
    write: bool = False
    create: bool = False
    truncate: bool = False
    exclusive: bool = False

    def os_flags(self) -> int:
        if self.read and self.write:
            flags = os.O_RDWR
        elif self.write:
            flags = os.O_WRONLY
        else:
            flags = os.O_RDONLY
        if self.create:
            flags |= os.O_CREAT
        if self.truncate:
            flags |= os.O_TRUNC
        if self.exclusive:
            flags |= os.O_EXCL
        return flags | _OPEN_BASE


@dataclass(frozen=True)
class AttrChanges:
    """Attribute changes from setstat; None means leave as is."""

    size: int | None = None
    permissions: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    uid: int | None = None
    gid: int | None = None

    def check_owner(self, st: os.stat_result) -> None:
        """chown is refused; restating the current owner (some clients do) is fine."""
        if self.uid not in (None, st.st_uid) or self.gid not in (None, st.st_gid):
            raise PermissionDenied("permission denied: changing owner is not allowed")


def _oserror(exc: OSError) -> SftpdError:
    return from_oserror(exc)


class OpenFile:
    """An open regular file. Writes honour the client's offsets, never O_APPEND."""

    def __init__(self, fd: int, vpath: str, mode: OpenMode) -> None:
        self.fd = fd
        self.vpath = vpath
        self.mode = mode
        self.closed = False

    def read(self, offset: int, size: int) -> bytes:
        if not self.mode.read:
            raise PermissionDenied("permission denied: file not open for reading")
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise _oserror(exc) from None

    def write(self, offset: int, data: bytes) -> int:
        if not self.mode.write:
            raise PermissionDenied("permission denied: file not open for writing")
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as exc:
            raise _oserror(exc) from None
        return done

    def stat(self) -> os.stat_result:
        try:
            return os.fstat(self.fd)
        except OSError as exc:
            raise _oserror(exc) from None

    def seek(self, offset: int, whence: int) -> int:
        """lseek, for SEEK_DATA/SEEK_HOLE range queries; raises OSError as lseek does."""
        return os.lseek(self.fd, offset, whence)

    def setstat(self, changes: AttrChanges) -> None:
        changes.check_owner(self.stat())
        try:
            if changes.size is not None:
                if not self.mode.write:
                    raise PermissionDenied("permission denied: file not open for writing")
                os.ftruncate(self.fd, changes.size)
            if changes.permissions is not None:
                os.fchmod(self.fd, changes.permissions & PERMISSION_MASK)
            _set_times(self.fd, None, changes)
        except OSError as exc:
            raise _oserror(exc) from None

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise _oserror(exc) from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def _set_times(fd: int, name: str | None, changes: AttrChanges) -> None:
    if changes.atime_ns is None and changes.mtime_ns is None:
        return
    current = os.stat(name, dir_fd=fd, follow_symlinks=False) if name else os.fstat(fd)
    times = (
        changes.atime_ns if changes.atime_ns is not None else current.st_atime_ns,
        changes.mtime_ns if changes.mtime_ns is not None else current.st_mtime_ns,
    )
    if name is None:
        os.utime(fd, ns=times)
    else:
        os.utime(name, ns=times, dir_fd=fd, follow_symlinks=False)


class Session:
    """One authenticated user's file operations, all confined to their home."""

    def __init__(self, user: str, home: str) -> None:
        self.user = user
        self.jail = Jail(home)

    def close(self) -> None:
        self.jail.close()

    def _violation(self, op: str, exc: OutsideHome) -> OutsideHome:
        audit.warning(
            "confinement violation attempt",
            extra={"event": "confinement", "user": self.user, "op": op, "reason": exc.message},
        )
        return exc

    # -- files ---------------------------------------------------------------

    def open(self, path: str, mode: OpenMode, permissions: int = 0o644) -> OpenFile:
        try:
            with self.jail.locate(path) as loc:
                fd = os.open(
                    loc.name, mode.os_flags(), permissions & PERMISSION_MASK, dir_fd=loc.dir_fd
                )
                vpath = loc.vpath
        except OutsideHome as exc:
            raise self._violation("open", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectory()
            raise PermissionDenied("permission denied: not a regular file")
        return OpenFile(fd, vpath, mode)

    # -- metadata ------------------------------------------------------------

    def stat(self, path: str, *, follow: bool = True) -> os.stat_result:
        try:
            with self.jail.locate(path, follow=follow) as loc:
                return require_exists(loc)
        except OutsideHome as exc:
            raise self._violation("stat", exc) from None

    def setstat(self, path: str, changes: AttrChanges, *, follow: bool = True) -> None:
        try:
            with self.jail.locate(path, follow=follow) as loc:
                st = require_exists(loc)
                changes.check_owner(st)
                if changes.size is not None:
                    self._truncate(loc, changes.size)
                if changes.permissions is not None:
                    if stat.S_ISLNK(st.st_mode):
                        raise PermissionDenied("permission denied: cannot chmod a symlink")
                    self._chmod(loc, changes.permissions & PERMISSION_MASK)
                _set_times(loc.dir_fd, loc.name, changes)
        except OutsideHome as exc:
            raise self._violation("setstat", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    @staticmethod
    def _truncate(loc: Location, size: int) -> None:
        if size < 0:
            raise InvalidArgument()
        fd = os.open(loc.name, os.O_WRONLY | _OPEN_BASE, dir_fd=loc.dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionDenied("permission denied: not a regular file")
            os.ftruncate(fd, size)
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

    def statvfs(self) -> os.statvfs_result:
        try:
            return os.statvfs(self.jail.root_fd)
        except OSError as exc:
            raise _oserror(exc) from None

    # -- directories ---------------------------------------------------------

    def listdir(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        """Yield ``(name, lstat)`` for ``.``, ``..`` and every entry, lazily."""
        try:
            with self.jail.locate(path) as loc:
                fd = os.open(loc.name, os.O_RDONLY | os.O_DIRECTORY | _OPEN_BASE, dir_fd=loc.dir_fd)
                parent = os.stat(loc.dir_fd) if loc.name != "." else None
        except OutsideHome as exc:
            raise self._violation("listdir", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None
        return self._entries(fd, parent)

    @staticmethod
    def _entries(fd: int, parent: os.stat_result | None) -> Iterator[tuple[str, os.stat_result]]:
        try:
            here = os.fstat(fd)
            yield ".", here
            yield "..", parent or here
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        yield entry.name, entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listing
        finally:
            os.close(fd)

    def mkdir(self, path: str, permissions: int = 0o755) -> None:
        try:
            with self.jail.locate(path, follow=False) as loc:
                os.mkdir(loc.name, permissions & PERMISSION_MASK, dir_fd=loc.dir_fd)
        except OutsideHome as exc:
            raise self._violation("mkdir", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    def rmdir(self, path: str) -> None:
        try:
            with self.jail.locate(path, follow=False) as loc:
                if loc.name == ".":
                    raise PermissionDenied("permission denied: cannot remove this directory")
                os.rmdir(loc.name, dir_fd=loc.dir_fd)
        except OutsideHome as exc:
            raise self._violation("rmdir", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    # -- names ---------------------------------------------------------------

    def remove(self, path: str) -> None:
        try:
            with self.jail.locate(path, follow=False) as loc:
                if loc.name == ".":
                    raise IsADirectory()
                os.unlink(loc.name, dir_fd=loc.dir_fd)
        except OutsideHome as exc:
            raise self._violation("remove", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    def rename(self, old: str, new: str) -> None:
        """Rename, replacing an existing target (what WinSCP, lftp and rclone rely on)."""
        try:
            with (
                self.jail.locate(old, follow=False) as src,
                self.jail.locate(new, follow=False) as dst,
            ):
                if "." in (src.name, dst.name):
                    raise PermissionDenied("permission denied: cannot rename this directory")
                require_exists(src)
                os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
        except OutsideHome as exc:
            raise self._violation("rename", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    def realpath(self, path: str) -> str:
        try:
            with self.jail.locate(path) as loc:
                return loc.vpath
        except OutsideHome as exc:
            raise self._violation("realpath", exc) from None

    def readlink(self, path: str) -> str:
        try:
            with self.jail.locate(path, follow=False) as loc:
                require_exists(loc)
                target = os.readlink(loc.name, dir_fd=loc.dir_fd)
                if target.startswith("/") or lexical_parts(loc.parent_parts, target) is None:
                    raise OutsideHome("permission denied: link points outside the home directory")
                return target
        except OutsideHome as exc:
            raise self._violation("readlink", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    def symlink(self, target: str, linkpath: str) -> None:
        try:
            with self.jail.locate(linkpath, follow=False) as loc:
                if loc.name == ".":
                    raise PermissionDenied()
                disk_target = link_target_for_disk(loc.parent_parts, target)
                os.symlink(disk_target, loc.name, dir_fd=loc.dir_fd)
        except OutsideHome as exc:
            raise self._violation("symlink", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None

    def link(self, old: str, new: str) -> None:
        try:
            with (
                self.jail.locate(old, follow=False) as src,
                self.jail.locate(new, follow=False) as dst,
            ):
                if "." in (src.name, dst.name):
                    raise PermissionDenied()
                os.link(
                    src.name,
                    dst.name,
                    src_dir_fd=src.dir_fd,
                    dst_dir_fd=dst.dir_fd,
                    follow_symlinks=False,
                )
        except OutsideHome as exc:
            raise self._violation("link", exc) from None
        except OSError as exc:
            raise _oserror(exc) from None
