"""Hashing for verification: coreutils ``*sum`` lines and the check-file extension.

Hashing is blocking work: callers run :func:`hash_range` in a worker thread
(``hashlib`` releases the GIL on large buffers, so other sessions keep going).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

ALGORITHMS: dict[str, Callable[[], hashlib._Hash]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
READ_SIZE = 1024 * 1024
MIN_BLOCK = 256  # draft-ietf-secsh-filexfer-extensions-00, section 3


def hash_range(fd: int, algorithm: str, offset: int = 0, length: int = 0, block: int = 0) -> bytes:
    """Digests of ``length`` bytes from ``offset`` (0: to the end), one per ``block`` bytes
    (0: one digest for the whole range), concatenated."""
    new = ALGORITHMS[algorithm]
    end = os.fstat(fd).st_size if length == 0 else offset + length
    out = []
    pos = offset
    while True:
        h = new()
        stop = end if block == 0 else min(end, pos + block)
        while pos < stop:
            chunk = os.pread(fd, min(READ_SIZE, stop - pos), pos)
            if not chunk:
                stop = pos = end
                break
            h.update(chunk)
            pos += len(chunk)
        out.append(h.digest())
        if pos >= end:
            return b"".join(out)


def coreutils_line(hexdigest: str, name: str) -> str:
    """One line as GNU coreutils prints it, escaping backslash and newline in names."""
    if "\\" in name or "\n" in name or "\r" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{hexdigest}  {escaped}\n"
    return f"{hexdigest}  {name}\n"
