"""What verbs print: listings and transfer summaries as text or JSON, and the one error line."""

from __future__ import annotations

import json
import stat
import sys
import time
from typing import Any, NoReturn

import asyncssh
import typer

from cli import sync, transfer
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


def sync_plan(opts: Options, plan: sync.Plan) -> None:
    """``--dry-run``: one line per change (or JSON), nothing done."""
    if opts.json:
        print(json.dumps({"changes": [{"action": c.action, "path": c.rel, "reason": c.reason}
                          for c in plan.changes], "skipped": plan.skipped}))  # fmt: skip
        return
    for change in plan.changes:
        print(sync.describe(change))
    if not opts.quiet:
        print(f"dry run: {len(plan.copies)} to copy, {len(plan.removals)} to remove, "
              f"{plan.skipped} up to date")  # fmt: skip


def sync_summary(opts: Options, report: sync.Report) -> None:
    copied = report.copied
    if copied.unverified:
        print(f"xfer: warning: {copied.unverified} file(s) not verified: the server offers "
              "no checksum", file=sys.stderr)  # fmt: skip
    if opts.json:
        print(json.dumps({
            "transferred": report.transferred, "skipped": report.skipped,
            "deleted": report.deleted, "bytes": report.bytes,
            "seconds": round(report.seconds, 3), "verified": sorted(copied.verified),
            "unverified": copied.unverified,
        }))  # fmt: skip
    elif not opts.quiet:
        print(
            f"synced: {report.transferred} transferred, {report.skipped} up to date, "
            f"{report.deleted} deleted, {report.bytes:,} bytes in {report.seconds:.1f} s"
        )
