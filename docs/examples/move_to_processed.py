#!/usr/bin/env python3
"""An sftpd upload hook: move a file uploaded to /incoming into /processed beside it.

sftpd runs it with the event as JSON on stdin (and as SFTPD_EVENT_* variables) after the
client's CLOSE, so the file is complete. The move stays inside the same home or folder, so
the user's usage does not change.

The user owns every name below ``local_root`` and may have made ``processed`` (or any
directory on the way) a symlink, or swap one in while this runs. So nothing here follows
a link: each directory is opened beneath the root with O_NOFOLLOW, and the file is moved
between those directory descriptors. A link where a directory should be stops the hook
with one line and leaves the file where it is.
"""

import contextlib
import json
import os
import sys

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(root_fd: int, names: list[str]) -> int:
    """The directory ``root/names...``, every step refusing a symlink."""
    fd = os.dup(root_fd)
    for name in names:
        try:
            step = os.open(name, DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = step
    return fd


event = json.load(sys.stdin)
relative = os.path.relpath(event["local_path"], event["local_root"]).split(os.sep)
*dirs, name = relative  # e.g. ["incoming"], "report.csv"
if not dirs or ".." in relative:
    sys.exit(f"unexpected path {event['path']!r}")
root = os.open(event["local_root"], DIR)
try:
    parent = open_beneath(root, dirs[:-1])
    incoming = open_beneath(parent, dirs[-1:])
    with contextlib.suppress(FileExistsError):
        os.mkdir("processed", 0o755, dir_fd=parent)
    processed = open_beneath(parent, ["processed"])
    os.rename(name, name, src_dir_fd=incoming, dst_dir_fd=processed)
except OSError as exc:
    sys.exit(f"not moved: {event['path']}: {exc.strerror}")
print(f"moved {event['path']} ({event['size']} bytes from {event['user']}) to /processed")
