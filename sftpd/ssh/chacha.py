"""chacha20-poly1305@openssh.com, faster than asyncssh's shim (the cipher a default OpenSSH
client picks first).

asyncssh's shim sets up three ChaCha20 contexts and a Poly1305 object per packet and joins
the whole packet twice. Two replacements, same wire format (PROTOCOL.chacha20poly1305):

- :class:`NativeCipher`, the C accelerator ``sftpd.ssh._chacha`` on OpenSSL 3's libcrypto:
  contexts kept per direction and re-IV'd, one call per packet, output written in place;
- :class:`PythonCipher`, on ``cryptography`` when the accelerator did not build: one
  context gives the Poly1305 key and then the payload, and Poly1305 is fed in pieces.

:func:`compat.use_fast_ciphers` installs whichever is available in asyncssh's table.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

__all__ = [
    "ChachaCipher", "FastChachaEncryption", "NativeCipher", "PythonCipher", "implementation",
    "new_cipher",
]  # fmt: skip

try:
    from sftpd.ssh._chacha import Chacha as NativeCipher
except ImportError:  # no compiler or no OpenSSL 3 headers at install: the Python path
    NativeCipher = None  # type: ignore[assignment,misc]

_ZERO_BLOCK = bytes(64)
_COUNTER_0 = bytes(8)


def _seq_nonce(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


class ChachaCipher(Protocol):
    """One direction's chacha20-poly1305@openssh.com, packet by packet."""

    def encrypt(self, seq: int, header: bytes, payload: bytes) -> tuple[bytes, bytes]: ...
    def seal(self, seq: int, header: bytes, payload: bytes) -> bytes: ...
    def decrypt_header(self, seq: int, header: bytes) -> bytes: ...
    def decrypt(
        self, seq: int, first: bytes, rest: bytes, header_len: int, tag: bytes
    ) -> bytes | None: ...


class PythonCipher:
    """The construction on ``cryptography``: K_2 = key[:32] (payload from block 1, Poly1305
    key from block 0), K_1 = key[32:] (the 4-byte length)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 64:
            raise ValueError("chacha20-poly1305 takes a 64-byte key")
        self._main, self._length = key[:32], key[32:]

    def _stream(self, key: bytes, seq: int) -> CipherContext:
        return Cipher(ChaCha20(key, _COUNTER_0 + _seq_nonce(seq)), mode=None).encryptor()

    def encrypt(self, seq: int, header: bytes, payload: bytes) -> tuple[bytes, bytes]:
        enc_header = self._stream(self._length, seq).update(header)
        main = self._stream(self._main, seq)
        mac = Poly1305(main.update(_ZERO_BLOCK)[:32])
        body = main.update(payload)
        mac.update(enc_header)
        mac.update(body)
        return enc_header + body, mac.finalize()

    def seal(self, seq: int, header: bytes, payload: bytes) -> bytes:
        return b"".join(self.encrypt(seq, header, payload))

    def decrypt_header(self, seq: int, header: bytes) -> bytes:
        return self._stream(self._length, seq).update(header)

    def decrypt(
        self, seq: int, first: bytes, rest: bytes, header_len: int, tag: bytes
    ) -> bytes | None:
        main = self._stream(self._main, seq)
        mac = Poly1305(main.update(_ZERO_BLOCK)[:32])
        mac.update(first)
        mac.update(rest)
        try:
            mac.verify(bytes(tag))
        except InvalidSignature:
            return None
        return main.update(first[header_len:]) + main.update(rest)


def new_cipher(key: bytes) -> ChachaCipher:
    """The fastest implementation this install has, for one direction's 64-byte key."""
    return NativeCipher(key) if NativeCipher is not None else PythonCipher(key)


def implementation() -> str:
    """``"native"`` (the C accelerator) or ``"python"``: for logs, tests and benchmarks."""
    return "native" if NativeCipher is not None else "python"


class FastChachaEncryption:
    """asyncssh's ``Encryption`` interface for chacha20-poly1305@openssh.com (the methods
    ``asyncssh.encryption.ChachaEncryption`` has, with the same arguments and results)."""

    def __init__(self, cipher: ChachaCipher) -> None:
        self._cipher = cipher

    @classmethod
    def new(
        cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
        mac_key: bytes = b"", etm: bool = False,
    ) -> FastChachaEncryption:  # fmt: skip
        return cls(new_cipher(key))

    @classmethod
    def needs_mac(cls) -> bool:
        return False

    @classmethod
    def get_mac_params(cls, mac_alg: bytes) -> tuple[int, int, bool]:
        return 0, 16, True

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        return self._cipher.encrypt(seq, header, packet)

    def seal(self, seq: int, header: bytes, packet: bytes) -> bytes:
        """``encrypt_packet``'s two results as one buffer (compat.fast_send)."""
        return self._cipher.seal(seq, header, packet)

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int) -> tuple[bytes, bytes]:
        return first_block, self._cipher.decrypt_header(seq, first_block[:header_len])

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        return self._cipher.decrypt(seq, first, rest, header_len, mac)
