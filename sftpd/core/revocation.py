"""Revoked keys and certificates, as OpenSSH's ``RevokedKeys`` reads them: a KRL (the
binary key revocation list ``ssh-keygen -k`` writes, OpenSSH's PROTOCOL.krl) or a text
file of public keys, one per line.

Plain Python on key blobs (the SSH wire encoding of a public key), so the rules are
tested without asyncssh; sftpd/ssh/connection.py asks before it admits a key or a
certificate. :class:`RevokedKeysFile` rereads the file when it changes and, like sshd,
refuses every key while it cannot read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sftpd.revocation")

KRL_MAGIC = b"SSHKRL\n\0"
KRL_FORMAT_VERSION = 1
_CERTIFICATES, _EXPLICIT_KEY, _SHA1, _SIGNATURE, _SHA256, _EXTENSION = 1, 2, 3, 4, 5, 255
_SERIAL_LIST, _SERIAL_RANGE, _SERIAL_BITMAP, _KEY_ID, _CERT_EXTENSION = (
    0x20, 0x21, 0x22, 0x23, 0x39,
)  # fmt: skip


class RevocationError(ValueError):
    """The revoked-keys file cannot be read as a KRL or as a list of keys."""


@dataclass
class _ByCa:
    """Certificates revoked for one CA (or, under the empty blob, for any CA)."""

    serials: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    bitmaps: list[tuple[int, int]] = field(default_factory=list)  # (offset, bits)
    key_ids: set[str] = field(default_factory=set)

    def has_serial(self, serial: int) -> bool:
        return (
            serial in self.serials
            or any(lo <= serial <= hi for lo, hi in self.ranges)
            or any(serial >= off and (bits >> (serial - off)) & 1 for off, bits in self.bitmaps)
        )


@dataclass
class Revocations:
    """What one revoked-keys file revokes."""

    keys: set[bytes] = field(default_factory=set)
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)
    certs: dict[bytes, _ByCa] = field(default_factory=dict)
    everything: bool = False  # the file cannot be read: refuse every key, as sshd does

    def key_revoked(self, blob: bytes) -> bool:
        """Whether the plain key ``blob`` is revoked."""
        return (
            self.everything
            or blob in self.keys
            or hashlib.sha256(blob).digest() in self.sha256
            or hashlib.sha1(blob, usedforsecurity=False).digest() in self.sha1  # KRL format
        )

    def cert_revoked(self, cert: bytes, key: bytes, ca: bytes, serial: int, key_id: str) -> str:
        """Why certificate ``cert`` (of ``key``, signed by ``ca``) is revoked ("" if it is
        not). Serial 0 is what a CA writes when it numbers nothing, so it is never matched
        by serial (as in OpenSSH); the key id still is."""
        if cert in self.keys or self.key_revoked(key):
            return "key revoked"
        if self.key_revoked(ca):
            return "certificate authority revoked"
        for scope in (ca, b""):
            by_ca = self.certs.get(scope)
            if by_ca is None:
                continue
            if key_id in by_ca.key_ids:
                return "certificate key id revoked"
            if serial and by_ca.has_serial(serial):
                return "certificate serial revoked"
        return ""


class _Reader:
    """SSH wire types from a bytes buffer; every overrun is a RevocationError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def __bool__(self) -> bool:
        return self.pos < len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RevocationError("KRL is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def boolean(self) -> bool:
        return self.byte() != 0


def _extension(body: _Reader, where: str) -> None:
    """Skip an extension unless it is critical (which no reader can skip safely)."""
    name, critical = body.string(), body.boolean()
    body.string()
    if critical:
        raise RevocationError(f"KRL has a critical {where} extension {name[:64]!r}")


def _certificates(data: bytes, out: Revocations) -> None:
    body = _Reader(data)
    ca = body.string()
    body.string()  # reserved
    by_ca = out.certs.setdefault(ca, _ByCa())
    while body:
        kind, sub = body.byte(), _Reader(body.string())
        if kind == _SERIAL_LIST:
            while sub:
                by_ca.serials.add(sub.uint64())
        elif kind == _SERIAL_RANGE:
            lo, hi = sub.uint64(), sub.uint64()
            if lo > hi:
                raise RevocationError("KRL has a serial range whose end is below its start")
            by_ca.ranges.append((lo, hi))
        elif kind == _SERIAL_BITMAP:
            offset = sub.uint64()
            bits = int.from_bytes(sub.string(), "big", signed=True)
            if bits < 0:
                raise RevocationError("KRL has a negative serial bitmap")
            by_ca.bitmaps.append((offset, bits))
        elif kind == _KEY_ID:
            while sub:
                by_ca.key_ids.add(sub.string().decode("utf-8", "replace"))
        elif kind == _CERT_EXTENSION:
            _extension(sub, "certificate")
        else:
            raise RevocationError(f"KRL has an unknown certificate section {kind:#x}")


def parse_krl(data: bytes) -> Revocations:
    """A KRL's revocations; RevocationError if it is malformed or signed (OpenSSH 9.4 and
    later refuse signed KRLs too: nothing checks their signatures)."""
    r = _Reader(data)
    if r.take(len(KRL_MAGIC)) != KRL_MAGIC:
        raise RevocationError("not a KRL")
    if r.uint32() != KRL_FORMAT_VERSION:
        raise RevocationError("KRL format version is not 1")
    r.uint64(), r.uint64(), r.uint64()  # krl_version, generated_date, flags
    r.string(), r.string()  # reserved, comment
    out = Revocations()
    while r:
        kind = r.byte()
        if kind == _SIGNATURE:
            raise RevocationError("signed KRLs are not supported (nor by OpenSSH 9.4+)")
        section = _Reader(r.string())
        if kind == _CERTIFICATES:
            _certificates(section.data, out)
        elif kind in (_EXPLICIT_KEY, _SHA1, _SHA256):
            target = {_EXPLICIT_KEY: out.keys, _SHA1: out.sha1, _SHA256: out.sha256}[kind]
            while section:
                target.add(section.string())
        elif kind == _EXTENSION:
            _extension(section, "KRL")
        else:
            raise RevocationError(f"KRL has an unknown section {kind}")
    return out


#: Whether a line is a whole public key or certificate (sftpd/ssh/trust.py decodes it).
LineCheck = Callable[[str], bool]


def parse_key_list(text: str, is_key: LineCheck | None = None) -> Revocations:
    """Public keys one per line (``TYPE BASE64 [comment]``; ``#`` comments and blank lines
    skipped). A certificate's line revokes that certificate. Any other line (a key cut
    short, a wrapped paste) makes the whole list unreadable: the blob must name the line's
    type, and ``is_key`` must accept the line."""
    out = Revocations()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            blob = base64.b64decode(words[1], validate=True)
            kind = _Reader(blob).string()
        except (IndexError, binascii.Error, RevocationError):
            kind, blob = b"", b""
        if kind != words[0].encode() or (is_key is not None and not is_key(line)):
            raise RevocationError(f"line {number} is not a public key")
        out.keys.add(blob)
    return out


def parse_revoked(data: bytes, is_key: LineCheck | None = None) -> Revocations:
    """A KRL, or else a text list of public keys."""
    if data.startswith(KRL_MAGIC):
        return parse_krl(data)
    try:
        return parse_key_list(data.decode("ascii"), is_key)
    except UnicodeDecodeError:
        raise RevocationError("neither a KRL nor a list of public keys") from None


class RevokedKeysFile:
    """``revoked_keys``: read at start (a bad file stops the server there), then reread
    whenever its size, inode or modification time changes, so a revocation takes effect
    at the next login on every worker and node that reads the same file. While it cannot
    be read, every key and certificate is refused (logged once per change)."""

    def __init__(self, path: Path, is_key: LineCheck | None = None) -> None:
        self.path, self._is_key = path, is_key
        self._stamp: tuple[int, int, int] | None = None
        self._current = Revocations()
        self._error = ""
        self._load()
        if self._current.everything:
            raise RevocationError(self._error)

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return
            self._current = parse_revoked(self.path.read_bytes(), self._is_key)
            self._stamp = stamp
            log.info("revoked keys loaded", extra={"path": str(self.path)})
        except (OSError, RevocationError) as exc:
            self._error = f"cannot read revoked keys {self.path}: {exc}"
            if not self._current.everything:
                log.error("refusing every key", extra={"error": self._error})
            self._current, self._stamp = Revocations(everything=True), None

    def current(self) -> Revocations:
        self._load()
        return self._current
