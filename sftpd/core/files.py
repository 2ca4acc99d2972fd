"""Open files and attribute changes, protocol-neutral."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sftpd.core.errors import PermissionDenied, SftpdError, from_oserror
from sftpd.core.quota import Inode, QuotaLedger, note_shrink, noted_shrink
from sftpd.core.uploads import mark_uploader

#: Bytes per step of a server-side copy (copy_file_range or pread/pwrite), in a worker thread.
COPY_STEP = 1024 * 1024
#: Permission bits a client may set: never setuid, setgid or sticky.
PERMISSION_MASK = 0o777
OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class OpenMode:
    """What a client asked for when opening a file."""

    read: bool = False
    write: bool = False
    create: bool = False
    truncate: bool = False
    exclusive: bool = False

    @property
    def accessing(self) -> OpenMode:
        """With neither access flag, a handle reads: OpenSSH's sftp-server opens it
        ``O_RDONLY``, and a handle that can fstat must have been permitted to read."""
        if self.read or self.write:
            return self
        return OpenMode(True, False, self.create, self.truncate, self.exclusive)

    def os_flags(self) -> int:
        """Access flags only: creation and truncation are done step by step by the session."""
        if self.read and self.write:
            return os.O_RDWR | OPEN_BASE
        if self.write:
            return os.O_WRONLY | OPEN_BASE
        return os.O_RDONLY | OPEN_BASE


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


def copy_range(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> int:
    """Copy ``length`` bytes between descriptors; returns how many were copied.

    Loops until ``length`` is done or the source really ends: a short step is
    never taken for the end of the file. Blocking: call it in a worker thread.
    """
    done = 0
    kernel = hasattr(os, "copy_file_range")
    while done < length:
        step = min(COPY_STEP, length - done)
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(src, dst, step, src_offset + done, dst_offset + done)
            except OSError:  # EXDEV, ENOSYS, EINVAL on some filesystems: plain copy
                kernel = False
        if not kernel:
            data = os.pread(src, step, src_offset + done)
            view = memoryview(data)
            while view:
                w = os.pwrite(dst, view, dst_offset + done + n)
                view = view[w:]
                n += w
        if n == 0:
            break  # the source ended early (it shrank meanwhile)
        done += n
    return done


def set_times(fd: int, name: str | None, changes: AttrChanges) -> None:
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


async def resize_fd(ledger: QuotaLedger, inode: Inode, fd: int, size: int) -> None:
    """Truncate or extend an open file, reserving before it grows."""
    if size < 0:
        raise PermissionDenied("invalid size")
    if size > inode.counted:
        await ledger.resize(inode, size)
        os.ftruncate(fd, size)
    else:
        os.ftruncate(fd, size)
        counted = inode.counted
        await ledger.resize(inode, size)
        inode.noted += note_shrink(fd, counted - inode.counted)  # for writers elsewhere


class OpenFile:
    """An open regular file. Writes honour the client's offsets, never O_APPEND.

    A file open for writing holds an :class:`Inode` record in the user's ledger:
    every write that extends the file reserves the growth before it hits the disk.
    """

    def __init__(
        self,
        fd: int,
        vpath: str,
        mode: OpenMode,
        ledger: QuotaLedger | None = None,
        inode: Inode | None = None,
        finish: Callable[[OpenFile, bool], Awaitable[None]] | None = None,
        created: bool = False,
        writer: str = "",
    ) -> None:
        self.fd = fd
        self.writer = writer  # an in-progress name's: noted as its uploader if it writes
        self.created = created  # this open made the file: its attributes are the user's own
        self.vpath = vpath
        self.mode = mode
        self.closed = False
        self._ledger = ledger
        self._inode = inode
        self._finish = finish  # after the close: an atomic upload's rename, the event
        self.opened_at = time.monotonic()
        self.moved = 0  # bytes read or written through this handle
        self.failed = False  # a write was refused (quota) or failed: not a complete upload
        self.final_size = 0

    @property
    def ledger(self) -> QuotaLedger | None:
        """The ledger counting this file (writers only)."""
        return self._ledger

    def read(self, offset: int, size: int) -> bytes:
        if not self.mode.read:
            raise PermissionDenied("permission denied: file not open for reading")
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as exc:
            raise from_oserror(exc) from None
        self.moved += len(data)
        return data

    async def write(self, offset: int, data: bytes) -> int:
        if not self.mode.write or self._ledger is None or self._inode is None:
            raise PermissionDenied("permission denied: file not open for writing")
        end = offset + len(data)
        if end > self._inode.counted:
            try:
                await self._ledger.resize(self._inode, end)
            except SftpdError:
                self.failed = True
                raise
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as exc:
            self.failed = True
            await self._ledger.resize(self._inode, os.fstat(self.fd).st_size)
            raise from_oserror(exc) from None
        self.moved += done
        return done

    async def copy_from(self, src: OpenFile, src_offset: int, length: int, offset: int) -> int:
        """Server-side copy (the ``copy-data`` extension): all of it or none of it.

        ``length`` 0 means to the end of ``src``. The growth is reserved before
        any byte is written, so a copy that does not fit fails with the quota
        message and leaves this file as it was. The copy runs in a worker
        thread on duplicated descriptors, so a session closing meanwhile cannot
        hand a reused descriptor number to it.
        """
        if not src.mode.read:
            raise PermissionDenied("permission denied: source not open for reading")
        if not self.mode.write or self._ledger is None or self._inode is None:
            raise PermissionDenied("permission denied: destination not open for writing")
        sst, dst = src.stat(), self.stat()
        if (sst.st_dev, sst.st_ino) == (dst.st_dev, dst.st_ino):
            raise PermissionDenied("cannot copy a file onto itself")
        if src_offset < 0 or offset < 0 or length < 0:
            raise PermissionDenied("invalid offset or length")
        count = max(0, sst.st_size - src_offset)
        if length:
            count = min(count, length)
        if count == 0:
            return 0
        if offset + count > self._inode.counted:
            await self._ledger.resize(self._inode, offset + count)
        fds: list[int] = []
        copied = 0
        try:
            fds = [os.dup(src.fd), os.dup(self.fd)]
            copied = await asyncio.to_thread(copy_range, fds[0], fds[1], src_offset, offset, count)
        except OSError as exc:
            raise from_oserror(exc) from None
        finally:
            for fd in fds:
                os.close(fd)
            if copied != count:  # failed or the source shrank: count what is really there
                await self._ledger.resize(self._inode, os.fstat(self.fd).st_size)
        await self._ledger.flush_or_defer()
        self.moved += copied
        return copied

    def stat(self) -> os.stat_result:
        try:
            return os.fstat(self.fd)
        except OSError as exc:
            raise from_oserror(exc) from None

    def seek(self, offset: int, whence: int) -> int:
        """lseek for SEEK_DATA/SEEK_HOLE: asyncssh's ``ranges@asyncssh.com`` (what its
        client's ``get`` uses to skip holes) calls it. Raises OSError as lseek does."""
        return os.lseek(self.fd, offset, whence)

    async def setstat(self, changes: AttrChanges) -> None:
        changes.check_owner(self.stat())
        try:
            if changes.size is not None:
                if self._ledger is None or self._inode is None:
                    raise PermissionDenied("permission denied: file not open for writing")
                await resize_fd(self._ledger, self._inode, self.fd, changes.size)
                await self._ledger.flush_or_defer()
            if changes.permissions is not None:
                os.fchmod(self.fd, changes.permissions & PERMISSION_MASK)
            set_times(self.fd, None, changes)
        except OSError as exc:
            raise from_oserror(exc) from None

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise from_oserror(exc) from None

    async def close(self, completed: bool = True) -> None:
        """Close and settle: the ledger learns the file's true final size. ``completed`` is
        False when the session ended without the client closing the file (a broken upload)."""
        if self.closed:
            return
        self.closed = True
        try:
            st = os.fstat(self.fd)
            noted = noted_shrink(self.fd) if self._inode is not None else None
            if self.writer and self.moved:
                mark_uploader(self.fd, self.writer)
        finally:
            os.close(self.fd)
        self.final_size = st.st_size
        if self._ledger is not None and self._inode is not None:
            # With a finish to come, it flushes: its event rides in the same store write.
            await self._ledger.close_inode(self._inode, st, noted, flush=self._finish is None)
        if self._finish is not None:
            await self._finish(self, completed)
