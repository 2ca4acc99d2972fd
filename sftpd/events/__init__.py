"""Events: facts that ``core/`` and the SSH layer emit after something happened, delivered
to hooks (commands, webhooks) from a bounded queue, never on the transfer path."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_NAMES = (
    "upload",  # a written file was closed by the client (after an atomic rename, if any)
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
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}

    def env(self) -> dict[str, str]:
        """``SFTPD_EVENT_NAME``, ``SFTPD_EVENT_USER``, ... for a command."""
        return {f"SFTPD_EVENT_{k.upper()}": str(v) for k, v in self.to_dict().items()}


Emit = Callable[[Event], None]


def no_emit(event: Event) -> None:
    """What a session without a bus emits to."""
