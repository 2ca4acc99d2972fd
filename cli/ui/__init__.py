"""``xfer ui``: a two-pane terminal file manager on Textual (:mod:`cli.ui.app`), moving
files with the same engine as ``put``/``get`` (:mod:`cli.ui.queue`)."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.errors import USAGE, XferError
from cli.session import Options, Session


def run_ui(opts: Options, local_dir: Path) -> int:
    """Run the app on this terminal; returns its exit code."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise XferError(USAGE, "xfer ui needs a terminal (use put/get/sync in scripts)")
    if not local_dir.is_dir():
        raise XferError(USAGE, f"{local_dir}: not a local directory")
    from cli.ui.app import XferApp

    password = Session(opts).secret()
    return XferApp(opts, password, str(local_dir.resolve())).run() or 0
