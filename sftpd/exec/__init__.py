"""Exec channel: an explicit table of command names -> handlers. No shell, ever.

A handler gets the parsed arguments, the user's ``Session`` and the channel's
streams, and returns the exit status. Anything not in the table answers
``NAME: command not found`` on stderr with status 127, as a shell would.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

from sftpd.core.session import Session


@dataclass
class ExecContext:
    session: Session
    stdin: asyncssh.SSHReader[bytes]
    stdout: asyncssh.SSHWriter[bytes]
    stderr: asyncssh.SSHWriter[bytes]
    pty: bool = False

    def out(self, text: str) -> None:
        self.stdout.write(text.encode("utf-8", "surrogateescape"))

    def err(self, text: str) -> None:
        self.stderr.write(text.encode("utf-8", "surrogateescape"))


Handler = Callable[[ExecContext, list[str]], Awaitable[int]]

EXIT_USAGE = 2
EXIT_NOT_FOUND = 127


async def run_command(ctx: ExecContext, command: str) -> int:
    """Parse ``command`` like a POSIX shell word list and run it from the table."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        ctx.stderr.write(f"sftpd: cannot parse command: {exc}\n".encode())
        return EXIT_USAGE
    if not argv:
        ctx.stderr.write(b"sftpd: empty command\n")
        return EXIT_USAGE
    from sftpd.exec.table import COMMANDS

    handler = COMMANDS.get(argv[0])
    if handler is None:
        name = argv[0].encode("utf-8", "backslashreplace")[:200]
        ctx.stderr.write(name + b": command not found\n")
        return EXIT_NOT_FOUND
    return await handler.run(ctx, argv[1:])
