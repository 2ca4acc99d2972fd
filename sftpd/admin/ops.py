"""``sftpd db upgrade`` and ``sftpd defender ...``: the database and blocked addresses."""

from __future__ import annotations

import json
import time

import typer

from sftpd.admin.base import (
    JsonOpt,
    db_app,
    defender_app,
    fail,
    with_store,
)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply schema migrations now (``serve`` also does it at start; safe on many nodes)."""
    with_store(ctx, lambda s, _c: s.count_users())
    typer.echo("database schema is current")


@defender_app.command("list")
def defender_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Addresses with login failures on record, and which are blocked until when."""
    now = time.time()
    bans = with_store(ctx, lambda s, _c: s.bans(now))
    if json_out:
        typer.echo(json.dumps([vars(b) for b in bans]))
        return
    for b in bans:
        state = (
            "blocked until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.banned_until))
            if b.banned_until
            else "not blocked"
        )
        typer.echo(f"{b.addr}  {b.failures} failures  {state}")


@defender_app.command("unblock")
def defender_unblock(ctx: typer.Context, addr: str) -> None:
    """Forget an address's failures and lift its block (on every worker and node)."""
    if not with_store(ctx, lambda s, _c: s.unban(addr)):
        fail(f"{addr} has no failures on record")
    typer.echo(f"unblocked {addr}")
