"""Every use of asyncssh internals, in one place, written for one asyncssh series.

sftpd and xfer reach past asyncssh's public API in six ways, each listed in
docs/asyncssh.md and guarded by tests/unit/test_compat.py (which pins the source
of every asyncssh function these rely on, so an upgrade that changes one fails
the suite instead of silently changing behaviour):

1. the SFTP server handler subclass (``sftpd/ssh/sftp.py``) builds on
   :class:`SFTPServerHandler`'s packet table and private ``_process_*`` methods;
2. :func:`binary_streams` replaces the stream setup of
   ``SSHServerStreamSession.session_started``, so channel dispatch is ours;
3. :func:`skip_cbc_countermeasure` wraps ``send_packet`` to drop empty IGNOREs;
4. :func:`client_extended_request` sends an SFTP extension asyncssh's client lacks;
5. :func:`use_fast_chacha` puts ``sftpd/ssh/chacha.py`` in asyncssh's cipher table in place
   of its chacha20-poly1305 shim;
6. :func:`quiet_logging` makes asyncssh format log arguments only for lines it writes.

No other module imports an asyncssh submodule (a test checks that too).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import asyncssh
from asyncssh import encryption as _encryption
from asyncssh import logging as _logging
from asyncssh import misc as _misc
from asyncssh import packet as _packet
from asyncssh import sftp as _sftp
from asyncssh.constants import (
    FXP_EXTENDED_REPLY,
    FXP_NAME,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_SYMLINK,
    FXP_WRITE,
    MSG_IGNORE,
)
from asyncssh.packet import SSHPacket, String, UInt32, UInt64
from asyncssh.sftp import SFTPHandler, SFTPLimits, SFTPServerHandler
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

__all__ = [
    "ASYNCSSH_SERIES", "FXP_EXTENDED_REPLY", "FXP_NAME", "FXP_OPEN", "FXP_OPENDIR",
    "FXP_SYMLINK", "FXP_WRITE", "SFTPHandler", "SFTPLimits", "SFTPServerHandler", "SSHPacket",
    "SSHReader", "SSHServerStreamSession", "SSHWriter", "String", "UInt32", "UInt64",
    "binary_streams", "client_extended_request",
    "skip_cbc_countermeasure", "use_fast_chacha", "version_is_tested",
]  # fmt: skip

log = logging.getLogger("sftpd.compat")

#: The asyncssh series these hooks were written and tested for (pyproject pins it too).
ASYNCSSH_SERIES = "2.24"


def version_is_tested(version: str = asyncssh.__version__) -> bool:
    """Whether ``version`` belongs to :data:`ASYNCSSH_SERIES`."""
    return version == ASYNCSSH_SERIES or version.startswith(ASYNCSSH_SERIES + ".")


def warn_if_untested() -> None:
    """One warning line at start when asyncssh is not the series the hooks know."""
    if not version_is_tested():
        log.warning(
            "asyncssh version not tested with this sftpd",
            extra={"asyncssh": asyncssh.__version__, "tested": ASYNCSSH_SERIES},
        )


# -- 2. channel streams ------------------------------------------------------------


Streams = tuple[
    "asyncssh.SSHServerChannel[bytes]", SSHReader[bytes], SSHWriter[bytes], SSHWriter[bytes]
]


def binary_streams(session: SSHServerStreamSession[Any]) -> Streams:
    """The channel of a started session and its stdin, stdout and stderr, in bytes.

    What ``SSHServerStreamSession.session_started`` sets up before it dispatches
    to asyncssh's own SFTP/SCP/shell factories; sftpd dispatches itself.
    """
    chan = cast("asyncssh.SSHServerChannel[bytes]", session._chan)
    chan.set_encoding(None)
    session._encoding = None
    stdin: SSHReader[bytes] = SSHReader(session, chan)
    stdout: SSHWriter[bytes] = SSHWriter(session, chan)
    stderr: SSHWriter[bytes] = SSHWriter(session, chan, asyncssh.EXTENDED_DATA_STDERR)
    return chan, stdin, stdout, stderr


# -- 3. no empty IGNORE before every packet -------------------------------------------

_EMPTY_IGNORE = String(b"")


def skip_cbc_countermeasure(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
) -> None:
    """Stop asyncssh sending an empty MSG_IGNORE before every packet, unless CBC is in use.

    asyncssh inserts one ahead of each encrypted packet (``SSHConnection.send_packet``),
    a countermeasure against the 2008 plaintext-recovery attack on CBC modes. With
    AES-GCM, chacha20-poly1305 or AES-CTR it protects nothing and doubles the packets,
    encryptions and sends of every transfer (OpenSSH does not send them). Measured on a
    1 GiB download: about 17% less server CPU. Only those empty IGNOREs are dropped,
    and only when the negotiated cipher is not CBC.
    """
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_IGNORE,)
            and not kwargs
            and "cbc" not in str(conn.get_extra_info("send_cipher", "cbc"))
        ):
            return
        send(pkttype, *args, **kwargs)

    conn.send_packet = send_packet  # type: ignore[method-assign]


# -- 4. SFTP extensions the client API lacks -------------------------------------------


async def client_extended_request(
    sftp: asyncssh.SFTPClient, name: bytes, *fields: bytes
) -> SSHPacket:
    """Send extended request ``name`` with encoded ``fields``; return the reply packet.

    Raises the usual ``asyncssh.SFTPError`` subclasses (``SFTPOpUnsupported`` when the
    server does not know the extension).
    """
    handler = sftp._handler
    handler._return_types = {**handler._return_types, name: FXP_EXTENDED_REPLY}
    packet = await handler._make_request(name, *fields)
    assert isinstance(packet, SSHPacket)
    return packet


# -- 5. a faster chacha20-poly1305 -------------------------------------------------------

CHACHA = b"chacha20-poly1305@openssh.com"


def use_fast_chacha() -> str:
    """Make new connections (server and client, in this process) use sftpd's
    chacha20-poly1305@openssh.com; returns ``"native"`` or ``"python"`` (which one).

    asyncssh looks the class up in ``encryption._enc_params`` each time it sets up keys
    (``get_encryption``, ``get_encryption_params``); only the class changes, so which
    algorithms are offered, and in what order, stays as it was.
    """
    from sftpd.ssh.chacha import FastChachaEncryption, implementation

    params = _encryption._enc_params
    if CHACHA in params:
        params[CHACHA] = (FastChachaEncryption, params[CHACHA][1])  # type: ignore[assignment]
    return implementation()


# -- 6. no log formatting when nothing is logged -----------------------------------------


class _Shown:
    """``hide_empty(value)`` formatted only if a log line is written."""

    __slots__ = ("prefix", "value")

    def __init__(self, value: object, prefix: str = ", ") -> None:
        self.value, self.prefix = value, prefix

    def __str__(self) -> str:
        return _hide_empty(self.value, self.prefix)


_hide_empty = _misc.hide_empty
_log = _logging.SSHLogger.log
_log_packet = _packet.SSHPacketLogger._log_packet


#: What :func:`quiet_logging` replaces, as asyncssh wrote it (the pins read these).
REPLACED: dict[str, object] = {
    "logging.SSHLogger.log": _log,
    "packet.SSHPacketLogger._log_packet": _log_packet,
}


def _log_if_enabled(
    self: _logging.SSHLogger, level: int, msg: object, *args: Any, **kw: Any
) -> None:
    if self.isEnabledFor(level):
        _log(self, level, msg, *args, **kw)


def _log_packet_if_enabled(self: _packet.SSHPacketLogger, *args: Any) -> None:
    if _logging.SSHLogger._debug_level >= 3 and self.logger.isEnabledFor(logging.DEBUG):
        _log_packet(self, *args)


def quiet_logging() -> None:
    """Skip the work asyncssh does for a log line before it asks whether the line is
    logged: its ``SSHLogger.log`` converts every argument, ``_log_packet`` names and
    counts every packet for a level-3 debug line, and the SFTP handlers format a request's
    attributes (``hide_empty``) for a debug line. With logging on, the same lines result."""
    _logging.SSHLogger.log = _log_if_enabled  # type: ignore[method-assign]
    _packet.SSHPacketLogger._log_packet = _log_packet_if_enabled  # type: ignore[method-assign,assignment]
    _sftp.hide_empty = _Shown  # type: ignore[attr-defined,assignment]
