"""What one user may do right now: permissions and bandwidth pacers, updated in place.

One :class:`Access` per user per server process is shared by all that user's
sessions there; the server refreshes it from the store every
``ACCESS_REFRESH`` seconds, so an admin's change applies to running sessions at
their next operation after that, and to new logins at once.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sftpd.core.limits import Pacer, SharedRates
from sftpd.core.permissions import UNRESTRICTED, Permissions

log = logging.getLogger("sftpd.access")

ACCESS_REFRESH = 1.0  # seconds
NOTHING = Permissions(frozenset())


class AccessView(Protocol):
    """The stored access of a user (``sftpd.store.AccessRecord``)."""

    @property
    def permissions(self) -> str | None: ...
    @property
    def paths(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def upload_bps(self) -> int: ...
    @property
    def download_bps(self) -> int: ...


class Access:
    """Permissions and pacers of one user in this process."""

    def __init__(
        self, user: str, record: AccessView | None = None, rates: SharedRates | None = None
    ) -> None:
        self.user = user
        self.permissions = UNRESTRICTED
        self.upload = Pacer(shared=rates, account=f"{user}\0up")  # NUL: in no user name
        self.download = Pacer(shared=rates, account=f"{user}\0down")
        if record is not None:
            self.update(record)

    def update(self, record: AccessView) -> None:
        """Take a fresh record; malformed stored permissions allow nothing (fail closed)."""
        try:
            self.permissions = Permissions.parse(record.permissions, record.paths)
        except ValueError as exc:
            log.error("stored permissions are invalid; allowing nothing",
                      extra={"user": self.user, "error": str(exc)})  # fmt: skip
            self.permissions = NOTHING
        self.upload.rate = record.upload_bps
        self.download.rate = record.download_bps
