"""The exec command table: exact names -> handlers. Nothing else runs.

``help`` lists the table; :func:`no_shell` is what a shell or pty request gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftpd.exec import ExecContext, Handler
from sftpd.exec.checksums import checksum_command
from sftpd.exec.sp import sp, sp_line


@dataclass(frozen=True)
class Command:
    run: Handler
    usage: str
    summary: str


def _checksum(algorithm: str) -> Command:
    return Command(
        checksum_command(algorithm),
        f"{algorithm}sum [FILE...]",
        f"{algorithm.upper()} of files (or stdin), as GNU coreutils prints it",
    )


async def _help(ctx: ExecContext, args: list[str]) -> int:
    ctx.out(help_text())
    return 0


COMMANDS: dict[str, Command] = {
    "sp": Command(sp, "sp [--json]", "space used and quota"),
    "md5sum": _checksum("md5"),
    "sha1sum": _checksum("sha1"),
    "sha256sum": _checksum("sha256"),
    "sha512sum": _checksum("sha512"),
    "help": Command(_help, "help", "this list"),
}


def help_text() -> str:
    """The commands, one line each."""
    width = max(len(c.usage) for c in COMMANDS.values())
    return "".join(f"{c.usage:<{width}}  {c.summary}\n" for c in COMMANDS.values())


async def no_shell(ctx: ExecContext, host: str, port: int) -> int:
    """Answer a shell request: who you are, how to connect, what runs here. Exit 1."""
    user = ctx.session.user
    target = f"[{host}]" if ":" in host else host
    lines = [
        f"sftpd: you are logged in as {user}, but this account serves SFTP and SCP only.",
        "Connect with:",
        f"  sftp -P {port} {user}@{target}",
        f"  scp -P {port} FILE {user}@{target}:",
        f"  xfer login {user}@{target}:{port}",
        f"Commands (ssh -p {port} {user}@{target} COMMAND):",
        *("  " + line for line in help_text().splitlines()),
        sp_line(await ctx.session.usage()),
    ]
    newline = "\r\n" if ctx.pty else "\n"  # a pty puts the client's terminal in raw mode
    ctx.err(newline.join(lines) + newline)
    return 1


#: A certificate's ``force-command`` naming one of these runs SFTP for every session.
SFTP_COMMANDS = ("internal-sftp", "sftp-server", "/usr/lib/openssh/sftp-server",
                 "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")  # fmt: skip


def servable(command: str) -> bool:
    """Whether sftpd can run ``command`` for every session, as a certificate's
    ``force-command`` makes it: the SFTP server under a name OpenSSH gives it, or one of
    the exec commands above."""
    words = command.split()
    return command.strip() in SFTP_COMMANDS or (bool(words) and words[0] in COMMANDS)
