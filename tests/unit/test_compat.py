"""Guards for every use of asyncssh internals (sftpd/ssh/compat.py, docs/asyncssh.md).

The source of each asyncssh function sftpd overrides, forks or hooks is pinned by
hash: an asyncssh upgrade that changes one fails here, with the name to re-read,
instead of silently changing what sftpd does.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import asyncssh
import pytest

from sftpd.ssh import compat
from sftpd.ssh.sftp import SftpdHandler
from tests.support import Serve, known_hosts, run
from tests.support.live import LiveServer, User

ROOT = Path(__file__).resolve().parents[2]

#: asyncssh function -> sha256 of its source (first 16 hex digits), asyncssh 2.24.1.
PINNED = {
    # 2. sftpd/ssh/channels.py replaces its stream setup (compat.binary_streams)
    "stream.SSHServerStreamSession.session_started": "9baa3d185c0a7fb2",
    # 3. compat.fast_send drops the IGNORE it sends via self.send_packet, and does its work
    # (framing, sequence and rekey counts) for our AEAD ciphers
    "connection.SSHConnection.send_packet": "fb9da7bec6dd395a",
    "connection.SSHConnection._send": "c6698a37eb80f574",
    # 4. compat.client_extended_request
    "sftp.SFTPClientHandler._make_request": "89d230f05bd86d76",
    # 5. compat.use_fast_ciphers replaces ChachaEncryption and GCMEncryption in the table
    # these read (sftpd/ssh/chacha.py and gcm.py implement their methods)
    "encryption.ChachaEncryption": "5902581e97e59135",
    "encryption.GCMEncryption": "d255f9e6b1fa73ee",
    "encryption.get_encryption": "23e1cd4df063d09b",
    "encryption.get_encryption_params": "94d714f8def4ae22",
    # 6. compat.quiet_logging guards these (and must see every caller of hide_empty log)
    "logging.SSHLogger.log": "508a0a50623f9179",
    "logging.SSHLogger.packet": "a4baf6329fa97dcf",
    "packet.SSHPacketLogger._log_packet": "f3263d7da93663f1",
    "misc.hide_empty": "c3b01c4b0c24f957",
    # 7. compat.growing_window wraps the first and third, raises what the second reads and
    # sends the adjust the second sends (from a timer, while _recv_state is "open": the
    # long-link test fails if it never is), and reads the input buffer the fourth leaves
    "channel.SSHChannel._accept_data": "33121e9e185c9850",
    "channel.SSHChannel._deliver_data": "bd94ccbaa59ab510",
    "channel.SSHChannel.pause_reading": "ff124e389999452f",
    "connection.SSHConnection._recv_packet": "b3daa22e9763eee9",
    # 8. compat.sliced_input wraps the first and third; the second and fourth slice the
    # input buffer it hands them (_recv_packet is pinned above, for hook 7)
    "connection.SSHConnection.data_received": "b2d14a83b2604db6",
    "connection.SSHConnection._recv_data": "fc4e0735191bb0fd",
    "connection.SSHConnection._recv_pkthdr": "7adc4d88fe20593c",
    # 9. compat.chained_logins wraps the first two per connection (ServerAuth.send_success
    # calls the first; ServerAuth.__init__ keeps the method name it reads), relies on the
    # failure listing get_supported_server_auth_methods, and re-opens the service request
    # the third accepts once
    "connection.SSHConnection.send_userauth_success": "812e749ee2432e4b",
    "connection.SSHConnection.send_userauth_failure": "30f1eb63d0cb74c9",
    "connection.SSHConnection._process_service_request": "faadd33529d2bc93",
    "auth.ServerAuth.send_success": "a425bc98b9ecc35e",
    "auth.ServerAuth.__init__": "ff793e0163031a9d",
    "auth.get_supported_server_auth_methods": "8484ed020351243a",
    # 10. compat.certificate_check wraps the first per connection (the second calls it for
    # every OpenSSH certificate); certificate_info reads what the third stores privately
    "connection.SSHServerConnection._validate_openssh_certificate": "056062c844e4c716",
    "connection.SSHServerConnection._validate_client_certificate": "a49c71b2c2c1f917",
    "public_key.SSHOpenSSHCertificate.__init__": "6862316a1716fd45",
    # 11. compat.channel_data_now does what the second, third and fourth do for a reply
    # the channel can send whole (window, packet size, send state, the channel number)
    "sftp.SFTPServerHandler.send_packet": "0c22ab5cc5f282e9",
    "channel.SSHChannel.write": "1045e20008469933",
    "channel.SSHChannel._flush_send_buf": "3f11e9dc27c58b18",
    "channel.SSHChannel.send_packet": "00e81b763c8f3dd2",
    # 1. SftpdHandler overrides these or calls them from its overrides
    "sftp.SFTPServerHandler.__init__": "c6d824a26f61232e",
    "sftp.SFTPServerHandler._process_packet": "4e7c6b60e5c9dd26",
    "sftp.SFTPServerHandler._cleanup": "620706aba4753e82",
    "sftp.SFTPServerHandler._process_limits": "62a6a3cb0ec8ec7c",
    "sftp.SFTPServerHandler._process_open": "de593bd0384f9f49",
    "sftp.SFTPServerHandler._process_opendir": "edbe8f8a79909dda",
    "sftp.SFTPServerHandler._process_write": "8057f08f13ae0d06",
    "sftp.SFTPServerHandler._process_copy_data": "824ca5831c170628",
}


def _resolve(dotted: str) -> Any:
    if dotted in compat.REPLACED:  # asyncssh's own, even once a server here replaced it
        return compat.REPLACED[dotted]
    module, *attrs = dotted.split(".")
    obj: Any = importlib.import_module(f"asyncssh.{module}")
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj


@pytest.mark.parametrize("name", sorted(PINNED))
def test_asyncssh_internals_are_the_ones_the_hooks_were_written_for(name: str) -> None:
    source = inspect.getsource(_resolve(name))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == PINNED[name], (
        f"asyncssh changed {name}: re-read it against sftpd/ssh/compat.py and the "
        "SftpdHandler, then update the pin"
    )


def test_every_override_of_the_sftp_handler_is_pinned() -> None:
    base = asyncssh.sftp.SFTPServerHandler
    overridden = {
        f"sftp.SFTPServerHandler.{n}"
        for n, v in vars(SftpdHandler).items()
        if (callable(v) and hasattr(base, n) and not n.startswith("__")) or n == "__init__"
    }
    assert overridden - PINNED.keys() == set()


def test_the_installed_asyncssh_is_the_tested_series() -> None:
    assert compat.version_is_tested(), asyncssh.__version__
    assert compat.version_is_tested("2.24.9")
    assert not compat.version_is_tested("2.25.0")
    assert not compat.version_is_tested("2.240.1")


def test_only_compat_imports_asyncssh_internals() -> None:
    offenders = []
    for path in [*ROOT.glob("sftpd/**/*.py"), *ROOT.glob("cli/**/*.py")]:
        if path == ROOT / "sftpd" / "ssh" / "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            bad = [n for n in names if n.startswith("asyncssh.")]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in bad]
    assert offenders == []


async def _packets_sent(patch: bool, requests: int) -> int:
    """Packets an asyncssh client sends for ``requests`` SFTP stats over AES-GCM."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], sftp_factory=True,
        server_factory=lambda: _NoAuth(), gss_host=None,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="u", known_hosts=None, client_keys=None,
            agent_path=None, encryption_algs=["aes128-gcm@openssh.com"],
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            if patch:
                compat.fast_send(conn)
            before = conn._send_seq
            for _ in range(requests):
                await sftp.stat(".")
            return int(conn._send_seq - before)
    finally:
        server.close()
        await server.wait_closed()


class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False


async def test_the_ignore_hook_still_halves_the_packets() -> None:
    """If asyncssh stopped routing its IGNORE through send_packet, this would see 2x."""
    plain = await _packets_sent(False, 50)
    patched = await _packets_sent(True, 50)
    assert plain >= 100, plain  # asyncssh still sends an IGNORE before each packet
    assert patched <= 60, patched


async def test_binary_streams_and_extended_requests_work_end_to_end(tmp_path: Path) -> None:
    """Hooks 2 and 4 against a real sftpd: check-file-name goes out through compat and
    its answer comes back on streams set up by compat.binary_streams."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(tmp_path / "id"))
    key.write_public_key(str(tmp_path / "id.pub"))
    assert run(tmp_path, "user", "add", "cara", "--key", str(tmp_path / "id.pub")).returncode == 0
    server = Serve(tmp_path, "--no-demo", "--workers", "1")
    try:
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="cara", client_keys=[str(tmp_path / "id")],
            known_hosts=str(known_hosts(tmp_path, server.port)), agent_path=None,
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            async with sftp.open("f", "wb") as f:
                await f.write(b"hello\n")
            packet = await compat.client_extended_request(
                sftp, b"check-file-name", compat.String(b"f"), compat.String(b"sha256"),
                compat.UInt64(0), compat.UInt64(0), compat.UInt32(0),
            )  # fmt: skip
            packet.get_string()
            assert packet.get_string() == b"sha256"
            assert packet.get_remaining_payload() == hashlib.sha256(b"hello\n").digest()
    finally:
        server.stop()


def test_quiet_logging_formats_only_lines_that_are_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    compat.quiet_logging()
    formatted = []

    class Attrs:
        def __str__(self) -> str:
            formatted.append(1)
            return "size=1"

    log = asyncssh.logging.sftp_logger
    shown = asyncssh.sftp.hide_empty  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO, logger="asyncssh")
    log.debug1("open %s%s", b"f", shown(Attrs()))
    assert formatted == [] and caplog.records == []
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    log.debug1("open %s%s", b"f", shown(Attrs()))
    assert [r.getMessage() for r in caplog.records] == ["open f, size=1"]


def test_every_hide_empty_result_goes_only_to_a_log_call() -> None:
    """quiet_logging makes ``hide_empty`` lazy: safe only while asyncssh's SFTP module uses
    its result as a log argument and nowhere else."""
    tree = ast.parse(inspect.getsource(importlib.import_module("asyncssh.sftp")))
    in_log, uses = 0, 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            is_log = isinstance(func, ast.Attribute) and func.attr.startswith("debug")
            for arg in node.args:
                if (
                    isinstance(arg, ast.Call)
                    and isinstance(arg.func, ast.Name)
                    and arg.func.id == "hide_empty"
                ):
                    in_log += is_log
        if isinstance(node, ast.Name) and node.id == "hide_empty":
            uses += 1
    assert in_log > 0
    assert uses == in_log  # every name use is an argument of a debug line


class _Conn:
    """What ``SSHConnection.send_packet`` reads and calls on its connection, after keys
    and login, sending through ``encryption`` (asyncssh's path is the reference)."""

    def __init__(self, encryption: Any, blocksize: int) -> None:
        self._auth_complete = self._kex_complete = True
        self._rekey_bytes, self._rekey_bytes_sent = 1 << 30, 0
        self._rekey_seconds, self._rekey_time = 3600.0, time.monotonic() + 3600
        self._send_encryption, self._send_blocksize = encryption, blocksize
        self._send_enchdrlen = 1  # an AEAD cipher: the length is not part of the padding
        self._compressor, self._compress_after_auth = None, False
        self._send_seq, self._strict_kex = 7, False
        self._deferred_packets: list[object] = []
        self.logger = logging.getLogger("asyncssh")
        self.sent: list[bytes] = []
        self.kexinits = 0

    def _send(self, data: bytes) -> None:
        self.sent.append(data)

    def _send_kexinit(self) -> None:
        self.kexinits += 1

    def log_sent_packet(self, *_: object) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return "aead"

    def send_packet(self, pkttype: int, *args: bytes, **kw: Any) -> None:
        if pkttype == asyncssh.constants.MSG_IGNORE and args == (asyncssh.packet.String(b""),):
            return  # the empty IGNOREs fast_send drops too
        asyncssh.connection.SSHConnection.send_packet(self, pkttype, *args, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
)
def test_fast_send_puts_the_same_bytes_on_the_wire_as_asyncssh(
    cipher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte (padding made deterministic), with the same sequence numbers and
    rekey count, for channel packets of every size; and a packet it must not handle
    (a login packet, a rekey due) goes through asyncssh's own path."""
    from asyncssh import encryption

    monkeypatch.setattr("os.urandom", lambda n: bytes(range(n)))
    name = cipher.encode()
    theirs_class = {"chacha20-poly1305@openssh.com": encryption.ChachaEncryption}.get(
        cipher, encryption.GCMEncryption
    )
    compat.use_fast_ciphers()
    ours_class, cipher_name = encryption._enc_params[name]
    assert ours_class is not theirs_class and hasattr(ours_class, "seal")
    key_size, iv_size, blocksize, *_ = encryption.get_encryption_params(name)
    key, iv = os.urandom(key_size), bytes(reversed(range(iv_size)))
    reference = _Conn(theirs_class.new(cipher_name, key, iv), blocksize)
    fast = _Conn(ours_class.new(cipher_name, key, iv), blocksize)
    compat.fast_send(fast)  # type: ignore[arg-type]
    packets: list[tuple[int, list[bytes]]] = [
        (94, [b"\0\0\0\1", asyncssh.packet.String(b"x" * n)])
        for n in (0, 1, 3, 15, 16, 17, 100, 4096, 32768)
    ]
    packets += [(93, [b"\0\0\0\1", b"\0\1\0\0"]), (52, []), (94, [b"\0\0\0\2", b""])]
    for pkttype, args in packets:
        reference.send_packet(pkttype, *args)
        fast.send_packet(pkttype, *args)
        fast.send_packet(asyncssh.constants.MSG_IGNORE, asyncssh.packet.String(b""))
    assert fast.sent == reference.sent and len(fast.sent) == len(packets)
    assert (fast._send_seq, fast._rekey_bytes_sent) == (reference._send_seq,
                                                        reference._rekey_bytes_sent)  # fmt: skip
    fast._rekey_bytes_sent = reference._rekey_bytes_sent = 1 << 30  # a rekey is due
    reference.send_packet(94, b"\0\0\0\1", b"")
    fast.send_packet(94, b"\0\0\0\1", b"")
    assert fast.kexinits == reference.kexinits == 1 and fast.sent == reference.sent


class _Sink(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """A session that reads everything it is sent, its window growing (compat hook 7)."""

    channels: ClassVar[list[_Sink]] = []

    def __init__(self, start: int, limit: int) -> None:
        self.limit, self.received, self.seen = limit, 0, [start]
        self.pause_at = 0  # pause reading once this much has come (0: never)
        self.close_at = 0  # close the channel once this much has come (0: never)

    def connection_made(self, chan: Any) -> None:
        compat.growing_window(chan, self.limit)
        self.chan = chan
        _Sink.channels.append(self)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.received += len(data)
        self.seen.append(self.chan._init_recv_window)
        if self.close_at and self.received >= self.close_at:
            self.close_at = 0
            asyncio.get_running_loop().call_soon(self.chan.close)  # after the edge's accept
        if self.pause_at and self.received >= self.pause_at:
            self.pause_at = 0  # just after the edge: the loop's next turn, before STALL
            asyncio.get_running_loop().call_soon(self.chan.pause_reading)

    def shell_requested(self) -> bool:
        return True


async def _until(condition: Any, what: str, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds, failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class _SinkServer(_NoAuth):
    def __init__(self, start: int, limit: int) -> None:
        self.start, self.limit = start, limit

    def session_requested(self) -> _Sink:
        return _Sink(self.start, self.limit)


async def _send_through(rtt_ms: float, start: int, limit: int, total: int) -> _Sink:
    """``total`` bytes over one channel whose server window starts at ``start``, through a
    relay that delays each direction by half of ``rtt_ms`` (0: directly)."""
    from bench.relay import serve

    _Sink.channels = []
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=lambda: _SinkServer(start, limit),
        window=start, gss_host=None, line_editor=False,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    relay = await serve(0, port, rtt_ms) if rtt_ms else None
    try:
        async with asyncssh.connect(
            "127.0.0.1", relay.sockets[0].getsockname()[1] if relay else port, username="u",
            known_hosts=None, client_keys=None, agent_path=None,
        ) as conn:  # fmt: skip
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, encoding=None)
            chan.write(bytes(total))
            await _until(lambda: _Sink.channels, "the session")
            sink = _Sink.channels[0]
            await _until(lambda: sink.received >= total, "all data at the server")
            chan.close()
    finally:
        if relay:
            relay.close()
        server.close()
        await server.wait_closed()
    return sink


async def test_the_window_grows_on_a_long_link_up_to_its_limit() -> None:
    """Through a 40 ms round trip the sender waits on every window: it grows eightfold each
    time, 32 KiB to the 2 MiB limit and never past it, and without the next data to say so
    (the adjust goes out STALL after the edge)."""
    sink = await _send_through(40, 32 * 1024, 2 * 1024 * 1024, 24 * 1024 * 1024)
    grown = sorted(set(sink.seen))
    assert grown == [32 * 1024, 256 * 1024, 2 * 1024 * 1024], grown


async def test_no_window_adjust_after_the_server_closes_the_channel() -> None:
    """A server that closes its channel just as the sender stalls at the window's edge
    sends nothing more on it: the grow timer (STALL later, before the peer's CLOSE can
    come back over a 40 ms round trip) finds the channel closing. (Review: an adjust after
    CLOSE makes OpenSSH drop the whole connection.)"""
    from bench.relay import serve

    window = 65536
    key = asyncssh.generate_private_key("ssh-ed25519")
    _Sink.channels = []
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], line_editor=False,
        server_factory=lambda: _SinkServer(window, 1 << 20), window=window, gss_host=None,
    )  # fmt: skip
    relay = await serve(0, server.sockets[0].getsockname()[1], 40)
    try:
        async with asyncssh.connect(
            "127.0.0.1", relay.sockets[0].getsockname()[1], username="u", known_hosts=None,
            client_keys=None, agent_path=None,
        ) as conn:  # fmt: skip
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, encoding=None)
            await _until(lambda: _Sink.channels, "the session")
            sink = _Sink.channels[0]
            sent: list[tuple[int, bool]] = []
            send = sink.chan.send_packet

            def recording(pkttype: int, *args: Any) -> None:
                sent.append((pkttype, sink.chan._send_state in ("close_pending", "closed")))
                send(pkttype, *args)

            sink.chan.send_packet = recording
            sink.close_at = window
            chan.write(bytes(window))  # to the edge, where the server closes
            await _until(lambda: any(t == 97 for t, _ in sent), "the server's CLOSE")
            await asyncio.sleep(0.05)  # ten times STALL: the timer has fired
            assert [t for t, closing in sent if closing and t == 93] == [], sent
    finally:
        relay.close()
        server.close()
        await server.wait_closed()


async def test_a_slow_reader_never_grows_the_window() -> None:
    """A sender held back because this side stopped reading (the channel paused) is the
    reader being slow, not the link being long: however long the sender waited, the window
    stays put when reading resumes."""
    window = 65536
    key = asyncssh.generate_private_key("ssh-ed25519")
    _Sink.channels = []
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], line_editor=False,
        server_factory=lambda: _SinkServer(window, 1 << 20), window=window, gss_host=None,
    )  # fmt: skip
    try:
        async with asyncssh.connect(
            "127.0.0.1", server.sockets[0].getsockname()[1], username="u", known_hosts=None,
            client_keys=None, agent_path=None,
        ) as conn:  # fmt: skip
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, encoding=None)
            await _until(lambda: _Sink.channels, "the session")
            sink = _Sink.channels[0]
            sink.pause_at = window  # the reader falls behind as the sender reaches the edge
            chan.write(bytes(window))
            await _until(lambda: sink.received >= window, "the first window at the server")
            await asyncio.sleep(0.05)  # the wait under test: ten times STALL
            sink.chan.resume_reading()
            for _ in range(3):
                sink.chan.pause_reading()
                chan.write(bytes(3 * window - 1000))  # more than the window: the sender waits
                await asyncio.sleep(0.05)  # ten times STALL, at the window's edge
                sink.chan.resume_reading()
            await _until(lambda: sink.received >= 10 * window - 3000, "all data at the server")
            assert set(sink.seen) == {window}
            chan.close()
    finally:
        server.close()
        await server.wait_closed()


class _Hasher(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """A session that hashes what it receives and notes the input buffer's type (hook 8)."""

    sessions: ClassVar[list[_Hasher]] = []

    def __init__(self) -> None:
        self.digest, self.received = hashlib.sha256(), 0
        self.views: list[bool] = []
        _Hasher.sessions.append(self)

    def connection_made(self, chan: Any) -> None:
        self.conn = chan._conn

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.digest.update(data)
        self.received += len(data)
        self.views.append(isinstance(self.conn._inpbuf, memoryview))

    def shell_requested(self) -> bool:
        return True


class _HashServer(_NoAuth):
    conns: ClassVar[list[asyncssh.SSHServerConnection]] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        compat.sliced_input(conn)
        _HashServer.conns.append(conn)

    def session_requested(self) -> _Hasher:
        return _Hasher()


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com"),
        ("chacha20-poly1305@openssh.com", "chacha20-poly1305@openssh.com"),
        ("aes128-ctr", "aes128-ctr"),
        ("aes256-gcm@openssh.com", "aes128-ctr"),  # a rekey away from a cipher that views
        ("aes128-ctr", "chacha20-poly1305@openssh.com"),  # and to one
        ("aes256-gcm@openssh.com", "aes128-cbc"),
    ],
)
async def test_sliced_input_reads_every_byte_through_rekeys(first: str, then: str) -> None:
    """8 MiB in odd-sized writes, the client rekeying every 256 KiB (and, halfway, to the
    second cipher, which the server then prefers): the server gets every byte in order,
    reading its input through views exactly while an AEAD cipher of ours decrypts it."""
    compat.use_fast_ciphers()
    _Hasher.sessions, _HashServer.conns = [], []
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=_HashServer, gss_host=None,
        line_editor=False, encoding=None,
    )  # fmt: skip
    data = os.urandom(8 << 20)
    try:
        async with asyncssh.connect(
            "127.0.0.1", server.sockets[0].getsockname()[1], username="u", known_hosts=None,
            client_keys=None, agent_path=None, encryption_algs=list(dict.fromkeys((first, then))),
            rekey_bytes=256 << 10,
            mac_algs=["hmac-sha2-256-etm@openssh.com"],
        ) as conn:  # fmt: skip
            writer, _, _ = await conn.open_session(encoding=None)
            await _until(lambda: _Hasher.sessions, "the session")
            sink, pos, size = _Hasher.sessions[0], 0, 1
            while pos < len(data):
                if pos >= len(data) // 2:
                    _HashServer.conns[0]._enc_algs = [then.encode()]  # the next rekey switches
                size = size * 7 % 100_003 + 1  # 1 byte to ~100 KB, no two alike in a row
                writer.write(data[pos : pos + size])
                pos += size
                await writer.drain()
            await _until(lambda: sink.received >= len(data), "all data at the server")
            assert sink.digest.digest() == hashlib.sha256(data).digest()
            half = len(sink.views) // 2
            viewed = [c.startswith(("aes128-gcm", "aes256-gcm", "chacha")) for c in (first, then)]
            assert any(sink.views[: half // 2]) == viewed[0]
            assert any(sink.views[-half // 2 :]) == viewed[1]
            assert conn.get_extra_info("send_cipher") == then
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("pktsize", "window", "queued"),
    [
        (32768, 2 << 20, False),  # OpenSSH's size: a 32 KiB READ reply is two packets
        (1000, 2 << 20, False),  # many packets per message, cut inside the header too
        (32768, 100_000, True),  # a window smaller than two messages: asyncssh queues some
    ],
)
async def test_replies_sent_without_copies_arrive_whole(
    live_server: LiveServer, user: User, monkeypatch: pytest.MonkeyPatch,
    pktsize: int, window: int, queued: bool,
) -> None:  # fmt: skip
    """Files of sizes around the packet size and the window, written, then read back with
    large and odd blocks and many requests in flight, arrive byte for byte; hook 11
    carried sftpd's replies, and asyncssh's path carried those the client's window could
    not take whole at once."""
    taken: list[bool] = []

    def counted(writer: Any, parts: tuple[bytes, ...]) -> bool:
        taken.append(real(writer, parts))
        return taken[-1]

    real = compat.channel_data_now
    monkeypatch.setattr(compat, "channel_data_now", counted)
    sizes = [0, 1, 987, 999, 1000, 1001, 32755, 32768, 32769, 65536 + 13, 300_001, 1 << 20]
    files = {f"f{n}": os.urandom(n) for n in sizes}
    async with live_server.connect(user, max_pktsize=pktsize, window=window) as conn:
        async with conn.start_sftp_client() as sftp:
            for name, data in files.items():
                async with sftp.open(name, "wb", block_size=100_003, max_requests=16) as f:
                    await f.write(data)
                assert (user.home / name).read_bytes() == data, name
                for block in (32768, 100_003, 256 << 10):
                    async with sftp.open(name, "rb", block_size=block, max_requests=16) as f:
                        assert await f.read() == data, (name, block)
            assert sorted(await sftp.listdir(".")) == sorted([".", "..", *files])
    assert True in taken
    assert (False in taken) == queued
