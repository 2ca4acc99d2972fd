"""What verbs print: listings and transfer summaries as text or JSON, and the one error line."""

from __future__ import annotations

import json
import stat
import sys
import time
from typing import Any, NoReturn

import asyncssh
import typer

from cli import transfer
from cli.errors import XferError
from cli.remote import Entry
from cli.session import Options
from sftpd.sizes import format_size


def fail(err: XferError) -> NoReturn:
    """One line on stderr, then the exit code of the error."""
    print(f"xfer: {err}", file=sys.stderr)
    raise typer.Exit(err.code)


def format_entry(e: Entry) -> str:
    mode = stat.filemode(e.attrs.permissions or 0)
    size = format_size(e.size) if not e.is_dir else "-"
    mtime = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.attrs.mtime or 0))
    return f"{mode}  {size:>10}  {mtime}  {e.name}"


def entry_json(e: Entry) -> dict[str, Any]:
    kind = {asyncssh.FILEXFER_TYPE_DIRECTORY: "dir", asyncssh.FILEXFER_TYPE_REGULAR: "file",
            asyncssh.FILEXFER_TYPE_SYMLINK: "link"}.get(e.attrs.type, "other")  # fmt: skip
    return {"name": e.name, "type": kind, "mode": oct((e.attrs.permissions or 0) & 0o7777),
            "size": e.size, "mtime": e.attrs.mtime}  # fmt: skip


def listing(opts: Options, entries: list[Entry]) -> None:
    if opts.json:
        print(json.dumps([entry_json(e) for e in entries], indent=2))
    else:
        for e in entries:
            print(format_entry(e))


def summary(opts: Options, verb: str, report: transfer.Report) -> None:
    if report.unverified:
        print(f"xfer: warning: {report.unverified} file(s) not verified: the server offers "
              "no checksum", file=sys.stderr)  # fmt: skip
    if opts.json:
        print(json.dumps({
            "files": report.files, "bytes": report.bytes, "seconds": round(report.seconds, 3),
            "resumed_from": report.resumed_from, "verified": sorted(report.verified),
            "unverified": report.unverified,
        }))  # fmt: skip
        return
    if opts.quiet:
        return
    rate = report.bytes / report.seconds / 2**20 if report.seconds else 0.0
    check = f", verified {'/'.join(sorted(report.verified))}" if report.verified else ""
    print(f"{verb} {report.files} file(s), {report.bytes:,} bytes in {report.seconds:.1f} s "
          f"({rate:.1f} MiB/s){check}")  # fmt: skip
