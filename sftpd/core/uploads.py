"""Upload modes: where a file opened for writing with truncation is written.

* ``standard``: in place (a broken upload leaves a partial file, which resume continues);
* ``atomic``: under a hidden temporary name in the same directory, renamed over the target
  when the client's CLOSE succeeds; a broken upload removes it, the old target untouched;
* ``atomic-resume``: as ``atomic``, but a broken upload is moved into place so that
  ``reput``, ``xfer put --resume`` or ``lftp put -c`` can continue it.

Temporary names start with :data:`TEMP_PREFIX`; the jail refuses that name in any path, so
a client can neither list nor open one. The name carries the server process's token, so a
start of the server removes only leftovers of processes that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

UPLOAD_MODES = ("standard", "atomic", "atomic-resume")
TEMP_PREFIX = ".sftpd-part-"


#: Names clients upload to and rename to the final name when complete: xfer
#: (``.NAME.xfer-part``), rclone (``NAME.XXXXXXXX.partial``), WinSCP (``NAME.filepart``).
#: A file closed under one is not an upload yet; the rename to a final name is.
IN_PROGRESS = (".*.xfer-part", "*.partial", "*.filepart")


_ENDINGS = tuple(p.lstrip(".*") for p in IN_PROGRESS)  # cheap first test: every close asks


def in_progress(name: str) -> bool:
    """Is ``name`` (one component) a client's in-progress upload name?"""
    return name.endswith(_ENDINGS) and any(fnmatch.fnmatchcase(name, p) for p in IN_PROGRESS)


#: Who last wrote an in-progress file (a user name): only that user's rename of it to a
#: final name finishes an upload (the ``upload`` event, and the rename without the
#: ``rename`` permission), so nobody else in a shared folder can publish it.
UPLOADER_XATTR = "user.sftpd.uploader"


def mark_uploader(fd: int, user: str) -> None:
    """Note ``user`` as the writer of the in-progress file open at ``fd`` (best effort)."""
    with contextlib.suppress(OSError):
        os.setxattr(fd, UPLOADER_XATTR, user.encode())


def hold_writing(fd: int) -> None:
    """While ``fd`` is open, the file is being written: a shared lock any process on this
    host (any worker) sees, gone with the descriptor even if the process dies."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)


@dataclass(frozen=True)
class PartState:
    uploader: str | None  # "" if nobody noted; None: the file system keeps no xattrs
    busy: bool  # a descriptor somewhere still writes it (hold_writing)


def part_state(dir_fd: int, name: str) -> PartState:
    """Who wrote the in-progress regular file ``name`` and whether anyone still writes it."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)  # fmt: skip
    except OSError:
        return PartState("", True)  # cannot look: as if it were still written
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = False
        except BlockingIOError:
            busy = True
        except OSError:
            busy = False
        try:
            uploader: str | None = os.getxattr(fd, UPLOADER_XATTR).decode(errors="replace")
        except OSError as exc:
            uploader = None if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) else ""
        return PartState(uploader, busy)
    finally:
        os.close(fd)


def temp_name(token: str) -> str:
    """A fresh temporary name for a process whose token is ``token``."""
    return f"{TEMP_PREFIX}{token}-{secrets.token_hex(8)}"


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def token_of(name: str) -> str:
    return name[len(TEMP_PREFIX) :].rsplit("-", 1)[0]


def leftovers(tops: Iterable[str], live_tokens: set[str]) -> Iterator[str]:
    """Paths of temporary files below ``tops`` whose process is not live (no symlinks
    followed). Iterative, so a user's 10,000-deep tree cannot exhaust the stack; a
    directory that cannot be read is skipped. Blocking: run it in a thread."""
    stack = list(tops)
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif is_temp(entry.name) and token_of(entry.name) not in live_tokens:
                        yield entry.path
                except OSError:
                    continue
