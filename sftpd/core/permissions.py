"""Who may do what where: a user's permission set, and overrides per virtual directory.

A permission applies to the entries of a directory: creating a file in ``/drop``
needs ``upload`` in ``/drop``; listing ``/drop`` needs ``list`` there; removing
``/drop`` itself needs ``rmdir`` in ``/``. A directory's set is the override of
the longest configured path that contains it (component-wise, never a string
prefix: ``/rep`` does not cover ``/reports``), else the user's own set. An
override replaces the user's set below it, it does not add to it.

Checks use the canonical virtual path a request resolved to (after symlinks),
so a link cannot carry an operation into a directory with other rules. Rules are
keyed on paths, so the other routes to the same bytes are closed where they
start (``core/session.py``; docs/access.md "Every route"): a directory that
carries or contains a rule cannot be renamed, replaced or removed
(:meth:`Permissions.guards`); a move or hard link between directories with
different sets needs what a copy would need; a handle without access flags
reads; link targets cannot climb (``core/jail.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from sftpd.core.errors import PermissionDenied

PERMISSIONS = (
    "list",  # list a directory, stat or readlink its entries
    "download",  # read a file (also: checksum commands and check-file)
    "upload",  # create a file
    "overwrite",  # write to an existing file: replace, resume, append, truncate
    "delete",  # remove a file or symlink
    "rename",  # rename from or into the directory
    "mkdir",  # create a directory
    "rmdir",  # remove an (empty) directory
    "symlink",  # create a symlink or a hard link
    "chmod",  # change permission bits
    "chtimes",  # change access and modification times
)
ALL = frozenset(PERMISSIONS)


class NotPermitted(PermissionDenied):
    """The user's permissions refuse an operation; the message names what and where."""


def parse_permissions(text: str) -> frozenset[str]:
    """``"list,download"`` -> that set; ``"all"`` or ``"*"`` -> every permission;
    ``"none"`` -> nothing. ValueError names an unknown permission."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words in (["all"], ["*"]):
        return ALL
    if words == ["none"]:
        return frozenset()
    unknown = [w for w in words if w not in ALL]
    if unknown or not words:
        what = f"unknown permission {unknown[0]!r}" if unknown else "no permissions given"
        raise ValueError(f"{what}: use all, none or a list of {','.join(PERMISSIONS)}")
    return frozenset(words)


def format_permissions(perms: frozenset[str]) -> str:
    if perms == ALL:
        return "all"
    return ",".join(p for p in PERMISSIONS if p in perms) or "none"


def normalize_dir(path: str) -> tuple[str, ...]:
    """A configured virtual directory as components; ValueError for ``..`` or a relative path."""
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must be absolute (start with /)")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"path {path!r} must not contain '..'")
    return parts


@dataclass(frozen=True)
class Permissions:
    """A user's set and the overrides below virtual directories, longest first."""

    default: frozenset[str] = ALL
    paths: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, default: str | None, paths: Iterable[tuple[str, str]] = ()) -> Permissions:
        """From stored text; ValueError on anything malformed."""
        rules = [(normalize_dir(p), parse_permissions(perms)) for p, perms in paths]
        rules.sort(key=lambda rule: len(rule[0]), reverse=True)
        return cls(ALL if default is None else parse_permissions(default), tuple(rules))

    @functools.cached_property
    def has_opaque(self) -> bool:
        """Whether some directory allows nothing at all (see :meth:`require_visible`)."""
        return not self.default or any(not perms for _, perms in self.paths)

    def require_visible(self, directory: tuple[str, ...]) -> None:
        """A directory that allows nothing, and has no rule below it that allows
        something, is opaque: no lookup inside it, so neither an error (no such file,
        not a directory) nor ``realpath`` tells what it holds."""
        if self.has_opaque and not self.at(directory) and not self._opened_below(directory):
            where = "/" + "/".join(directory)
            raise NotPermitted(f"permission denied: nothing is allowed in {where}")

    def _opened_below(self, directory: tuple[str, ...]) -> bool:
        n = len(directory)
        return any(len(path) > n and path[:n] == directory and perms for path, perms in self.paths)

    @property
    def unrestricted(self) -> bool:
        return self.default == ALL and all(perms == ALL for _, perms in self.paths)

    def at(self, directory: tuple[str, ...]) -> frozenset[str]:
        """The permissions for entries of ``directory`` (virtual components)."""
        for parts, perms in self.paths:
            if directory[: len(parts)] == parts:
                return perms
        return self.default

    def guards(self, parts: tuple[str, ...]) -> bool:
        """Whether ``parts`` carries a rule or lies above one: renaming, replacing or
        removing it would move the rule's content away from the rule's path."""
        return any(path[: len(parts)] == parts for path, _ in self.paths)

    def require(self, permission: str, directory: tuple[str, ...]) -> None:
        """Raise :class:`NotPermitted` unless ``permission`` holds in ``directory``."""
        if permission not in self.at(directory):
            where = "/" + "/".join(directory)
            raise NotPermitted(f"permission denied: {permission} not allowed in {where}")


UNRESTRICTED = Permissions()
