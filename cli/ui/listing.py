"""The two sides a pane can show, behind one interface: the local disk and a remote
:class:`~cli.remote.Remote`. Rows are sorted directories first, then by name."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import posixpath
import shutil
import stat
import time
from dataclasses import dataclass
from typing import Protocol

from cli.remote import Remote, safe_name
from sftpd.sizes import format_size


@dataclass(frozen=True)
class Row:
    name: str
    is_dir: bool
    size: int
    mtime: float

    @property
    def size_text(self) -> str:
        return "<DIR>" if self.is_dir else format_size(self.size)

    @property
    def mtime_text(self) -> str:
        """As ``ls -l``: the time within the last half year, else the year (12 columns)."""
        if not self.mtime:
            return ""
        recent = abs(time.time() - self.mtime) < 182 * 86400
        return time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", time.localtime(self.mtime))


def arrange(rows: list[Row], pattern: str = "") -> list[Row]:
    """Directories first, then by name; ``pattern`` keeps names that contain it (or match
    it, if it has wildcards), case-insensitively."""
    if pattern:
        p = pattern.lower()
        wild = any(c in p for c in "*?[")
        rows = [
            r for r in rows if (fnmatch.fnmatch(r.name.lower(), p) if wild else p in r.name.lower())
        ]
    return sorted(rows, key=lambda r: (not r.is_dir, r.name.lower(), r.name))


class Side(Protocol):
    """What a pane browses: paths are absolute and in the side's own syntax."""

    @property
    def label(self) -> str: ...
    @property
    def cwd(self) -> str: ...
    async def rows(self, path: str) -> list[Row]: ...
    async def cd(self, path: str) -> str: ...
    def join(self, *parts: str) -> str: ...
    def parent(self, path: str) -> str: ...
    async def mkdir(self, path: str) -> None: ...
    async def rename(self, old: str, new: str) -> None: ...
    async def delete(self, path: str) -> None: ...


class LocalSide:
    def __init__(self, cwd: str) -> None:
        self.cwd = os.path.abspath(cwd)
        self.label = "local"

    async def rows(self, path: str) -> list[Row]:
        return await asyncio.to_thread(_local_rows, path)

    async def cd(self, path: str) -> str:
        target = os.path.abspath(path)
        if not os.path.isdir(target):
            raise NotADirectoryError(f"not a directory: {path}")
        os.listdir(target)  # readable: fail here, not in the listing
        self.cwd = target
        return target

    def join(self, *parts: str) -> str:
        return os.path.normpath(os.path.join(*parts))

    def parent(self, path: str) -> str:
        return os.path.dirname(path.rstrip(os.sep)) or os.sep

    async def mkdir(self, path: str) -> None:
        os.mkdir(path)

    async def rename(self, old: str, new: str) -> None:
        if os.path.isdir(new):
            new = os.path.join(new, os.path.basename(old))
        if os.path.lexists(new):
            raise FileExistsError(f"{new} already exists")
        os.rename(old, new)

    async def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            await asyncio.to_thread(shutil.rmtree, path)
        else:
            os.unlink(path)


def _local_rows(path: str) -> list[Row]:
    rows = []
    with os.scandir(path) as it:
        for e in it:
            try:
                st = e.stat()
            except OSError:  # a dangling symlink: show it, as ls does
                st = e.stat(follow_symlinks=False)
            rows.append(Row(e.name, stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime))
    return rows


class RemoteSide:
    def __init__(self, remote: Remote, label: str) -> None:
        self.remote = remote
        self.label = label

    @property
    def cwd(self) -> str:
        return self.remote.cwd

    async def rows(self, path: str) -> list[Row]:
        return [
            Row(e.name, e.is_dir, e.size, float(e.attrs.mtime or 0))
            for e in await self.remote.listdir(path)
            if safe_name(e.name)  # a hostile server's "../x" is not shown, so not used
        ]

    async def cd(self, path: str) -> str:
        return await self.remote.cd(path)

    def join(self, *parts: str) -> str:
        return posixpath.normpath(posixpath.join(*parts))

    def parent(self, path: str) -> str:
        return posixpath.dirname(path.rstrip("/")) or "/"

    async def mkdir(self, path: str) -> None:
        await self.remote.mkdir(path)

    async def rename(self, old: str, new: str) -> None:
        if await self.remote.is_dir(new):
            new = posixpath.join(new, posixpath.basename(old))
        if await self.remote.sftp.exists(new):
            raise FileExistsError(f"{new} already exists")
        await self.remote.rename(old, new)

    async def delete(self, path: str) -> None:
        await self.remote.remove(path, recursive=True)
