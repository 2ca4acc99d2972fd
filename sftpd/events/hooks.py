"""Hook declarations from the TOML file's ``[[hooks]]`` tables, and which events they take.

```toml
[[hooks]]
events = ["upload"]              # required: names from sftpd.events.EVENT_NAMES
users = ["ana", "ben"]           # optional: only these users
paths = ["/incoming/*"]          # optional: patterns on the (virtual) path; * and ? stay
                                 # within one name, ** crosses "/" ("/incoming/**")
command = ["/usr/local/bin/ingest", "--fast"]   # argv, never a shell
timeout = 30                     # seconds

[[hooks]]
events = ["upload", "delete"]
url = "http://127.0.0.1:8080/sftp"              # an HTTP POST of the event as JSON
secret_env = "HOOK_SECRET" # HMAC-SHA256 of the body in X-Sftpd-Signature
horizon = 86400                  # seconds an event is retried (backoff doubling from 1 s
backoff_max = 3600               # up to backoff_max) before it is dead-lettered
retries = 10                     # optional: dead-lettered after this many retries
```

Every event is recorded in the store before its operation is answered; each hook delivers
it at least once (a failure, a timeout, a 5xx or a connection error is retried; a 4xx or a
command's non-zero exit too, since a receiver may be fixed), with the event's ``id`` in the
JSON and in ``X-Sftpd-Event-Id`` so a receiver can drop duplicates. A hook is known in the
store by :attr:`Hook.key`, a digest of what it delivers and where: edit its timeout freely,
but an edited ``url``, ``command``, ``events``, ``users`` or ``paths`` is a new hook (the old
one's pending events wait for a node that still has it; ``sftpd events list`` shows them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sftpd.events import EVENT_NAMES, Event
from sftpd.events.pathglob import path_pattern

_KEYS = {"events", "users", "paths", "command", "url", "timeout", "retries", "secret",
         "secret_env", "horizon", "backoff_max"}  # fmt: skip
HORIZON = 86400.0  # seconds an undelivered event is retried (a day)
BACKOFF_MAX = 3600.0  # the longest wait between two attempts


@dataclass(frozen=True)
class Hook:
    events: tuple[str, ...]
    users: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    url: str = ""
    timeout: float = 30.0
    retries: int | None = None  # None: retried until the horizon
    secret: str = ""
    horizon: float = HORIZON
    backoff_max: float = BACKOFF_MAX

    @functools.cached_property
    def key(self) -> str:
        """How the store knows this hook across restarts and nodes (never the secret)."""
        what = [self.events, self.users, self.paths, self.command, self.url]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """How logs and metrics name it: the program or the URL (never the secret)."""
        if self.command:
            return os.path.basename(self.command[0])
        parts = urlsplit(self.url)  # never user:password@ from the URL into a log line
        if not parts.username:
            return self.url
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))

    def wants(self, event: Event) -> bool:
        """Its events, users and paths: a rename matches by where it came from or went
        (a move into ``/incoming`` is a rename a hook on ``/incoming/**`` hears of)."""
        if event.name not in self.events:
            return False
        if self.users and event.user not in self.users:
            return False
        if not self.paths:
            return True
        paths = (event.path, event.target) if event.target else (event.path,)
        return any(path_pattern(p).fullmatch(x) for p in self.paths for x in paths)


def old_meaning_warnings(hooks: tuple[Hook, ...]) -> list[str]:
    """One line per pattern whose ``*`` used to match across ``/`` (fnmatch) and no
    longer does: said at start so a config relying on it is noticed."""
    out = []
    for number, hook in enumerate(hooks, start=1):
        for p in hook.paths:
            if re.search(r"(?<!\*)\*(?!\*)", p):
                wider = re.sub(r"(?<!\*)\*(?!\*)$", "**", p)
                out.append(
                    f"hook {number}: in paths, {p!r}: '*' no longer matches '/' (it stays within"
                    f" one name); write {wider!r} to take subdirectories as before"
                    if wider != p
                    else f"hook {number}: in paths, {p!r}: '*' no longer matches '/'; use '**'"
                    " where a pattern should cross directories"
                )
    return out


def _strings(raw: Any, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(raw)


def parse_hooks(raw: Any, env: Mapping[str, str]) -> tuple[Hook, ...]:
    """Validate ``[[hooks]]`` (``secret_env`` is looked up in ``env``); ValueError names the
    hook (1-based) and what is wrong."""
    if not isinstance(raw, list):
        raise ValueError("hooks must be an array of tables ([[hooks]])")
    hooks = []
    for number, table in enumerate(raw, start=1):
        try:
            hooks.append(_hook(table, env))
        except ValueError as exc:
            raise ValueError(f"hook {number}: {exc}") from None
    return tuple(hooks)


def _hook(table: Any, env: Mapping[str, str]) -> Hook:
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    events = _strings(table.get("events"), "events")
    bad = [e for e in events if e not in EVENT_NAMES]
    if bad:
        raise ValueError(f"unknown event {bad[0]!r}: use {', '.join(EVENT_NAMES)}")
    command = _strings(table["command"], "command") if "command" in table else ()
    url = table.get("url", "")
    if bool(command) == bool(url):
        raise ValueError("needs exactly one of command or url")
    if url and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ValueError("url must start with http:// or https://")
    secret = table.get("secret", "")
    if "secret_env" in table:
        secret = env.get(str(table["secret_env"]), "")
        if not secret:
            raise ValueError(f"environment variable {table['secret_env']} is empty or unset")
    timeout, retries = table.get("timeout", 30.0), table.get("retries")
    horizon, backoff_max = table.get("horizon", HORIZON), table.get("backoff_max", BACKOFF_MAX)
    for key, value in (("timeout", timeout), ("horizon", horizon), ("backoff_max", backoff_max)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive number of seconds")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ValueError("retries must be 0 or more")
    return Hook(
        events=events,
        users=_strings(table["users"], "users") if "users" in table else (),
        paths=_strings(table["paths"], "paths") if "paths" in table else (),
        command=command,
        url=url,
        timeout=float(timeout),
        retries=retries,
        secret=str(secret),
        horizon=float(horizon),
        backoff_max=float(backoff_max),
    )
