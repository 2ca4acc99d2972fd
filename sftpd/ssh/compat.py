"""Every use of asyncssh internals, in one place, written for one asyncssh series.

sftpd and xfer reach past asyncssh's public API in eleven ways, each listed in
docs/asyncssh.md and guarded by tests/unit/test_compat.py (which pins the source
of every asyncssh function these rely on, so an upgrade that changes one fails
the suite instead of silently changing behaviour):

1. the SFTP server handler subclass (``sftpd/ssh/sftp.py``) builds on
   :class:`SFTPServerHandler`'s packet table and private ``_process_*`` methods;
2. :func:`binary_streams` replaces the stream setup of
   ``SSHServerStreamSession.session_started``, so channel dispatch is ours;
3. :func:`fast_send` wraps ``send_packet``: no empty IGNOREs, and our AEAD ciphers seal a
   connection-layer packet with one copy in and one out;
4. :func:`client_extended_request` sends an SFTP extension asyncssh's client lacks;
5. :func:`use_fast_ciphers` puts ``sftpd/ssh/chacha.py`` and ``gcm.py`` in asyncssh's
   cipher table in place of its chacha20-poly1305 and AES-GCM shims;
6. :func:`quiet_logging` makes asyncssh format log arguments only for lines it writes;
7. :func:`growing_window` lets a channel's receive window grow on a long link;
8. :func:`sliced_input` gives the receive path views of its input, not copies;
9. :func:`chained_logins` answers a login step that is not the last with partial success;
10. :func:`certificate_check` shows sftpd each user certificate before asyncssh admits it;
11. :func:`send_whole` sends an SFTP reply as channel data without asyncssh's copies.

No other module imports an asyncssh submodule (a test checks that too).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sys
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
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
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_IGNORE,
)
from asyncssh.packet import SSHPacket, String, UInt32, UInt64
from asyncssh.public_key import CERT_TYPE_USER
from asyncssh.sftp import SFTPHandler, SFTPLimits, SFTPServerHandler
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from sftpd.core.certs import Certificate

__all__ = [
    "ASYNCSSH_SERIES", "FXP_EXTENDED_REPLY", "FXP_NAME", "FXP_OPEN", "FXP_OPENDIR",
    "FXP_SYMLINK", "FXP_WRITE", "SFTPHandler", "SFTPLimits", "SFTPServerHandler", "SSHPacket",
    "SSHReader", "SSHServerStreamSession", "SSHWriter", "String", "UInt32", "UInt64",
    "binary_streams", "channel_data_now", "client_extended_request", "fast_send",
    "growing_window", "packets_logged", "send_whole", "use_fast_ciphers", "version_is_tested",
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


# -- 3. the send path: no empty IGNOREs, one copy per packet -----------------------------

_EMPTY_IGNORE = String(b"")
_AUTH_LAST = 79  # MSG_USERAUTH_LAST: connection-layer packets come after


def fast_send(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
) -> None:
    """Send the connection's packets with less work than ``SSHConnection.send_packet``.

    - No empty MSG_IGNORE before every packet unless the cipher is CBC: asyncssh inserts
      one (a countermeasure against the 2008 plaintext-recovery attack on CBC modes); with
      AES-GCM, chacha20-poly1305 or AES-CTR it protects nothing and doubles the packets,
      encryptions and sends of a transfer (OpenSSH sends none). About 17% less server CPU
      on a 1 GiB download.
    - With one of our AEAD ciphers (:func:`use_fast_ciphers`), a connection-layer packet
      (channel data, window adjusts, ...) once keys and login are done is framed and sealed
      with one copy of its payload into the cipher and one out, where asyncssh copies a
      32 KiB packet about seven times (type byte, padding, slicing off the tag, header and
      tag joins). Anything else (key exchange, login, a rekey that is due, compression,
      packet-level debug logging) takes asyncssh's own path, which stays the reference.
    """
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        seal = getattr(conn._send_encryption, "seal", None)
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_IGNORE,)
            and not kwargs
            and (seal is not None or "cbc" not in str(conn.get_extra_info("send_cipher", "cbc")))
        ):
            return
        if (
            seal is None
            or pkttype <= _AUTH_LAST
            or not (conn._kex_complete and conn._auth_complete)
            or conn._compressor is not None
            or conn._rekey_bytes_sent >= conn._rekey_bytes
            or (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
            or packets_logged(conn)
        ):
            send(pkttype, *args, **kwargs)
            return
        size = 1 + sum(map(len, args))  # the type byte and the payload
        pad = -(conn._send_enchdrlen + size) % conn._send_blocksize
        if pad < 4:
            pad += conn._send_blocksize
        seq = conn._send_seq
        packet = b"".join((bytes((pad, pkttype)), *args, os.urandom(pad)))
        conn._send(seal(seq, len(packet).to_bytes(4, "big"), packet))
        conn._send_seq = (seq + 1) & 0xFFFFFFFF
        conn._rekey_bytes_sent += len(packet)

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


# -- 5. faster AEAD ciphers -------------------------------------------------------------

CHACHA = b"chacha20-poly1305@openssh.com"
GCM = (b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com")


def use_fast_ciphers() -> str:
    """Make new connections (server and client, in this process) use sftpd's
    chacha20-poly1305@openssh.com and AES-GCM; returns which chacha20 implementation is in
    use (``"native"``, the C accelerator, or ``"python"``).

    asyncssh looks the class up in ``encryption._enc_params`` each time it sets up keys
    (``get_encryption``, ``get_encryption_params``); only the class changes, so which
    algorithms are offered, and in what order, stays as it was.
    """
    from sftpd.ssh.chacha import FastChachaEncryption, implementation
    from sftpd.ssh.gcm import FastGcmEncryption

    params = _encryption._enc_params
    if CHACHA in params:
        params[CHACHA] = (FastChachaEncryption, params[CHACHA][1])  # type: ignore[assignment]
    for name in GCM:
        if name in params:
            params[name] = (FastGcmEncryption, params[name][1])  # type: ignore[assignment]
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
    if packets_logged(self):
        _log_packet(self, *args)


def packets_logged(handler: Any) -> bool:
    """Whether asyncssh would write a line for each packet ``handler`` (a channel, an
    SFTP handler) sends: the packet-level debug log."""
    return bool(_logging.SSHLogger._debug_level >= 3 and handler.logger.isEnabledFor(logging.DEBUG))


def quiet_logging() -> None:
    """Skip the work asyncssh does for a log line before it asks whether the line is
    logged: its ``SSHLogger.log`` converts every argument, ``_log_packet`` names and
    counts every packet for a level-3 debug line, and the SFTP handlers format a request's
    attributes (``hide_empty``) for a debug line. With logging on, the same lines result."""
    _logging.SSHLogger.log = _log_if_enabled  # type: ignore[method-assign]
    _packet.SSHPacketLogger._log_packet = _log_packet_if_enabled  # type: ignore[method-assign,assignment]
    _sftp.hide_empty = _Shown  # type: ignore[attr-defined,assignment]


# -- 7. a receive window that grows on a long link ----------------------------------------

#: A channel idle this long after its sender ran out of window was held by the round trip.
STALL = 0.005
#: How much one stall multiplies the window by.
GROWTH = 8


def _input_waiting(chan: asyncssh.SSHServerChannel[bytes]) -> bool:
    """Whether the connection has bytes this side has not parsed yet: in asyncssh's input
    buffer (the rest of a read, after the packet being handled) or in the socket."""
    conn = chan._conn
    if conn._inpbuf:
        return True
    sock = conn._transport.get_extra_info("socket") if conn._transport else None
    try:
        n = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0") if sock else b"\0" * 4
    except OSError:
        return False
    return int.from_bytes(n, sys.byteorder) > 0


def growing_window(chan: asyncssh.SSHServerChannel[bytes], limit: int) -> None:
    """Grow ``chan``'s receive window (x :data:`GROWTH`, up to ``limit``) while the window
    holds the sender back on a long link: this side read everything up to the edge of the
    window it had granted (senders fill the window they have to the byte, then wait), and
    then nothing came for :data:`STALL`. The sender is waiting for an adjust still on its
    way: a round trip longer than the time to fill the window, which a larger window fills.
    The window grows then and its adjust goes out at once (waiting for the next data to
    arrive cost a round trip per growth). Where this side is the slower one, the data that
    the adjust released is already queued when the edge is reached (parsed or in the
    socket), and a reader that pauses the channel is waited for, not the link; neither
    grows the window, which stays at its start. A server busy elsewhere for 5 ms just after
    an edge can still grow one; the limit bounds that. (hpn-ssh grows its windows from the
    kernel's TCP buffers instead; the relay of ``bench.wan`` hides the delay from TCP, and
    so would any user-space proxy.)

    asyncssh counts the window down in ``SSHChannel._accept_data`` and, in
    ``_deliver_data``, sends an adjust back up to ``_init_recv_window`` once half is used;
    ``grow`` raises that value and sends the adjust the way ``_deliver_data`` does.
    """
    accept, pause = chan._accept_data, chan.pause_reading
    received, starved = 0, None
    edges: deque[int] = deque([chan._recv_window], maxlen=8)  # the last windows granted

    def grow() -> None:
        nonlocal starved
        starved = None
        if (
            chan._recv_paused
            or chan._init_recv_window >= limit
            or chan._recv_state != "open"
            or chan._send_state in ("close_pending", "closed")  # nothing after our CLOSE
        ):
            return
        chan._init_recv_window = min(limit, GROWTH * chan._init_recv_window)
        log.debug("channel window grown", extra={"window": chan._init_recv_window})
        if chan._recv_window < chan._init_recv_window / 2:  # as _deliver_data would, now
            chan.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(
                chan._init_recv_window - chan._recv_window))  # fmt: skip
            chan._recv_window = chan._init_recv_window

    def _accept_data(data: bytes, datatype: int | None = None) -> None:
        nonlocal received, starved
        if not data:
            return accept(data, datatype)
        if starved is not None:
            starved.cancel()  # data came within STALL: the link kept up
            starved = None
        if received + chan._recv_window != edges[-1]:  # an adjust sent on resume
            edges.append(received + chan._recv_window)
        received += len(data)
        accept(data, datatype)
        if received + chan._recv_window != edges[-1]:
            edges.append(received + chan._recv_window)
        if received in edges and not chan._recv_paused and not _input_waiting(chan):
            starved = asyncio.get_running_loop().call_later(STALL, grow)  # sender stopped here

    def pause_reading() -> None:
        nonlocal starved
        if starved is not None:
            starved.cancel()  # waiting for this side now, not for the link
            starved = None
        pause()

    chan._accept_data = _accept_data  # type: ignore[method-assign]
    chan.pause_reading = pause_reading  # type: ignore[method-assign]


# -- 8. the receive path: views of the input, not copies ----------------------------------


def sliced_input(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
) -> None:
    """Let asyncssh slice its input buffer without copying it, under our AEAD ciphers.

    ``SSHConnection`` keeps what it has received in ``_inpbuf`` (bytes) and, for every
    packet, slices off the header, then the body and tag, and keeps the rest with
    ``_inpbuf = _inpbuf[n:]``: a copy of everything still unread, twice a packet. A 256 KiB
    read holding eight 32 KiB packets was copied about eight times over. Here, while one of
    our AEAD ciphers decrypts (their ``decrypt_packet`` takes any buffer), the buffer is a
    memoryview: the same slices, no copies. A key exchange can bring a cipher that wants
    bytes in the middle of a read (the peer's NEWKEYS and the packets after it), so the
    view is turned back into bytes before the first header such a cipher reads.
    """
    from sftpd.ssh.chacha import FastChachaEncryption
    from sftpd.ssh.gcm import FastGcmEncryption

    receive, header = conn.data_received, conn._recv_pkthdr
    views = (FastChachaEncryption, FastGcmEncryption)

    def data_received(data: bytes, datatype: Any = None) -> None:
        kept: bytes | memoryview = conn._inpbuf
        if type(conn._recv_encryption) in views:  # type: ignore[comparison-overlap]
            conn._inpbuf = memoryview(b"".join((kept, data)) if kept else data)  # type: ignore[assignment]
            conn._recv_data()
            return
        if isinstance(kept, memoryview):
            conn._inpbuf = kept.tobytes()
        receive(data, datatype)

    def recv_pkthdr() -> bool:
        kept: bytes | memoryview = conn._inpbuf
        if isinstance(kept, memoryview) and type(conn._recv_encryption) not in views:  # type: ignore[comparison-overlap]
            conn._inpbuf = kept.tobytes()
        return header()

    conn.data_received = data_received  # type: ignore[method-assign]
    conn._recv_pkthdr = recv_pkthdr  # type: ignore[method-assign]


# -- 9. chained logins: partial success ---------------------------------------------------


def chained_logins(conn: asyncssh.SSHServerConnection, complete: Callable[[str], bool]) -> None:
    """Answer a successful login method with partial success (RFC 4252 section 5.1) unless
    ``complete(method)`` says the login is now complete (``method``: asyncssh's name for
    it, e.g. ``"publickey"``, ``"keyboard-interactive"``).

    asyncssh has no server API for chained methods: every method that validates calls
    ``ServerAuth.send_success``, which calls the connection's ``send_userauth_success``.
    Wrapped here, a step that is not the last sends ``send_userauth_failure(True)``
    instead, which lists the methods still supported (asyncssh asks the server object's
    ``*_auth_supported`` for them) with the partial-success flag, and clears the method in
    progress, as a failure does; the client goes on with the next method.

    After any failure (partial or not) the ``ssh-userauth`` service may be requested again:
    paramiko sends a SERVICE_REQUEST before each method it tries, which asyncssh accepts
    only once (``_process_service_request`` clears ``_next_service``) and answers a second
    time with a disconnect; OpenSSH's sshd accepts it while the login is not done. So
    paramiko's ``auth_password`` then ``auth_interactive`` (or a key that fails, then a
    password) works on one connection.
    """
    succeed, fail = conn.send_userauth_success, conn.send_userauth_failure

    def send_userauth_failure(partial_success: bool) -> None:
        fail(partial_success)
        conn._next_service = b"ssh-userauth"  # reset to None by a success

    async def send_userauth_success() -> None:
        name: bytes = getattr(conn._auth, "_method", b"")  # a ServerAuth's method name
        method = name.decode("ascii", "replace")
        if complete(method):
            await succeed()
        else:
            conn.send_userauth_failure(True)

    conn.send_userauth_success = send_userauth_success  # type: ignore[method-assign]
    conn.send_userauth_failure = send_userauth_failure  # type: ignore[method-assign]


# -- 10. user certificates: the whole certificate for sftpd's checks -------------------------


def certificate_info(cert: asyncssh.SSHCertificate) -> Certificate:
    """The fields of an OpenSSH certificate sftpd decides on (asyncssh keeps the serial,
    key id, type and validity private)."""
    c: Any = cert
    networks = c.options.get("source-address") or ()
    return Certificate(
        blob=bytes(c.public_data),
        key=bytes(c.key.public_data),
        ca=bytes(c.signing_key.public_data),
        user_cert=c._cert_type == CERT_TYPE_USER,
        serial=int(c._serial),
        key_id=str(c._key_id),
        principals=tuple(c.principals),
        valid_after=int(c._valid_after),
        valid_before=int(c._valid_before),
        force_command=c.options.get("force-command"),
        source_address=tuple(str(n) for n in networks),
    )


def certificate_check(
    conn: asyncssh.SSHServerConnection,
    check: Callable[[str, Certificate], Awaitable[bool]],
) -> None:
    """Ask ``check(username, certificate)`` about every OpenSSH user certificate offered,
    before asyncssh's own checks (which then ask ``SSHServer.validate_ca_key``, then check
    type, principal, validity and source-address again, and the signature).

    asyncssh's public hook, ``validate_ca_key``, sees only the signing key: not the
    serial, key id or certified key a revocation list names, nor the principals and
    options sftpd refuses with a reason of its own. It calls the wrapped method for every
    certificate, both when it is offered and when it is signed.
    """
    validate = conn._validate_openssh_certificate

    async def validate_certificate(username: str, cert: Any) -> asyncssh.SSHKey | None:
        if not await check(username, certificate_info(cert)):
            return None
        return await validate(username, cert)

    conn._validate_openssh_certificate = validate_certificate  # type: ignore[method-assign]


# -- 11. an SFTP reply straight onto the channel -------------------------------------------


def channel_data_now(writer: SSHWriter[bytes], parts: tuple[bytes, ...]) -> bool:
    """Send ``parts`` (one whole SFTP message, length first) as channel data now, without
    copying them: True if sent, False (nothing sent) if the channel must queue them.

    asyncssh's way (``SFTPHandler.send_packet``, then ``SSHChannel.write``,
    ``_flush_send_buf`` and ``SSHChannel.send_packet``) copies a reply five times before
    the connection frames it: joining the type byte, the length, into the channel's
    bytearray, the data string, and the channel number. Here the parts go to the
    connection as they are, cut into packets of the peer's maximum size by memoryview.
    Only when that is all asyncssh would do: the channel open for sending, nothing queued
    on it, and the peer's window holding the whole message; otherwise the caller takes
    asyncssh's path, which queues the rest until the window opens.
    """
    chan = writer._chan
    size = sum(map(len, parts))
    if (
        chan._send_state != "open"
        or chan._send_buf
        or size > chan._send_window
        or chan._send_pktsize <= 0  # asyncssh refuses such a channel; never loop on it
        or chan._send_chan is None
        or chan._conn is None
    ):
        return False
    chan._send_window -= size
    send, number, room = chan._conn.send_packet, UInt32(chan._send_chan), chan._send_pktsize
    packet: list[bytes | memoryview] = []
    fill = 0
    for part in parts:
        view, at = memoryview(part), 0
        while at < len(view):
            take = min(room - fill, len(view) - at)
            packet.append(view[at : at + take] if take < len(view) else part)
            fill, at = fill + take, at + take
            if fill == room:
                send(MSG_CHANNEL_DATA, number, UInt32(fill), *packet, handler=chan)  # type: ignore[arg-type]
                packet, fill = [], 0
    if packet:
        send(MSG_CHANNEL_DATA, number, UInt32(fill), *packet, handler=chan)  # type: ignore[arg-type]
    return True


def send_whole(handler: SFTPHandler, pkttype: int, args: tuple[bytes, ...]) -> bool:
    """Send one SFTP message of ``handler`` (server or client; its type and arguments as
    ``SFTPHandler.send_packet`` takes them) through :func:`channel_data_now`: False when
    the caller must take asyncssh's way (nothing sent; packet-level debug logging on, the
    channel closing or not able to take the message whole now)."""
    writer = handler._writer
    if writer is None or packets_logged(writer.channel) or writer.channel.is_closing():
        return False
    head = (1 + sum(map(len, args))).to_bytes(4, "big") + bytes((pkttype,))
    return channel_data_now(writer, (head, *args))
