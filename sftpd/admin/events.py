"""``sftpd events list|show|retry``: the history and the outbox, on one node or many."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Annotated, Any

import typer

from sftpd.admin.base import JsonOpt, app, fail, with_store
from sftpd.events import EVENT_NAMES
from sftpd.events.pathglob import PathPattern, path_pattern
from sftpd.logs import one_line
from sftpd.sizes import format_size
from sftpd.store import Store
from sftpd.store.outbox import STATES, EventQuery, StoredEvent, summary

events_app = typer.Typer(
    rich_markup_mode=None,
    help="Events: the history (logins, transfers, deletes, renames) and hook deliveries.",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")

#: How far back ``--since`` reaches: 90m, 36h, 7d, or a date / date and time.
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PAGE = 2000  # rows read at a time, newest first, when --path matches a pattern


def parse_since(text: str, now: float) -> float:
    """``90m``, ``36h``, ``7d`` ago, or ``2026-12-01`` / ``2026-12-01T08:00`` local time."""
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    for form in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text.strip(), form))
        except ValueError:
            continue
    raise typer.BadParameter("use 90m, 36h, 7d, or a date such as 2026-12-01 or 2026-12-01T08:00")


def _prefix(pattern: str) -> str:
    """The literal start of a path pattern, which the store can narrow by."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


async def _matching(
    store: Store, query: EventQuery, pattern: PathPattern, limit: int
) -> list[StoredEvent]:
    """The newest ``limit`` events whose path matches, paging back through those that
    share the pattern's literal start until enough match or none are left."""
    found: list[StoredEvent] = []
    while len(found) < limit:
        page = await store.query_events(query)
        found[:0] = [e for e in page if pattern.fullmatch(e.data.get("path", ""))]
        if len(page) < query.limit:
            break
        query = dataclasses.replace(query, before_seq=page[0].seq)
    return found[-limit:]


def _line(e: StoredEvent) -> str:
    """One line per event, whatever its user chose as names (control characters escaped)."""
    d = e.data
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["time"]))
    what = d.get("path", "")
    if d.get("target"):
        what += f" -> {d['target']}"
    extra = []
    if "size" in d:
        extra.append(format_size(d["size"]))
    if d.get("method"):
        extra.append(d["method"])
    if d.get("reason"):
        extra.append(d["reason"])
    tail = f" ({', '.join(extra)})" if extra else ""
    addr = d.get("addr", "-")
    return one_line(f"{when}  {d['id']}  {d['user']:<12} {d['name']:<15} {addr:<15} "
                    f"{what}{tail}  [{summary(e.deliveries)}]")  # fmt: skip


def _as_json(e: StoredEvent) -> dict[str, Any]:
    return e.data | {"deliveries": [vars(d) for d in e.deliveries]}


@events_app.command("list")
def events_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's events.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help=f"Only these kinds: {', '.join(EVENT_NAMES)}."),
    ] = None,
    path: Annotated[
        str | None, typer.Option(help="Only paths matching: * within a name, ** across /.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="From: 90m, 36h, 7d or a date.")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only events with a delivery pending, delivered or dead.")
    ] = None,
    limit: Annotated[int, typer.Option(help="The newest this many.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """What happened, oldest first: who logged in from where, what they uploaded,
    downloaded, deleted and renamed, and where each event's hooks stand."""
    names = tuple(type_ or ())
    unknown = [n for n in names if n not in EVENT_NAMES]
    if unknown:
        fail(f"unknown event type {unknown[0]!r}: use {', '.join(EVENT_NAMES)}")
    if state is not None and state not in STATES:
        fail(f"unknown state {state!r}: use {', '.join(STATES)}")
    query = EventQuery(
        user=user,
        names=names,
        since=parse_since(since, time.time()) if since else None,
        state=state,
        limit=max(limit, PAGE) if path else limit,
        path_prefix=_prefix(path) if path else "",
    )
    if path:
        pattern = path_pattern(path)
        found = with_store(ctx, lambda s, _c: _matching(s, query, pattern, limit))
    else:
        found = with_store(ctx, lambda s, _c: s.query_events(query))
    if json_out:
        typer.echo(json.dumps([_as_json(e) for e in found]))
        return
    for e in found:
        typer.echo(_line(e))


@events_app.command("show")
def events_show(ctx: typer.Context, event_id: str, json_out: JsonOpt = False) -> None:
    """One event in full, and each hook's delivery of it."""
    e = with_store(ctx, lambda s, _c: s.get_event(event_id))
    if e is None:
        fail(f"no event {event_id}")
    if json_out:
        typer.echo(json.dumps(_as_json(e)))
        return
    for key, value in e.data.items():
        typer.echo(one_line(f"{key}: {value}"))
    for d in e.deliveries:
        when = d.done_at if d.state != "pending" else d.next_at
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "-"
        error = f", last error: {d.error}" if d.error else ""
        verb = "next attempt" if d.state == "pending" else d.state
        typer.echo(one_line(f"hook {d.label}: {d.state} after {d.attempts} attempt(s), "
                            f"{verb} {stamp}{error}"))  # fmt: skip


@events_app.command("retry")
def events_retry(
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Argument(help="One event; omit with --all-dead.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead delivery.")] = False,
) -> None:
    """Deliver dead-lettered events again, from now. An event past its hook's horizon gets
    one attempt; if that fails it is dead again."""
    if (event_id is None) == (not all_dead):
        fail("give an event id or --all-dead")
    n = with_store(ctx, lambda s, _c: s.retry_deliveries(event_id, time.time()))
    typer.echo(f"{n} deliver{'y' if n == 1 else 'ies'} pending again")
