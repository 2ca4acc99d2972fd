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
  around inside the home, but one that climbs above it, or an absolute target
  outside the tree's own root (only a process outside sftpd can write one), is
  refused with :class:`OutsideHome`.

Links sftpd writes cannot climb, for any process that follows them, now or after
any later rename (:meth:`Jail.disk_target`): a target below the link's own
directory is stored relative with no ``..`` at all; any other target is stored
as the absolute server path of what it names, with no ``..`` either. Followed by
the kernel, every step of such a link goes down from a real directory of the
tree or restarts at the tree's root, so it never leaves it; a client's
``d/up/../x`` (where ``d/up`` is a link to ``..``) is resolved lexically when the
link is made, as SFTPGo does, instead of physically by whoever follows it later.
``readlink`` turns a stored absolute target back into a path relative to the
link, so clients never see a server path.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    def is_root(self) -> bool:
        """The home's root or a folder's mount point: not the user's to change."""
        return self.name == "." and len(self.parts) == (1 if self.mount else 0)

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


def relative_to(base: tuple[str, ...], parts: Sequence[str]) -> str:
    """The relative path from the directory ``base`` to ``parts`` (both virtual)."""
    common = 0
    while common < len(base) and common < len(parts) and base[common] == parts[common]:
        common += 1
    return "/".join([".."] * (len(base) - common) + list(parts[common:])) or "."


class Jail:
    """A user's home and mounted folders, opened once; every path operation starts from
    one of their fds."""

    def __init__(self, home: str, mounts: Mapping[str, str] | None = None) -> None:
        """``mounts``: top-level name in the tree -> the folder's server directory."""
        self._mounts: dict[str, int] = {}
        #: Called with a directory's virtual parts before any name is looked up in it; it
        #: raises to make the directory opaque (the session refuses ``none`` directories, so
        #: no error tells what exists inside one).
        self.barrier: Callable[[tuple[str, ...]], None] | None = None
        # The server paths of the roots, for absolute link targets (see disk_target).
        self._roots = {None: os.path.abspath(home)} | {
            name: os.path.abspath(path) for name, path in (mounts or {}).items()
        }
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
                if self.barrier is not None:
                    self.barrier(tuple(name for name, _ in stack))
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
                if target.startswith("/"):  # restart at the tree's root
                    tail = self._beneath_root(mount, target)
                    while len(stack) > (1 if mount else 0):
                        os.close(stack.pop()[1])
                    pending.extend(reversed(tail))
                elif lexical_parts(("",) * depth, target) is None:
                    raise OutsideHome("permission denied: link points outside the home directory")
                else:
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

    def _beneath_root(self, mount: str | None, target: str) -> list[str]:
        """The components of an absolute link target below its tree's root (the home or
        the folder the link is in); OutsideHome for anything else."""
        root = self._roots[mount]
        if target != root and not target.startswith(root.rstrip("/") + "/"):
            raise OutsideHome("permission denied: link points outside the home directory")
        parts = split_path(target[len(root) :])
        if ".." in parts:  # never written by sftpd: refuse rather than guess
            raise OutsideHome("permission denied: link points outside the home directory")
        return parts

    def disk_target(self, loc: Location, target: str) -> str:
        """What to store on disk for a client's link ``target`` at ``loc``: a form no
        process following it can climb out of, now or after any rename.

        The target is resolved lexically against the link's directory (``..`` pops a
        component; above the root is refused). Below the link's own directory it is
        stored relative without ``..``; elsewhere as the server path of what it names.
        """
        if not target:
            raise InvalidName("invalid file name: empty link target")
        base = loc.parent_parts
        resolved = lexical_parts(base, target)
        if resolved is None:
            raise OutsideHome("permission denied: link target is outside the home directory")
        if tuple(resolved[: len(base)]) == base:
            return "/".join(resolved[len(base) :]) or "."
        tail = resolved[1:] if loc.mount else resolved
        return os.path.join(self._roots[loc.mount], *tail)

    def client_target(self, loc: Location, stored: str) -> str:
        """A link's stored target as the client may see it: a relative path, never a
        server path; OutsideHome if it leads out of the link's tree."""
        base = loc.parent_parts
        if stored.startswith("/"):
            tail = self._beneath_root(loc.mount, stored)
            return relative_to(base, ((loc.mount,) if loc.mount else ()) + tuple(tail))
        depth = len(base) - (1 if loc.mount else 0)
        if lexical_parts(("",) * depth, stored) is None:
            raise OutsideHome("permission denied: link points outside the home directory")
        return stored

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
