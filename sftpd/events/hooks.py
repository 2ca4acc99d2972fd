"""Hook declarations from the TOML file's ``[[hooks]]`` tables, and which events they take.

```toml
[[hooks]]
events = ["upload"]              # required: names from sftpd.events.EVENT_NAMES
users = ["ana", "ben"]           # optional: only these users
paths = ["/incoming/*"]          # optional: fnmatch patterns on the (virtual) path
command = ["/usr/local/bin/ingest", "--fast"]   # argv, never a shell
timeout = 30                     # seconds

[[hooks]]
events = ["upload", "delete"]
url = "http://127.0.0.1:8080/sftp"              # an HTTP POST of the event as JSON
secret_env = "HOOK_SECRET" # HMAC-SHA256 of the body in X-Sftpd-Signature
retries = 3                      # on a connection error or a 5xx, with backoff
```
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sftpd.events import EVENT_NAMES, Event

_KEYS = {"events", "users", "paths", "command", "url", "timeout", "retries", "secret",
         "secret_env"}  # fmt: skip


@dataclass(frozen=True)
class Hook:
    events: tuple[str, ...]
    users: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    url: str = ""
    timeout: float = 30.0
    retries: int = 2
    secret: str = ""

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
        if event.name not in self.events:
            return False
        if self.users and event.user not in self.users:
            return False
        return not self.paths or any(fnmatch.fnmatchcase(event.path, p) for p in self.paths)


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
    timeout, retries = table.get("timeout", 30.0), table.get("retries", 2)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if not isinstance(retries, int) or retries < 0:
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
    )
