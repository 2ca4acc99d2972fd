"""Hashing for verification: coreutils ``*sum`` lines and the check-file extension.

Hashing is blocking work: callers run :func:`hash_range` in a worker thread
(``hashlib`` releases the GIL on large buffers, so other sessions keep going).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

ALGORITHMS: dict[str, Callable[[], hashlib._Hash]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
READ_SIZE = 1024 * 1024
MIN_BLOCK = 256  # draft-ietf-secsh-filexfer-extensions-00, section 3
KNOWN_DIGESTS = 1024  # whole-file sha256 digests remembered per process
_known: OrderedDict[tuple[int, int, int, int, int], str] = OrderedDict()
_known_lock = threading.Lock()


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The file as hashed: a write, a truncate or a client's setstat of mtime changes
    ctime (which no client can set); so does a rename, so look up before renaming."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def hash_whole(fd: int, algorithm: str) -> bytes:
    """The digest of a whole file; a sha256 is remembered for :func:`known_sha256` when the
    file did not change while it was read. Blocking."""
    before = os.fstat(fd)
    digest = hash_range(fd, algorithm)
    if algorithm == "sha256" and _identity(os.fstat(fd)) == _identity(before):
        with _known_lock:
            _known[_identity(before)] = digest.hex()
            while len(_known) > KNOWN_DIGESTS:
                _known.popitem(last=False)
    return digest


def known_sha256(st: os.stat_result) -> str:
    """The sha256 this process computed of exactly this file content (same inode, size,
    mtime and ctime), or "": an upload event carries it when a client verified its upload
    (xfer)."""
    with _known_lock:
        return _known.get(_identity(st), "")


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
