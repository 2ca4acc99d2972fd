"""SFTP adapter: asyncssh requests -> ``core.Session`` calls; domain errors -> SFTP status.

Two classes:

* :class:`SftpdServer`, the documented ``asyncssh.SFTPServer`` subclass that SFTP
  and SCP both go through. It holds no policy: it decodes paths and flags, calls
  the session and maps errors in :data:`STATUS_FOR`.
* :class:`SftpdHandler`, a subclass of asyncssh's (private) ``SFTPServerHandler``
  for what the public hooks cannot reach: OpenSSH's advertised limits,
  ``expand-path@openssh.com`` and ``home-directory``, lenient WRITE parsing for
  rclone, an exit status when the session ends, and idle tracking. asyncssh is
  pinned to 2.24.x for this; docs/asyncssh.md says what each override is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from sftpd.core import errors
from sftpd.core.checksum import ALGORITHMS, MIN_BLOCK, hash_range, hash_whole
from sftpd.core.files import AttrChanges, OpenFile, OpenMode
from sftpd.core.limits import Pacer
from sftpd.core.session import Session
from sftpd.events import Event
from sftpd.logs import audit
from sftpd.ssh.compat import (
    FXP_EXTENDED_REPLY,
    FXP_NAME,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_SYMLINK,
    FXP_WRITE,
    SFTPHandler,
    SFTPLimits,
    SFTPServerHandler,
    SSHPacket,
    String,
    send_whole,
)

log = logging.getLogger("sftpd.sftp")

T = TypeVar("T")

#: OpenSSH's own limits: clients size their requests from these.
MAX_PACKET_LEN = 256 * 1024
MAX_READ_LEN = MAX_PACKET_LEN - 1024
MAX_WRITE_LEN = MAX_PACKET_LEN - 1024
MAX_OPEN_HANDLES = 1024
CHECK_FILE_ALGS = b"md5,sha1,sha256,sha512"
QUOTA_LINE_INTERVAL = 2.0  # seconds between two "quota exceeded" lines on stderr
#: SSH version strings of clients that send SYMLINK's paths in the draft's order (link,
#: then target) to a server that is not OpenSSH: asyncssh (xfer), libssh ("libssh_0.x",
#: older "libssh-0.x"; not libssh2) and WinSCP unless told otherwise. Everyone else sends
#: OpenSSH's order (SftpdHandler._process_symlink_as_sent).
DRAFT_SYMLINK_CLIENTS = ("AsyncSSH", "libssh_", "libssh-", "WinSCP")

STATUS_FOR: dict[type[errors.SftpdError], Callable[[str], asyncssh.SFTPError]] = {
    errors.NotFound: asyncssh.SFTPNoSuchFile,
    errors.PermissionDenied: asyncssh.SFTPPermissionDenied,
    errors.OutsideHome: asyncssh.SFTPPermissionDenied,
    errors.AlreadyExists: asyncssh.SFTPFileAlreadyExists,
    errors.NotADirectory: asyncssh.SFTPNotADirectory,
    errors.IsADirectory: asyncssh.SFTPFileIsADirectory,
    errors.DirectoryNotEmpty: asyncssh.SFTPDirNotEmpty,
    errors.InvalidName: asyncssh.SFTPInvalidFilename,
    errors.LinkLoop: asyncssh.SFTPLinkLoop,
    errors.InvalidArgument: asyncssh.SFTPInvalidParameter,
    errors.NoSpace: asyncssh.SFTPNoSpaceOnFilesystem,
    errors.QuotaExceeded: asyncssh.SFTPQuotaExceeded,
    errors.Unsupported: asyncssh.SFTPOpUnsupported,
}


def to_sftp_error(exc: errors.SftpdError) -> asyncssh.SFTPError:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls](exc.message)
    return asyncssh.SFTPFailure(exc.message)


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except errors.SftpdError as exc:
        raise to_sftp_error(exc) from None


async def _acall(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        return await fn(*args, **kwargs)
    except errors.SftpdError as exc:
        raise to_sftp_error(exc) from None


def attrs_of(st: os.stat_result) -> asyncssh.SFTPAttrs:
    """SFTP attributes of a stat result. Times before 1970 (a file put there by other
    means, or by an SCP T line of old) are sent as 0: the protocol's times are unsigned,
    and one such inode broke every listing of its directory."""
    attrs = asyncssh.SFTPAttrs.from_local(st)
    if (attrs.atime or 0) < 0:
        attrs.atime, attrs.atime_ns = 0, 0
    if (attrs.mtime or 0) < 0:
        attrs.mtime, attrs.mtime_ns = 0, 0
    return attrs


def _path(raw: bytes) -> str:
    """Decode a wire path once, at the edge (UTF-8, undecodable bytes kept)."""
    return os.fsdecode(raw)


def _changes(attrs: asyncssh.SFTPAttrs) -> AttrChanges:
    def ns(sec: int | None, nsec: int | None) -> int | None:
        return None if sec is None else sec * 1_000_000_000 + (nsec or 0)

    return AttrChanges(
        size=attrs.size,
        permissions=attrs.permissions,
        atime_ns=ns(attrs.atime, attrs.atime_ns),
        mtime_ns=ns(attrs.mtime, attrs.mtime_ns),
        uid=attrs.uid,
        gid=attrs.gid,
    )


def _open_mode(pflags: int) -> OpenMode:
    return OpenMode(
        read=bool(pflags & asyncssh.FXF_READ),
        write=bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND)),
        create=bool(pflags & asyncssh.FXF_CREAT),
        truncate=bool(pflags & asyncssh.FXF_TRUNC),
        exclusive=bool(pflags & asyncssh.FXF_EXCL),
    )


@dataclass(frozen=True)
class CheckFileReply:
    """The check-file reply body: extension name, algorithm used, raw digests."""

    algorithm: str
    digests: bytes

    def encode(self, version: int) -> bytes:
        return String(b"check-file") + String(self.algorithm.encode()) + self.digests


class SftpdServer(asyncssh.SFTPServer):
    """The SFTP (and SCP) view of one ``Session``."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel,  # type: ignore[type-arg]
        session: Session,
        on_activity: Callable[[], None] = lambda: None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(chan)
        self.session = session
        self.on_activity = on_activity
        self._on_exit = on_exit
        self._files: set[OpenFile] = set()
        self._quota_told_at = -QUOTA_LINE_INTERVAL

    def format_user(self, uid: int | None) -> str:
        return self.session.user

    def format_group(self, gid: int | None) -> str:
        return self.session.user

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> OpenFile:
        if len(self._files) >= MAX_OPEN_HANDLES:
            raise asyncssh.SFTPFailure(f"too many open files (limit {MAX_OPEN_HANDLES})")
        perms = attrs.permissions if attrs.permissions is not None else 0o644
        f = await self._quota_guard(self.session.open, _path(path), _open_mode(pflags), perms)
        self._files.add(f)
        return f

    async def open_whole(self, path: bytes, size: int, permissions: int) -> OpenFile:
        """For SCP: an upload of ``size`` bytes announced up front (``Session.open``)."""
        if len(self._files) >= MAX_OPEN_HANDLES:
            raise asyncssh.SFTPFailure(f"too many open files (limit {MAX_OPEN_HANDLES})")
        upload = OpenMode(write=True, create=True, truncate=True)
        f = await self._quota_guard(self.session.open, _path(path), upload, permissions,
                                    size=size)  # fmt: skip
        self._files.add(f)
        return f

    async def close(self, file_obj: object, completed: bool = True) -> None:
        """A client's CLOSE completes an upload; SCP says when its file is complete. A
        closing channel means the upload broke off, whatever was said."""
        assert isinstance(file_obj, OpenFile)
        self._files.discard(file_obj)
        await _acall(file_obj.close, completed and not self.channel.is_closing())

    async def _quota_guard(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn``; a QuotaExceeded also goes to the channel's stderr as one human line.

        OpenSSH's sftp prints only "Failure" for a failed write, but shows stderr. SCP
        says it in its own error line, so not on stderr too.
        """
        try:
            return await fn(*args, **kwargs)
        except errors.QuotaExceeded as exc:
            now = time.monotonic()
            if now - self._quota_told_at > QUOTA_LINE_INTERVAL:  # pipelined writes fail together
                self._quota_told_at = now
                if self.session.protocol != "scp":
                    self.channel.write_stderr(f"sftpd: {exc.message}\n".encode())
                session = self.session  # one event per burst, like the line
                session.emit(Event("quota-exceeded", session.user, session.addr,
                                   session.protocol, reason=exc.message))  # fmt: skip
            audit(
                "quota exceeded",
                event="quota",
                level=logging.WARNING,
                user=self.session.user,
                addr=self.session.addr,
                reason=exc.message,
            )
            raise to_sftp_error(exc) from None
        except errors.SftpdError as exc:
            raise to_sftp_error(exc) from None

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        """Unlimited reads stay synchronous (the hot path); limited ones wait their turn."""
        assert isinstance(file_obj, OpenFile)
        self.on_activity()
        data = _call(file_obj.read, offset, min(size, MAX_READ_LEN))
        pacer = self.session.access.download
        return self._paced(pacer, data) if pacer.rate else data

    @staticmethod
    async def _paced(pacer: Pacer, data: bytes) -> bytes:
        await pacer.take(len(data))
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, OpenFile)
        self.on_activity()
        await self.session.access.upload.take(len(data))
        return await self._quota_guard(file_obj.write, offset, data)

    async def copy_data(
        self, src: object, src_offset: int, length: int, dst: object, dst_offset: int
    ) -> None:
        """copy-data: the whole range or nothing, counted like any write."""
        if not isinstance(src, OpenFile) or not isinstance(dst, OpenFile):
            raise asyncssh.SFTPInvalidHandle("Invalid file handle")
        self.on_activity()
        await self._quota_guard(dst.copy_from, src, src_offset, length, dst_offset)

    def stat_result(self, path: bytes, *, follow: bool = True) -> os.stat_result:
        """For SCP: stat (or lstat) as the session sees it, errors as SFTP errors."""
        return _call(self.session.stat, _path(path), follow=follow)

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return attrs_of(_call(self.session.stat, _path(path), follow=False))

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return attrs_of(_call(self.session.stat, _path(path)))

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        assert isinstance(file_obj, OpenFile)
        return attrs_of(_call(self.session.fstat, file_obj))

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self._quota_guard(self.session.setstat, _path(path), _changes(attrs))

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await _acall(self.session.setstat, _path(path), _changes(attrs), follow=False)

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        assert isinstance(file_obj, OpenFile)
        await self._quota_guard(self.session.fsetstat, file_obj, _changes(attrs))

    async def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        await asyncio.to_thread(_call, file_obj.sync)

    async def statvfs(self, path: bytes) -> os.statvfs_result:
        _call(self.session.stat, _path(path))
        return await _acall(self.session.statvfs, _path(path))

    async def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        assert isinstance(file_obj, OpenFile)
        return await _acall(self.session.statvfs, file_obj.vpath)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        entries = _call(self.session.listdir, _path(path))
        while True:
            try:
                name, st = _call(next, entries)
            except StopIteration:
                return
            yield asyncssh.SFTPName(os.fsencode(name), attrs=attrs_of(st))

    async def remove(self, path: bytes) -> None:
        await _acall(self.session.remove, _path(path))

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        perms = attrs.permissions if attrs.permissions is not None else 0o755
        await _acall(self.session.mkdir, _path(path), perms)

    async def rmdir(self, path: bytes) -> None:
        await _acall(self.session.rmdir, _path(path))

    def realpath(self, path: bytes) -> bytes:
        return os.fsencode(_call(self.session.realpath, _path(path)))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await _acall(self.session.rename, _path(oldpath), _path(newpath))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await _acall(self.session.rename, _path(oldpath), _path(newpath))

    def readlink(self, path: bytes) -> bytes:
        return os.fsencode(_call(self.session.readlink, _path(path)))

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        _call(self.session.symlink, _path(oldpath), _path(newpath))

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        await _acall(self.session.link, _path(oldpath), _path(newpath))

    async def exit(self) -> None:
        """Close every handle the client left open (a dropped upload settles here)."""
        on_exit, self._on_exit = self._on_exit, lambda: None  # once, though called twice
        on_exit()
        files, self._files = list(self._files), set()
        for f in files:
            try:
                await f.close(completed=False)
            except errors.SftpdError as exc:
                log.warning("closing a file failed", extra={"user": self.session.user,
                            "error": exc.message})  # fmt: skip
        await self.session.aclose()

    # -- OpenSSH path extensions (called from SftpdHandler) --------------------

    def expand_path(self, path: bytes) -> bytes:
        """``~``, ``~/x`` and ``~USER/x`` (own name only) are the home; then realpath."""
        text = _path(path)
        if text.startswith("~"):
            head, _, rest = text[1:].partition("/")
            if head not in ("", self.session.user):
                raise asyncssh.SFTPNoSuchFile("no such user")
            text = "/" + rest
        return self.realpath(os.fsencode(text))

    def home_directory(self, username: bytes) -> bytes:
        if username not in (b"", self.session.user.encode()):
            raise asyncssh.SFTPNoSuchFile("no such user")
        return b"/"


class SftpdHandler(SFTPServerHandler):
    """asyncssh's SFTP server protocol handler with OpenSSH's manners.

    Every request counts as activity for the connection's idle timer.
    """

    _extensions = [  # noqa: RUF012
        *SFTPServerHandler._extensions,
        (b"expand-path@openssh.com", b"1"),
        (b"home-directory", b"1"),
        (b"check-file", CHECK_FILE_ALGS),
        (b"check-file-name", CHECK_FILE_ALGS),
        (b"check-file-handle", CHECK_FILE_ALGS),
    ]
    _return_types: dict[object, int] = {  # noqa: RUF012
        **SFTPHandler._return_types,
        b"expand-path@openssh.com": FXP_NAME,
        b"home-directory": FXP_NAME,
        b"check-file": FXP_EXTENDED_REPLY,
        b"check-file-name": FXP_EXTENDED_REPLY,
        b"check-file-handle": FXP_EXTENDED_REPLY,
    }

    def __init__(
        self,
        server: SftpdServer,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
        sftp_version: int,
    ) -> None:
        super().__init__(server, reader, writer, sftp_version)
        self._sftpd = server

    async def _process_packet(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        """One request, once the replies before it have left: a client that stops taking
        replies (its window closed) stops this side reading requests, as OpenSSH's
        sftp-server does, instead of making it queue a 256 KiB reply per 33-byte READ."""
        if self._writer is not None:
            await self._writer.drain()
        self._sftpd.on_activity()
        await super()._process_packet(pkttype, pktid, packet)

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        """A reply goes onto the channel with no copy of its data (compat 11) when the
        channel can take it whole now; otherwise, or when packets are logged, asyncssh's
        way."""
        if not send_whole(self, pkttype, args):
            super().send_packet(pkttype, pktid, *args)

    async def _cleanup(self, exc: Exception | None) -> None:
        # OpenSSH's scp (SFTP mode) exits 1 unless the session ends with a status.
        writer = self._writer
        if writer is not None:
            chan = writer.channel
            if not chan.is_closing():
                with contextlib.suppress(OSError):
                    chan.exit(0)  # type: ignore[attr-defined]
        await super()._cleanup(exc)

    async def _process_limits(self, packet: SSHPacket) -> SFTPLimits:
        packet.check_end()
        return SFTPLimits(MAX_PACKET_LEN, MAX_READ_LEN, MAX_WRITE_LEN, MAX_OPEN_HANDLES)

    def _check_handles(self) -> None:
        """One limit for file and directory handles together: each holds a descriptor."""
        if len(self._file_handles) + len(self._dir_handles) >= MAX_OPEN_HANDLES:
            raise asyncssh.SFTPFailure(f"too many open handles (limit {MAX_OPEN_HANDLES})")

    async def _process_open_limited(self, packet: SSHPacket) -> bytes:
        self._check_handles()
        return await SFTPServerHandler._process_open(self, packet)

    async def _process_opendir_limited(self, packet: SSHPacket) -> bytes:
        self._check_handles()
        return await SFTPServerHandler._process_opendir(self, packet)

    async def _process_write_lenient(self, packet: SSHPacket) -> int:
        """WRITE without the trailing-bytes check: rclone 1.60 pads its last write.

        OpenSSH's sftp-server ignores such padding too; the data string itself
        is length-prefixed, so nothing after it can be mistaken for data.
        """
        handle = packet.get_string()
        offset = packet.get_uint64()
        data = packet.get_string()
        file_obj = self._file_handles.get(handle)
        if not file_obj:
            raise asyncssh.SFTPInvalidHandle("Invalid file handle")
        return await self._sftpd.write(file_obj, offset, data)

    async def _process_symlink_as_sent(self, packet: SSHPacket) -> None:
        """SYMLINK's two paths in the order the client really sends them.

        The draft says link path, then target; OpenSSH sends target, then link path, and
        so do paramiko, libssh2 (curl), Go's pkg/sftp, JSch, SSH.NET, MINA, lftp and sshfs
        (PuTTY's psftp and FileZilla send no SYMLINK).
        asyncssh's server took the draft's order from every client whose version does not
        say OpenSSH or paramiko, so curl's ``-Q "symlink t.txt ln.txt"`` made
        ``t.txt -> ln.txt``. Only clients known to send the draft's order to a server that
        is not OpenSSH get it: :data:`DRAFT_SYMLINK_CLIENTS`.
        """
        first = packet.get_string()
        second = packet.get_string()
        packet.check_end()
        reader = self._reader
        client = str(reader.get_extra_info("client_version", "")) if reader else ""
        draft = any(name in client for name in DRAFT_SYMLINK_CLIENTS)
        target, link = (second, first) if draft else (first, second)
        self._sftpd.symlink(target, link)

    async def _process_copy_data(self, packet: SSHPacket) -> None:
        """copy-data (draft-ietf-secsh-filexfer-extensions-00 section 7), served whole.

        asyncssh's own loop takes the first short read for the end of the file,
        and reads here are clamped to MAX_READ_LEN: it silently truncated copies.
        """
        src = self._file_handles.get(packet.get_string())
        src_offset = packet.get_uint64()
        length = packet.get_uint64()
        dst = self._file_handles.get(packet.get_string())
        dst_offset = packet.get_uint64()
        packet.check_end()
        await self._sftpd.copy_data(src, src_offset, length, dst, dst_offset)

    async def _process_expand_path(self, packet: SSHPacket) -> tuple[list[asyncssh.SFTPName], bool]:
        path = packet.get_string()
        packet.check_end()
        return [asyncssh.SFTPName(self._sftpd.expand_path(path))], False

    async def _process_home_directory(
        self, packet: SSHPacket
    ) -> tuple[list[asyncssh.SFTPName], bool]:
        username = packet.get_string()
        packet.check_end()
        return [asyncssh.SFTPName(self._sftpd.home_directory(username))], False

    async def _check_file(self, packet: SSHPacket, by_name: bool) -> CheckFileReply:
        """check-file (draft-ietf-secsh-filexfer-extensions-00 section 3): hash a range.

        paramiko's ``SFTPFile.check()`` sends it as plain "check-file" with a handle.
        """
        target = packet.get_string()
        wanted = packet.get_string().decode("ascii", "replace").split(",")
        offset = packet.get_uint64()
        length = packet.get_uint64()
        block = packet.get_uint32()
        packet.check_end()
        algorithm = next((a for a in wanted if a in ALGORITHMS), None)
        if algorithm is None:
            raise asyncssh.SFTPOpUnsupported("no supported hash algorithm")
        if block and block < MIN_BLOCK:
            raise asyncssh.SFTPInvalidParameter(f"block size must be 0 or >= {MIN_BLOCK}")
        if by_name:
            f = await _acall(self._sftpd.session.open, _path(target), OpenMode(read=True))
        else:
            handle_obj = self._file_handles.get(target)
            if not isinstance(handle_obj, OpenFile):
                raise asyncssh.SFTPInvalidHandle("Invalid file handle")
            if not handle_obj.mode.read:
                raise asyncssh.SFTPPermissionDenied("file not open for reading")
            f = handle_obj
        try:
            if offset == length == block == 0:
                digests = await asyncio.to_thread(hash_whole, f.fd, algorithm)
            else:
                digests = await asyncio.to_thread(
                    hash_range, f.fd, algorithm, offset, length, block
                )
        finally:
            if by_name:
                await f.close()
        return CheckFileReply(algorithm, digests)

    async def _process_check_file_name(self, packet: SSHPacket) -> CheckFileReply:
        return await self._check_file(packet, by_name=True)

    async def _process_check_file_handle(self, packet: SSHPacket) -> CheckFileReply:
        return await self._check_file(packet, by_name=False)

    _packet_handlers: dict[int | bytes, Any] = {  # noqa: RUF012
        **SFTPServerHandler._packet_handlers,
        FXP_OPEN: _process_open_limited,
        FXP_OPENDIR: _process_opendir_limited,
        FXP_WRITE: _process_write_lenient,
        FXP_SYMLINK: _process_symlink_as_sent,
        b"copy-data": _process_copy_data,
        b"limits@openssh.com": _process_limits,
        b"expand-path@openssh.com": _process_expand_path,
        b"home-directory": _process_home_directory,
        b"check-file": _process_check_file_handle,
        b"check-file-name": _process_check_file_name,
        b"check-file-handle": _process_check_file_handle,
    }


__all__ = ["MAX_READ_LEN", "MAX_WRITE_LEN", "SftpdHandler", "SftpdServer", "to_sftp_error"]
