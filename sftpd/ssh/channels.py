"""Session channels: SFTP subsystem, SCP and exec commands.

A shell request (with or without a pty) is accepted only to answer it: a few
lines on how to connect, then exit status 1, as git hosting services do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import asyncssh

from sftpd.exec import ExecContext, run_command
from sftpd.exec.table import SFTP_COMMANDS, no_shell
from sftpd.ssh.algorithms import SERVER_WINDOW_MAX
from sftpd.ssh.compat import (
    SSHReader,
    SSHServerStreamSession,
    SSHWriter,
    binary_streams,
    growing_window,
)
from sftpd.ssh.scp import run_scp
from sftpd.ssh.sftp import SftpdHandler, SftpdServer

if TYPE_CHECKING:
    from sftpd.ssh.connection import Connection

log = logging.getLogger("sftpd.channels")


class ChannelSession(SSHServerStreamSession):  # type: ignore[type-arg]
    """One session channel of an authenticated connection."""

    def __init__(self, conn: Connection) -> None:
        # Dispatch is ours (session_started), so asyncssh's factories stay unset.
        super().__init__(None)
        self._owner = conn

    def shell_requested(self) -> bool:
        self._owner.refused("shell")
        return True  # answered by no_shell, never run

    def pty_requested(self, *args: object) -> bool:
        return True  # only ever used to print no_shell's lines

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            self._owner.refused(f"subsystem {subsystem[:40]!r}")
        return subsystem == "sftp"

    def session_started(self) -> None:
        chan, stdin, stdout, stderr = binary_streams(self)
        growing_window(chan, SERVER_WINDOW_MAX)
        conn = self._owner
        forced = conn.forced_command()  # a certificate's: whatever the session asked
        command = chan.get_command() if forced is None else forced
        sftp = chan.get_subsystem() == "sftp" if forced is None else forced.strip() in SFTP_COMMANDS
        if sftp:
            server = conn.new_sftp_server(chan)
            conn.spawn(self._sftp(SftpdHandler(server, stdin, stdout, 3), server, chan))
        elif command and command.startswith("scp "):
            conn.touch()
            server = conn.new_sftp_server(chan, "scp")
            conn.spawn(self._scp(server, command, stdin, stdout, stderr))
        else:
            conn.spawn(self._exec(command, stdin, stdout, stderr))

    @staticmethod
    async def _sftp(
        handler: SftpdHandler, server: SftpdServer, chan: asyncssh.SSHServerChannel[bytes]
    ) -> None:
        """Run the SFTP protocol; whatever ends it, the channel closes and files are freed.

        asyncssh's handler lets an EOF before INIT escape without cleanup.
        """
        try:
            await handler.run()
        except (EOFError, OSError, asyncssh.Error) as exc:
            log.debug("sftp session ended early", extra={"error": str(exc)})
        finally:
            await server.exit()
            if not chan.is_closing():
                chan.exit(0)

    async def _scp(
        self,
        server: SftpdServer,
        command: str,
        stdin: SSHReader[bytes],
        stdout: SSHWriter[bytes],
        stderr: SSHWriter[bytes],
    ) -> None:
        chan = cast(asyncssh.SSHServerChannel[bytes], stdout.channel)
        status = 1
        try:
            status = await run_scp(server, command, stdin, stdout, stderr)
        except (BrokenPipeError, ConnectionError, asyncssh.Error) as exc:
            log.debug("scp channel closed early", extra={"error": str(exc)})
        finally:
            self._owner.touch()
        if not chan.is_closing():
            chan.exit(status)

    async def _exec(
        self,
        command: str | None,
        stdin: SSHReader[bytes],
        stdout: SSHWriter[bytes],
        stderr: SSHWriter[bytes],
    ) -> None:
        conn = self._owner
        conn.touch()
        chan = cast(asyncssh.SSHServerChannel[bytes], stdout.channel)
        server = conn.new_sftp_server(chan, "exec")
        pty = chan.get_terminal_type() is not None
        ctx = ExecContext(server.session, stdin, stdout, stderr, pty)
        status = 1
        try:
            if command is None:
                host, port = chan.get_extra_info("sockname")[:2]
                status = await no_shell(ctx, host, port)
            else:
                status = await run_command(ctx, command)
        except (BrokenPipeError, ConnectionError, asyncssh.Error) as exc:
            # the client went away while the command ran (xfer drops a checksum it no
            # longer needs): nothing to report to anyone
            log.debug("exec channel closed early", extra={"error": str(exc)})
        except Exception:
            log.exception("exec command failed", extra={"user": conn.username})
            stderr.write(b"sftpd: internal error\n")
        finally:
            await server.exit()
            conn.touch()
        if not chan.is_closing():
            chan.exit(status)
