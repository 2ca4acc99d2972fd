"""Rules for user accounts that the admin CLI and the SSH login share."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def valid_username(name: str) -> bool:
    """Lower-case, POSIX-portable, at most 32 characters (as useradd accepts)."""
    return USERNAME_RE.match(name) is not None


def ensure_home(homes_dir: Path, name: str) -> Path:
    """Create ``homes/NAME`` (0700) if needed; refuse a home that is not a plain directory."""
    if not valid_username(name):
        raise ValueError(f"invalid user name: {name!r}")
    home = homes_dir / name
    with contextlib.suppress(FileExistsError):
        os.mkdir(home, 0o700)
    st = os.lstat(home)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"home of {name} is not a directory")
    return home
