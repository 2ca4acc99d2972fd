"""Domain errors raised by the core; adapters map them to protocol codes in one table each.

Messages are safe to show to a client: they never contain a server path.
"""

from __future__ import annotations

import errno


class SftpdError(Exception):
    """Base of every error the core reports to a user."""

    default_message = "operation failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(SftpdError):
    default_message = "no such file or directory"


class PermissionDenied(SftpdError):
    default_message = "permission denied"


class OutsideHome(PermissionDenied):
    """A path, link target or rename that would lead out of the user's home."""

    default_message = "permission denied: outside the home directory"


class AlreadyExists(SftpdError):
    default_message = "file already exists"


class NotADirectory(SftpdError):
    default_message = "not a directory"


class IsADirectory(SftpdError):
    default_message = "is a directory"


class DirectoryNotEmpty(SftpdError):
    default_message = "directory not empty"


class InvalidName(SftpdError):
    default_message = "invalid file name"


class LinkLoop(SftpdError):
    default_message = "too many levels of symbolic links"


class InvalidArgument(SftpdError):
    default_message = "invalid argument"


class NoSpace(SftpdError):
    default_message = "no space left on the server's disk"


class QuotaExceeded(SftpdError):
    default_message = "quota exceeded"


class Unsupported(SftpdError):
    default_message = "operation not supported"


_ERRNO_TABLE: dict[int, type[SftpdError]] = {
    errno.ENOENT: NotFound,
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EEXIST: AlreadyExists,
    errno.ENOTDIR: NotADirectory,
    errno.EISDIR: IsADirectory,
    errno.ENOTEMPTY: DirectoryNotEmpty,
    errno.ENAMETOOLONG: InvalidName,
    errno.EILSEQ: InvalidName,
    errno.ELOOP: LinkLoop,
    errno.EINVAL: InvalidArgument,
    errno.EBUSY: PermissionDenied,
    errno.EXDEV: Unsupported,
    errno.ENOSPC: NoSpace,
    errno.EDQUOT: NoSpace,
    errno.EFBIG: InvalidArgument,
    errno.EMLINK: PermissionDenied,
}


def from_oserror(exc: OSError) -> SftpdError:
    """Translate an OSError into a domain error whose message holds no path."""
    cls = _ERRNO_TABLE.get(exc.errno or 0, SftpdError)
    return cls()
