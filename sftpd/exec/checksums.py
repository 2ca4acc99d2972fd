"""``md5sum``, ``sha1sum``, ``sha256sum``, ``sha512sum``: GNU coreutils output, confined paths.

With no path (or ``-``) they hash stdin, as rclone's probe expects
(``md5sum`` with empty stdin -> ``d41d8cd98f00b204e9800998ecf8427e  -``).
"""

from __future__ import annotations

import asyncio

from sftpd.core import errors
from sftpd.core.checksum import ALGORITHMS, coreutils_line, hash_whole
from sftpd.core.files import OpenMode
from sftpd.exec import ExecContext, Handler

#: coreutils' wording for what can go wrong with a path
_REASONS: dict[type[errors.SftpdError], str] = {
    errors.NotFound: "No such file or directory",
    errors.IsADirectory: "Is a directory",
    errors.NotADirectory: "Not a directory",
    errors.PermissionDenied: "Permission denied",
    errors.InvalidName: "File name too long",
    errors.LinkLoop: "Too many levels of symbolic links",
}


def _reason(exc: errors.SftpdError) -> str:
    for cls in type(exc).__mro__:
        if cls in _REASONS:
            return _REASONS[cls]
    return exc.message


async def _hash_stdin(ctx: ExecContext, algorithm: str) -> str:
    h = ALGORITHMS[algorithm]()
    while chunk := await ctx.stdin.read(256 * 1024):
        h.update(chunk)
    return h.hexdigest()


async def _hash_path(ctx: ExecContext, algorithm: str, path: str) -> str:
    f = await ctx.session.open(path, OpenMode(read=True))
    try:
        digest = await asyncio.to_thread(hash_whole, f.fd, algorithm)
    finally:
        await f.close()
    return digest.hex()


def checksum_command(algorithm: str) -> Handler:
    name = f"{algorithm}sum"

    async def run(ctx: ExecContext, args: list[str]) -> int:
        paths: list[str] = []
        only_paths = False
        for arg in args:
            if only_paths or arg == "-" or not arg.startswith("-"):
                paths.append(arg)
            elif arg == "--":
                only_paths = True
            elif arg not in ("-b", "--binary", "-t", "--text"):
                ctx.err(f"{name}: unrecognized option '{arg}'\n")
                return 1
        status = 0
        for path in paths or ["-"]:
            try:
                if path == "-":
                    digest = await _hash_stdin(ctx, algorithm)
                else:
                    digest = await _hash_path(ctx, algorithm, path)
            except errors.SftpdError as exc:
                ctx.err(f"{name}: {path}: {_reason(exc)}\n")
                status = 1
                continue
            ctx.out(coreutils_line(digest, path))
        return status

    run.__name__ = name
    return run
