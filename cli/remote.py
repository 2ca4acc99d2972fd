"""The remote side of a session: paths relative to a working directory, listings,
tree operations, and server-side checksums with fallbacks.

Checksums, best first: an exec command (sftpd's own ``sha256sum``; on any other server
with a shell ``openssl dgst``, which uses the CPU's SHA instructions and hashes about 4x
faster than coreutils' ``sha256sum`` 9.1, then ``sha256sum``), the ``check-file-name``
SFTP extension (sftpd, some commercial servers), then ``sha1sum``/``md5sum``. Plain
OpenSSH with ``internal-sftp`` offers none.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import stat
from dataclasses import dataclass

import asyncssh

from sftpd.ssh.compat import String, UInt32, UInt64, client_extended_request

SFTPD_COMMANDS = (("sha256", "sha256sum"), ("sha1", "sha1sum"), ("md5", "md5sum"))
SHELL_COMMANDS = (("sha256", "openssl dgst -sha256 -r"), *SFTPD_COMMANDS)


def safe_name(name: str) -> bool:
    """A name a listing may contain: never one that climbs or nests (a hostile server)."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    attrs: asyncssh.SFTPAttrs

    @property
    def is_dir(self) -> bool:
        return self.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY

    @property
    def size(self) -> int:
        return self.attrs.size or 0


class Remote:
    """One connection, its SFTP session and a working directory."""

    def __init__(
        self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, cwd: str
    ) -> None:
        self.conn = conn
        self.sftp = sftp
        self.cwd = cwd
        self._exec_ok: dict[str, bool] = {}
        version = str(conn.get_extra_info("server_version", ""))
        self._commands = SFTPD_COMMANDS if version.startswith("SSH-2.0-sftpd") else SHELL_COMMANDS
        self._check_file_ok: bool | None = None

    def resolve(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, path)) if path else self.cwd

    @property
    def block_size(self) -> int:
        """Request size: the server's advertised limits, never more than 256 KiB."""
        limits = self.sftp.limits
        return max(4096, min(limits.max_read_len, limits.max_write_len, 256 * 1024))

    async def cd(self, path: str) -> str:
        """Change directory; an empty path goes back where the server started the session."""
        target = await self.sftp.realpath(self.resolve(path) if path else ".")
        if not await self.sftp.isdir(target):
            raise asyncssh.SFTPNoSuchFile(f"not a directory: {path}")
        self.cwd = target
        return target

    async def listdir(self, path: str = "") -> list[Entry]:
        target = self.resolve(path)
        attrs = await self.sftp.stat(target)
        if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
            return [Entry(posixpath.basename(target), target, attrs)]
        names = await self.sftp.readdir(target)
        entries = [
            Entry(str(n.filename), posixpath.join(target, str(n.filename)), n.attrs)
            for n in names
            if n.filename not in (".", "..")
        ]
        return sorted(entries, key=lambda e: e.name)

    async def mkdir(self, path: str, parents: bool = False) -> None:
        target = self.resolve(path)
        if parents:
            await self.sftp.makedirs(target, exist_ok=True)
        else:
            await self.sftp.mkdir(target)

    async def remove(self, path: str, recursive: bool = False) -> None:
        target = self.resolve(path)
        attrs = await self.sftp.lstat(target)
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            if not recursive:
                raise asyncssh.SFTPFailure(f"{path} is a directory (use -r)")
            await self.sftp.rmtree(target)
        else:
            await self.sftp.remove(target)

    async def is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR((await self.sftp.stat(self.resolve(path))).permissions or 0)
        except asyncssh.SFTPNoSuchFile:
            return False

    async def rename(self, old: str, new: str) -> None:
        src, dst = self.resolve(old), self.resolve(new)
        if await self.is_dir(new):
            dst = posixpath.join(dst, posixpath.basename(src))
        try:
            await self.sftp.posix_rename(src, dst)
        except asyncssh.SFTPOpUnsupported:
            await self.sftp.rename(src, dst)

    async def run(self, *argv: str) -> asyncssh.SSHCompletedProcess:
        return await self.conn.run(" ".join(shlex.quote(a) for a in argv), check=False)

    # -- checksums -------------------------------------------------------------

    async def checksum(self, path: str, length: int | None = None) -> tuple[str, str] | None:
        """(algorithm, hex digest) of the remote file (or its first ``length`` bytes,
        which only check-file can do unless that is the whole file); None if the
        server offers no way."""
        target = self.resolve(path)
        if length is None:
            for alg, command in self._commands:
                digest = await self._exec_checksum(command, target)
                if digest:
                    return alg, digest
        for alg in ("sha256", "sha1", "md5"):
            got = await self._check_file(target, alg, length or 0)
            if got:
                return got
            if self._check_file_ok is False:
                break
        return None

    async def _exec_checksum(self, command: str, target: str) -> str | None:
        if self._exec_ok.get(command) is False:
            return None
        try:
            result = await self.run(*command.split(), target)
        except (asyncssh.ChannelOpenError, asyncssh.Error):
            self._exec_ok[command] = False
            return None
        out = result.stdout if isinstance(result.stdout, str) else ""
        words = out.split()
        if (
            result.exit_status != 0
            or not words
            or not all(c in "0123456789abcdef\\" for c in words[0])
        ):
            if result.exit_status == 127 or "not found" in str(result.stderr):
                self._exec_ok[command] = False
            return None
        self._exec_ok[command] = True
        return words[0].lstrip("\\")

    async def _check_file(self, target: str, alg: str, length: int) -> tuple[str, str] | None:
        if self._check_file_ok is False:
            return None
        try:
            packet = await client_extended_request(
                self.sftp,
                b"check-file-name",
                String(target.encode()),
                String(alg.encode()),
                UInt64(0),
                UInt64(length),
                UInt32(0),
            )
        except (asyncssh.SFTPOpUnsupported, asyncssh.SFTPBadMessage):
            self._check_file_ok = False
            return None
        self._check_file_ok = True
        packet.get_string()
        used = packet.get_string().decode()
        return used, packet.get_remaining_payload().hex()


def local_digest(path: str, algorithm: str, length: int | None = None) -> str:
    """Hex digest of a local file (or its first ``length`` bytes). Blocking."""
    h = hashlib.new(algorithm)
    left = length
    with open(path, "rb") as fh:
        while left is None or left > 0:
            chunk = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()
