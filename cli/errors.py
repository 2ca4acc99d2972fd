"""Exit codes (the one table) and the mapping from failures to one clear line."""

from __future__ import annotations

import asyncssh

OK = 0
REMOTE = 1  # a remote operation failed: no such file, permission denied...
USAGE = 2
AUTH = 3
CONNECT = 4  # cannot connect, or a host key problem
QUOTA = 5
CHECKSUM = 6
INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 remote operation failed; 2 usage error; 3 authentication failed; "
    "4 cannot connect / host key problem; 5 quota exceeded; 6 checksum mismatch; "
    "130 interrupted."
)


class XferError(Exception):
    """A failure with its exit code; ``str()`` is the one line shown to the user."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_quota_error(exc: BaseException) -> bool:
    if isinstance(exc, asyncssh.SFTPQuotaExceeded):
        return True
    return isinstance(exc, asyncssh.SFTPError) and "quota exceeded" in str(exc.reason).lower()


def from_exception(exc: BaseException, what: str = "") -> XferError:
    """Map an asyncssh or OS error to an XferError; ``what`` names the path or target."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, XferError):
        return exc
    if is_quota_error(exc):
        reason = exc.reason if isinstance(exc, asyncssh.SFTPError) else str(exc)
        return XferError(QUOTA, f"{prefix}{reason}")
    if isinstance(exc, asyncssh.SFTPError):
        return XferError(REMOTE, f"{prefix}{exc.reason}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return XferError(AUTH, f"{prefix}authentication failed ({exc.reason})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return XferError(CONNECT, f"{prefix}host key not verified: {exc.reason}")
    if isinstance(exc, asyncssh.DisconnectError):
        return XferError(CONNECT, f"{prefix}disconnected: {exc.reason}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) and not isinstance(
        exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    ):
        return XferError(CONNECT, f"{prefix}cannot connect: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return XferError(REMOTE, f"{prefix}{exc.strerror or exc}")
    return XferError(REMOTE, f"{prefix}{exc}")
