"""Confinement: resolve a client's virtual path inside one home, race-free.

Every lookup walks the path one component at a time from a directory file
descriptor of the home, opening each directory with ``O_NOFOLLOW``; symlinks
are read and expanded by this code, never by the kernel. ``..`` pops the stack
of directories already opened, so it can never climb above the home, and a
component swapped for a symlink between a check and its use makes the
``O_NOFOLLOW`` open fail instead of leading out.

Two kinds of path meet here, with different rules:

* paths sent by the client are *virtual*: ``/`` is the home, and ``..`` at the
  home stays at the home, like ``chroot``;
* symlink targets found on disk are *physical*: a relative target may move
  around inside the home, but one that climbs above it, or any absolute target
  (only a process outside sftpd can write one, see :func:`link_target_for_disk`),
  is refused with :class:`OutsideHome`.

A shared folder is mounted at a top-level name of the tree (``/team``): walking
into that name continues from the folder's own root fd, ``..`` from its root
returns to the home's root, and a symlink inside it may not climb above the
folder's root, exactly as one in the home may not climb above the home. The
mount point itself resolves like the home's root (``name == "."``), so it can be
neither removed nor renamed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sftpd.core.errors import (
    InvalidName,
    LinkLoop,
    NotADirectory,
    NotFound,
    OutsideHome,
    from_oserror,
)
from sftpd.core.uploads import is_temp

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_SYMLINKS = 40

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Location:
    """Where a virtual path leads: a directory fd and a name inside it.

    ``name`` is ``"."`` when the path is a directory already opened (the home
    itself, or a path ending in ``..``). ``parts`` are the virtual components
    of the resolved location, so ``vpath`` is its canonical virtual path.
    The fd is only valid inside the ``Jail.locate`` block that produced it.
    """

    dir_fd: int
    name: str
    parts: tuple[str, ...]
    mount: str | None = None  # the top-level name of the folder it is in; None: the home

    @property
    def vpath(self) -> str:
        return "/" + "/".join(self.parts)

    @property
    def parent_parts(self) -> tuple[str, ...]:
        return self.parts[:-1] if self.name != "." else self.parts


def split_path(path: str) -> list[str]:
    """Split a virtual path into components, refusing NUL and over-long input."""
    if "\0" in path:
        raise InvalidName("invalid file name: contains a NUL byte")
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise InvalidName("invalid file name: path too long")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise InvalidName("invalid file name: name too long")
    return parts


def lexical_parts(base: tuple[str, ...], target: str) -> list[str] | None:
    """Resolve ``target`` against ``base`` lexically; None if it climbs above the root."""
    parts = [] if target.startswith("/") else list(base)
    for part in split_path(target):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


def link_target_for_disk(link_parent: tuple[str, ...], target: str) -> str:
    """Turn a client's symlink target into the relative target stored on disk.

    Absolute virtual targets become relative to the link's directory, so a link
    on disk never names a server path and points inside the home for any
    process that follows it. A relative target that climbs above the home is
    refused.
    """
    if not target:
        raise InvalidName("invalid file name: empty link target")
    resolved = lexical_parts(link_parent, target)
    if resolved is None:
        raise OutsideHome("permission denied: link target is outside the home directory")
    if not target.startswith("/"):
        split_path(target)
        return target
    common = 0
    while (
        common < len(link_parent)
        and common < len(resolved)
        and link_parent[common] == resolved[common]
    ):
        common += 1
    rel = [".."] * (len(link_parent) - common) + resolved[common:]
    return "/".join(rel) or "."


class Jail:
    """A user's home and mounted folders, opened once; every path operation starts from
    one of their fds."""

    def __init__(self, home: str, mounts: Mapping[str, str] | None = None) -> None:
        """``mounts``: top-level name in the tree -> the folder's server directory."""
        self._mounts: dict[str, int] = {}
        try:
            self._root_fd = os.open(home, _DIR_FLAGS)
            for name, path in (mounts or {}).items():
                self._mounts[name] = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            self.close()
            raise from_oserror(exc) from None

    def close(self) -> None:
        for fd in [self._root_fd, *self._mounts.values()]:
            if fd >= 0:
                os.close(fd)
        self._root_fd = -1
        self._mounts.clear()

    @property
    def mounts(self) -> dict[str, int]:
        """Top-level name -> the folder root's fd (valid until :meth:`close`)."""
        return self._mounts

    @property
    def root_fd(self) -> int:
        return self._root_fd

    @contextmanager
    def locate(self, path: str, *, follow: bool = True) -> Iterator[Location]:
        """Resolve ``path``; with ``follow``, a final symlink is followed too.

        Every directory on the way must exist; the final component need not.
        """
        stack: list[tuple[str, int]] = []
        pending = split_path(path)
        pending.reverse()
        links = 0
        final = "."
        try:
            while pending:
                part = pending.pop()
                if is_temp(part):  # an upload in progress: not there for clients
                    raise NotFound()
                if part == "..":
                    if stack:
                        os.close(stack.pop()[1])
                    continue
                cur = stack[-1][1] if stack else self._root_fd
                if not stack and part in self._mounts:
                    stack.append((part, os.dup(self._mounts[part])))
                    continue
                if not pending:
                    target = self._link_target(cur, part) if follow else None
                    if target is None:
                        final = part
                        break
                else:
                    fd = self._open_dir(cur, part)
                    if fd >= 0:
                        stack.append((part, fd))
                        continue
                    target = self._link_target(cur, part)
                    if target is None:  # swapped back to a directory: look again
                        pending.append(part)
                        links += 1
                        if links > MAX_SYMLINKS:
                            raise LinkLoop()
                        continue
                links += 1
                if links > MAX_SYMLINKS:
                    raise LinkLoop()
                mount = stack[0][0] if stack and stack[0][0] in self._mounts else None
                depth = len(stack) - (1 if mount else 0)  # below the home or the folder root
                if target.startswith("/") or lexical_parts(("",) * depth, target) is None:
                    raise OutsideHome("permission denied: link points outside the home directory")
                pending.extend(reversed(split_path(target)))
            parts = tuple(name for name, _ in stack)
            if final != ".":
                parts += (final,)
            # The mount point itself was pushed like a directory: final is ".", as at the root.
            mount = parts[0] if stack and parts[0] in self._mounts else None
            yield Location(stack[-1][1] if stack else self._root_fd, final, parts, mount)
        finally:
            for _, fd in stack:
                os.close(fd)

    @staticmethod
    def _open_dir(cur: int, name: str) -> int:
        """Open a directory below ``cur`` without following it; -1 if it is a symlink."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=cur)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):  # maybe a symlink
                raise from_oserror(exc) from None
        try:
            st = os.stat(name, dir_fd=cur, follow_symlinks=False)
        except OSError as exc:
            raise from_oserror(exc) from None
        if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
            return -1  # a symlink, or a race: the caller looks again
        raise NotADirectory()

    @staticmethod
    def _link_target(cur: int, name: str) -> str | None:
        """The target of ``name`` if it is a symlink, else None (also when absent)."""
        try:
            return os.readlink(name, dir_fd=cur)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink
                return None
            raise from_oserror(exc) from None


def require_exists(loc: Location) -> os.stat_result:
    """lstat the location, raising NotFound when it is absent."""
    try:
        return os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound() from None
    except OSError as exc:
        raise from_oserror(exc) from None
