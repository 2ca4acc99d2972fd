"""``sp``: space used and quota, one human line or (``--json``) one JSON object."""

from __future__ import annotations

import json
from typing import Any

from sftpd.core.session import UsageReport
from sftpd.exec import EXIT_USAGE, ExecContext
from sftpd.sizes import count, format_size


def sp_line(u: UsageReport) -> str:
    files = (
        count(u.files, "file")
        if not u.max_files
        else f"{u.files:,} of {count(u.max_files, 'file')}"
    )
    if not u.quota:
        return f"used {format_size(u.used)} (no quota), {files}"
    percent = min(100, u.used * 100 // u.quota)
    free = format_size(u.free or 0)
    return (
        f"used {format_size(u.used)} of {format_size(u.quota)} ({percent}%), {free} free, {files}"
    )


def sp_doc(u: UsageReport) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "used": u.used,
        "quota": u.quota or None,
        "free": u.free,
        "files": u.files,
    }
    if u.max_files:
        doc["max_files"] = u.max_files
    return doc


async def sp(ctx: ExecContext, args: list[str]) -> int:
    """The home's line first (what scripts parse), then one line per mounted folder."""
    if args not in ([], ["--json"]):
        ctx.err("usage: sp [--json]\n")
        return EXIT_USAGE
    home = await ctx.session.usage()
    folders = await ctx.session.folder_usage()
    if args:
        doc = sp_doc(home)
        if folders:
            doc["folders"] = {at: sp_doc(u) for at, u in folders}
        ctx.out(json.dumps(doc) + "\n")
    else:
        ctx.out("".join([sp_line(home) + "\n", *(f"{at}: {sp_line(u)}\n" for at, u in folders)]))
    return 0
