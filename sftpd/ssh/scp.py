"""The server side of SCP: ``scp -t`` receives files and ``scp -f`` sends them, as OpenSSH's
``scp -O`` (the legacy protocol) and libssh2 (curl's ``scp://``) run it.

Ours rather than asyncssh's server, for what clients rely on:

* a sink knows a file's size from its ``C`` line and refuses one that cannot fit right
  then, before the data: libssh2 reads only the answer to that line, so a refusal after
  the data never reached curl, which exited 0 with a truncated file;
* a file received goes to a temporary name and replaces the target only when complete
  (``Session.open`` with ``size``): a refused or broken copy leaves nothing partial, and
  a file it was to replace stays as it was;
* the exit status is 1 after any error and 0 only when everything was copied, as with
  OpenSSH's scp.

The protocol: each side answers each line with one byte, 0 (ok), or 1 (error, go on) or
2 (fatal) followed by a message line::

    T<mtime> 0 <atime> 0     times of the next file or directory (-p)
    C<mode> <size> <name>    a file: <size> bytes follow, then the source's status byte
    D<mode> 0 <name>         a directory (-r), its entries, then E
    E                        end of the current directory
"""

from __future__ import annotations

import asyncio
import fnmatch
import getopt
import inspect
import logging
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass

import asyncssh

from sftpd.core.files import OpenFile
from sftpd.ssh.compat import SSHReader, SSHWriter
from sftpd.ssh.sftp import SftpdServer

BLOCK = 256 * 1024  # bytes of file data per step
MAX_SIZE = 1 << 62  # a larger announced size is refused (the store counts in int64)
MAX_DEPTH = 128  # directory levels one -r copy may nest, either way
MAX_TIME = 1 << 40  # seconds; a T line outside [0, MAX_TIME) is a protocol error
MAX_GLOB = 10_000  # names one pattern of ``scp -f`` may expand to
GLOB_CHARS = frozenset("*?[")

log = logging.getLogger("sftpd.scp")


class ScpError(Exception):
    """An error line from the peer, or a broken exchange (``fatal``)."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal


@dataclass(frozen=True)
class ScpArgs:
    """What ``scp -t|-f [-r] [-p] [-d] [--] PATH...`` asks for."""

    source: bool
    paths: tuple[str, ...]
    recurse: bool = False
    preserve: bool = False
    must_be_dir: bool = False


def parse(command: str) -> ScpArgs:
    """Parse the command OpenSSH's and libssh2's clients send; ValueError if it is not one."""
    try:
        opts, paths = getopt.getopt(shlex.split(command)[1:], "dfprtv")
    except getopt.GetoptError as exc:
        raise ValueError(str(exc)) from None
    flags = {flag for flag, _ in opts}
    if ("-f" in flags) == ("-t" in flags):
        raise ValueError("exactly one of -f and -t is needed")
    if not paths or ("-t" in flags and len(paths) != 1):
        raise ValueError("one target path is needed" if "-t" in flags else "no path given")
    return ScpArgs("-f" in flags, tuple(_home_relative(p) for p in paths),
                   "-r" in flags, "-p" in flags, "-d" in flags)  # fmt: skip


def _home_relative(path: str) -> str:
    """``~`` and ``~/x``, as a login shell would have expanded them, are the home."""
    return "/" + path[2:] if path.startswith("~/") else "/" if path == "~" else path


class Peer:
    """The client's end of the exchange: lines, status bytes and file data."""

    def __init__(self, reader: SSHReader[bytes], writer: SSHWriter[bytes]) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes | None:
        """The next line without its newline; None when the client has finished."""
        try:
            return (await self.reader.readuntil(b"\n"))[:-1]
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ScpError("connection lost", fatal=True) from None
            return None

    async def response(self, *, eof_ok: bool = False) -> None:
        """Wait for the client's answer: return on 0 (or, with ``eof_ok``, on the end of
        its data), raise ScpError on an error."""
        try:
            code = await self.reader.readexactly(1)
        except asyncio.IncompleteReadError:
            if eof_ok:
                return
            raise ScpError("connection lost", fatal=True) from None
        if code == b"\0":
            return
        if code in (b"\1", b"\2"):
            text = (await self.line() or b"").decode("utf-8", "replace")
            raise ScpError(text, fatal=code == b"\2")
        raise ScpError("protocol error: unexpected response", fatal=True)

    async def data(self, n: int) -> bytes:
        return await self.reader.read(n)

    def ok(self) -> None:
        self.writer.write(b"\0")

    def error(self, message: str, *, fatal: bool = False) -> None:
        text = message.replace("\n", " ").encode("utf-8", "replace")
        self.writer.write((b"\2" if fatal else b"\1") + b"scp: " + text + b"\n")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class Transfer:
    """What the sink and the source share: the session, the peer and the error count."""

    def __init__(self, server: SftpdServer, peer: Peer, args: ScpArgs) -> None:
        self.server = server
        self.peer = peer
        self.args = args
        self.errors = 0

    def fail(self, path: str, reason: str, *, fatal: bool = False) -> None:
        """Tell the client what went wrong with ``path``; the exit status will be 1."""
        self.errors += 1
        self.peer.error(f"{path}: {reason}" if path else reason, fatal=fatal)

    def is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.server.stat_result(os.fsencode(path)).st_mode)
        except asyncssh.SFTPError:
            return False

    async def set_times(self, path: str, times: tuple[int, int] | None) -> None:
        if times is not None:
            attrs = asyncssh.SFTPAttrs(atime=times[1], mtime=times[0])
            await self.server.setstat(os.fsencode(path), attrs)


class Sink(Transfer):
    """``scp -t TARGET``: receive files (and with -r directories) into TARGET."""

    async def run(self) -> None:
        target = self.args.paths[0]
        if self.args.must_be_dir and not self.is_dir(target):
            self.fail(target, "not a directory", fatal=True)
            return
        self.peer.ok()
        await self.receive(target, depth=0)

    async def receive(self, target: str, depth: int) -> None:
        """Lines until the client ends (or, in a directory, until its E)."""
        times: tuple[int, int] | None = None
        while (line := await self.peer.line()) is not None:
            kind, rest = line[:1], line[1:].decode("utf-8", "surrogateescape")
            if kind in (b"\1", b"\2"):  # the source could not read something: it says so
                self.errors += 1
                if kind == b"\2":
                    return
            elif kind == b"E":
                self.peer.ok()
                if depth:
                    return
            elif kind == b"T":
                times = _times(rest)
                self.peer.ok()
            elif kind in (b"C", b"D"):
                mode, size, name = _entry(rest)
                path = posixpath.join(target, name) if self.is_dir(target) else target
                if kind == b"D":
                    await self.directory(path, mode, times, depth)
                else:
                    await self.file(path, mode, size, times)
                times = None
            else:
                raise ScpError("protocol error: unexpected message", fatal=True)

    async def directory(
        self, path: str, mode: int, times: tuple[int, int] | None, depth: int
    ) -> None:
        if not self.args.recurse:
            raise ScpError("received a directory without -r", fatal=True)
        try:
            if not self.is_dir(path):
                await self.server.mkdir(os.fsencode(path), asyncssh.SFTPAttrs(permissions=mode))
        except asyncssh.SFTPError as exc:
            self.fail(path, exc.reason)  # the source skips what the directory holds
            return
        if depth + 1 >= MAX_DEPTH:
            raise ScpError(f"{path}: directories nested deeper than {MAX_DEPTH}", fatal=True)
        self.peer.ok()
        await self.receive(path, depth + 1)
        if self.args.preserve:
            await self._try(self.set_times(path, times), path, tell=True)

    async def file(self, path: str, mode: int, size: int, times: tuple[int, int] | None) -> None:
        if size > MAX_SIZE:
            self.fail(path, "file too large")
            return
        try:
            f = await self.server.open_whole(os.fsencode(path), size, mode)
        except asyncssh.SFTPError as exc:
            self.fail(path, exc.reason)  # before the data: the source does not send it
            return
        self.peer.ok()
        refused = ""
        try:
            refused = await self._write(f, size)
            # The source's status byte: it read the whole file. libssh2 (curl) sends none
            # and ends its data there; every byte announced arrived, so the file is whole.
            await self.peer.response(eof_ok=True)
        except BaseException as exc:
            await self._try(self.server.close(f, completed=False), path)
            if isinstance(exc, ScpError) and not exc.fatal:
                self.errors += 1  # the source's own error: it told its user
                return
            raise
        if refused:
            await self._try(self.server.close(f, completed=False), path)
            self.fail(path, refused)
            return
        if await self._try(self.server.close(f), path, tell=True) and (
            not self.args.preserve or await self._try(self.set_times(path, times), path, tell=True)
        ):
            self.peer.ok()

    async def _write(self, f: OpenFile, size: int) -> str:
        """Read ``size`` bytes of data and write them; the reason the first write was
        refused (the rest of the data is still read, to stay in step), or ""."""
        offset, refused = 0, ""
        while offset < size:
            data = await self.peer.data(min(BLOCK, size - offset))
            if not data:
                raise ScpError("connection lost", fatal=True)
            if not refused:
                try:
                    await self.server.write(f, offset, data)
                except asyncssh.SFTPError as exc:
                    refused = exc.reason
            offset += len(data)
        return refused

    async def _try(self, step: object, path: str, *, tell: bool = False) -> bool:
        """Await ``step``; an SFTP error is counted (and with ``tell``, told): False."""
        assert inspect.isawaitable(step)
        try:
            await step
        except asyncssh.SFTPError as exc:
            if tell:
                self.fail(path, exc.reason)
            else:
                self.errors += 1
            return False
        return True


class Source(Transfer):
    """``scp -f PATH...``: send files (and with -r directories); patterns are expanded."""

    async def run(self) -> None:
        await self.peer.response()  # the client is ready
        for pattern in self.args.paths:
            names = await self.expand(pattern)
            if not names:
                self.fail(pattern, "no such file or directory")
            for path in names:
                await self.send_entry(path)

    async def send_entry(self, path: str, depth: int = 0) -> None:
        """One file, or with -r one directory; below the top, a link to a directory is not
        followed (two links to ``.`` would make a tree without end)."""
        try:
            st = self.server.stat_result(os.fsencode(path))
            linked = depth and stat.S_ISLNK(
                self.server.stat_result(os.fsencode(path), follow=False).st_mode
            )
            if linked and stat.S_ISDIR(st.st_mode):
                self.fail(path, "skipping a link to a directory")
                return
        except asyncssh.SFTPError as exc:
            self.fail(path, exc.reason)
            return
        name = posixpath.basename(path.rstrip("/")) or "."
        if "\n" in name:
            self.fail(path, "skipping, the name holds a newline")
        elif stat.S_ISDIR(st.st_mode) and self.args.recurse:
            if depth >= MAX_DEPTH:
                self.fail(path, f"skipping, directories nested deeper than {MAX_DEPTH}")
                return
            await self.send_directory(path, name, st, depth)
        elif stat.S_ISREG(st.st_mode):
            await self.send_file(path, name, st)
        else:
            self.fail(path, "not a regular file")

    async def announce(self, kind: str, name: str, st: os.stat_result, size: int) -> bool:
        """T (with -p) and the C or D line; False if the client refused them."""
        try:
            if self.args.preserve:
                mtime, atime = max(0, int(st.st_mtime)), max(0, int(st.st_atime))
                await self.peer.send(f"T{mtime} 0 {atime} 0\n".encode())
                await self.peer.response()
            mode = stat.S_IMODE(st.st_mode) & 0o7777
            line = f"{kind}{mode:04o} {size} {name}\n".encode("utf-8", "surrogateescape")
            await self.peer.send(line)
            await self.peer.response()
        except ScpError as exc:
            if exc.fatal:
                raise
            self.errors += 1
            return False
        return True

    async def send_directory(self, path: str, name: str, st: os.stat_result, depth: int) -> None:
        try:
            entries = [e.filename async for e in self.server.scandir(os.fsencode(path))]
        except asyncssh.SFTPError as exc:
            self.fail(path, exc.reason)
            return
        if not await self.announce("D", name, st, 0):
            return
        for entry in entries:
            assert isinstance(entry, bytes)
            if entry not in (b".", b".."):
                await self.send_entry(posixpath.join(path, os.fsdecode(entry)), depth + 1)
        await self.peer.send(b"E\n")
        await self.peer.response()

    async def send_file(self, path: str, name: str, st: os.stat_result) -> None:
        try:
            f = await self.server.open(os.fsencode(path), asyncssh.FXF_READ,
                                       asyncssh.SFTPAttrs())  # fmt: skip
        except asyncssh.SFTPError as exc:
            self.fail(path, exc.reason)
            return
        try:
            size = f.stat().st_size
            if not await self.announce("C", name, st, size):
                return
            failure = await self._stream(f, size)
            if failure:
                self.fail(path, failure)
            else:
                self.peer.ok()
            try:
                await self.peer.response()
            except ScpError as exc:
                if exc.fatal:
                    raise
                self.errors += 1
        finally:
            await self.server.close(f)

    async def _stream(self, f: OpenFile, size: int) -> str:
        """Send ``size`` bytes; after a failed read zeros keep the protocol in step (the
        error line that follows tells the client). The failure, or ""."""
        offset, failure = 0, ""
        while offset < size:
            n = min(BLOCK, size - offset)
            data = b""
            if not failure:
                try:
                    result = self.server.read(f, offset, n)
                    data = await result if inspect.isawaitable(result) else result
                    if not data:
                        failure = "the file shrank while it was sent"
                except asyncssh.SFTPError as exc:
                    failure = exc.reason
            await self.peer.send(data or bytes(n))
            offset += len(data) or n
        return failure

    async def expand(self, pattern: str) -> list[str]:
        """A path with ``*``, ``?`` or ``[`` in it, matched component by component as a
        shell would (names starting with a dot only by a pattern that does)."""
        if not GLOB_CHARS & set(pattern):
            return [pattern]
        found = ["/" if pattern.startswith("/") else ""]
        for part in (p for p in pattern.split("/") if p):
            if not GLOB_CHARS & set(part):
                found = [posixpath.join(d, part) for d in found]
                continue
            matched: list[str] = []
            for d in found:
                matched += await self._matches(d, part)
                if len(matched) > MAX_GLOB:
                    raise ScpError(f"{pattern}: matches too many names", fatal=True)
            found = sorted(matched)
        return found

    async def _matches(self, directory: str, part: str) -> list[str]:
        """Names in ``directory`` that ``part`` matches; none where it cannot be listed
        (as a shell skips a directory it cannot read)."""
        matched = []
        try:
            async for e in self.server.scandir(os.fsencode(directory or ".")):
                name = os.fsdecode(e.filename)
                if name in (".", "..") or (name.startswith(".") and not part.startswith(".")):
                    continue
                if fnmatch.fnmatchcase(name, part):
                    matched.append(posixpath.join(directory, name))
                    if len(matched) > MAX_GLOB:
                        break
        except asyncssh.SFTPError:
            return []
        return matched


def _times(rest: str) -> tuple[int, int]:
    """(mtime, atime) of a T line."""
    try:
        mtime, _, atime, _ = rest.split()
        times = int(mtime), int(atime)
    except ValueError:
        raise ScpError("protocol error: bad time line", fatal=True) from None
    if not all(0 <= t < MAX_TIME for t in times):
        raise ScpError("protocol error: time out of range", fatal=True)
    return times


def _entry(rest: str) -> tuple[int, int, str]:
    """(mode, size, name) of a C or D line; a name is one path component."""
    try:
        mode, size, name = rest.split(" ", 2)
        parsed = int(mode, 8) & 0o777, int(size)
    except ValueError:
        raise ScpError("protocol error: bad file line", fatal=True) from None
    if parsed[1] < 0 or not name or "/" in name or name in (".", ".."):
        raise ScpError(f"protocol error: bad name or size: {name!r}", fatal=True)
    return parsed[0], parsed[1], name


async def run_scp(
    server: SftpdServer,
    command: str,
    stdin: SSHReader[bytes],
    stdout: SSHWriter[bytes],
    stderr: SSHWriter[bytes],
) -> int:
    """Run one ``scp -t`` or ``scp -f`` command; its exit status (1 after any error)."""
    try:
        args = parse(command)
    except ValueError as exc:
        stderr.write(f"scp: {exc}\n".encode())
        await server.exit()
        return 1
    peer = Peer(stdin, stdout)
    transfer = (Source if args.source else Sink)(server, peer, args)
    try:
        await transfer.run()
    except ScpError as exc:
        transfer.errors += 1
        if exc.message != "connection lost":
            peer.error(exc.message, fatal=True)
    except (asyncssh.Error, OSError):
        raise  # the channel is gone: ChannelSession._scp says so in the debug log
    except Exception:
        log.exception("scp failed", extra={"user": server.session.user})
        transfer.errors += 1
        peer.error("internal error", fatal=True)
    finally:
        await server.exit()
    return 1 if transfer.errors else 0
