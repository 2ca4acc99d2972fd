"""Events: facts that ``core/`` and the SSH layer emit after something happened.

Each is recorded in the store (the outbox, which is also the history) before the operation
that caused it is answered, and delivered from there to hooks (commands, webhooks) at least
once, with a stable ``id`` (sftpd/events/bus.py); nothing on the transfer path waits for a
hook."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

EVENT_NAMES = (
    "upload",  # a complete file is under its final name (see Event), once
    "upload-part",  # a written file closed under an in-progress name (not an upload yet)
    "download",  # a file read by the client was closed
    "upload-failed",  # the session ended without a close, or a write was refused
    "download-failed",  # the session ended without a close
    "delete",
    "rename",
    "mkdir",
    "rmdir",
    "login",
    "login-failed",
    "logout",
    "quota-exceeded",
)


@dataclass(frozen=True)
class Event:
    """One fact. Paths: ``path``/``target`` as the user sees them; ``local_path`` and
    ``local_target`` on the server's disk (hooks run on the server), below ``local_root``.
    ``id`` is stable: a hook that gets an event twice (at-least-once) sees the same id.

    ``upload`` means a complete file is under its final name: a written file closed by the
    client (after an atomic rename, if any), or a file renamed from an in-progress name
    (``.NAME.xfer-part``, ``*.partial``, ``*.filepart``: sftpd.core.uploads) to a final one,
    as xfer, rclone and WinSCP finish theirs. A file closed under an in-progress name gives
    ``upload-part`` instead: the history shows it, hooks on ``upload`` do not see it.

    The user owns everything below ``local_root`` and may swap a directory of
    ``local_path`` for a link after the event: a hook resolves it beneath the root
    without following links, as the shipped example does."""

    name: str
    user: str
    addr: str = ""
    protocol: str = ""  # sftp, scp, exec, ssh
    path: str = ""
    target: str = ""  # rename: the new path
    local_path: str = ""
    local_target: str = ""
    local_root: str = ""  # the home or folder ``local_path`` is below
    size: int | None = None  # the file's size afterwards
    bytes: int | None = None  # moved by this transfer
    duration: float | None = None  # seconds the file was open
    reason: str = ""  # login-failed, quota-exceeded
    method: str = ""  # login, login-failed: publickey, password, ...
    sha256: str = ""  # upload: the file's digest, when the server computed it anyway
    time: float = field(default_factory=time.time)
    id: str = ""  # given at creation from ``time`` (see new_event_id)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", new_event_id(self.time))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict` (keys a newer release added are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v != "" and v is not None}

    def env(self) -> dict[str, str]:
        """``SFTPD_EVENT_NAME``, ``SFTPD_EVENT_USER``, ... for a command."""
        return {f"SFTPD_EVENT_{k.upper()}": str(v) for k, v in self.to_dict().items()}


#: sftpd's own generator, not the process-wide one that libraries and tests share: seeded
#: from the OS, and again in every forked worker (as ``random`` reseeds its own), so no two
#: workers draw the same bits.
RANDOM = random.Random()
os.register_at_fork(after_in_child=RANDOM.seed)


def new_event_id(at: float) -> str:
    """24 hex digits: the event's milliseconds since the epoch, then 48 random bits: ids
    sort by time, and the store's id index serves as its time index. The random bits come
    from :data:`RANDOM`: no system call per event, and an id is a name, not a secret."""
    return f"{max(0, int(at * 1000)):012x}{RANDOM.getrandbits(48):012x}"


#: Emit an event; the result is done when the event is recorded (awaiting it is how an
#: operation is answered only after its event is safe), and never fails.
Emit = Callable[[Event], Awaitable[None]]


class Done:
    """An awaitable that is already done: what an emit returns when there is nothing to wait
    for (no store, or the event was not kept)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


def no_emit(event: Event) -> Awaitable[None]:
    """What a session without a bus emits to."""
    return Done()
