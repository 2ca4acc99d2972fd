"""The ``sftpd`` command: serve, keys, user, folder, quota, defender, db, events.

Verbs parse and print; logic lives elsewhere. Each module registers its commands on the
typer apps of :mod:`sftpd.admin.base`; importing them here builds the whole command.
"""

from __future__ import annotations

from sftpd.admin.base import app  # isort: split

from sftpd.admin import serve, users  # commands are listed in the order registered

# isort: split
from sftpd.admin import access, events, logins, ops

__all__ = ["access", "app", "events", "logins", "main", "ops", "serve", "users"]


def main() -> None:
    app()
