"""sftpd's AES-GCM (sftpd/ssh/gcm.py): the same bytes as asyncssh's implementation for both
key sizes, every size and across the invocation counter's wrap, sealed in one buffer by
compat.fast_send, forgeries and replays refused. Real OpenSSH on the other end, both ways,
for every AEAD cipher: tests/interop/test_chacha.py."""

from __future__ import annotations

import os

import asyncssh
import pytest
from asyncssh.crypto.cipher import GCMCipher as Reference

from sftpd.ssh import compat, gcm
from tests.support.live import LiveServer

CIPHERS = {"aes128-gcm": 16, "aes256-gcm": 32}
SIZES = (0, 1, 12, 15, 16, 17, 1000, 32768 + 12, 35000, 262144 + 28)
COUNTERS = (0, 1, 2**32 - 1, 2**64 - 2)  # the last runs across the wrap


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(CIPHERS))
def test_same_bytes_as_asyncssh(name: str, size: int) -> None:
    for counter in COUNTERS:
        key = os.urandom(CIPHERS[name])
        iv = os.urandom(4) + counter.to_bytes(8, "big")
        reference, receiver = Reference(name, key, iv), gcm.GcmCipher(key, iv)
        sender, sealer = gcm.GcmCipher(key, iv), gcm.GcmCipher(key, iv)
        for _ in range(3):  # the invocation counter moves on after each packet
            header, payload = os.urandom(4), os.urandom(size)
            want_ct, want_tag = reference.encrypt_and_sign(header, payload)
            assert sender.encrypt(header, payload) == (want_ct, want_tag), counter
            assert sealer.seal(header, payload) == want_ct + want_tag, counter
            split = min(len(want_ct), 16)  # asyncssh hands over the first block, then the rest
            got = receiver.decrypt(want_ct[:split], want_ct[split:], 4, want_tag)
            assert got == payload, counter


def test_forgeries_and_replays_are_refused() -> None:
    key, iv = os.urandom(16), os.urandom(12)
    header, payload = os.urandom(4), os.urandom(5000)
    ct, tag = gcm.GcmCipher(key, iv).encrypt(header, payload)
    for i in (0, 3, 4, 100, len(ct) - 1):  # the length (additional data), the payload
        bad = bytearray(ct)
        bad[i] ^= 0x01
        assert gcm.GcmCipher(key, iv).decrypt(bytes(bad[:16]), bytes(bad[16:]), 4, tag) is None
    bad_tag = bytes([tag[0] ^ 0x80]) + tag[1:]
    assert gcm.GcmCipher(key, iv).decrypt(ct[:16], ct[16:], 4, bad_tag) is None
    receiver = gcm.GcmCipher(key, iv)
    assert receiver.decrypt(ct[:16], ct[16:], 4, tag) == payload
    assert receiver.decrypt(ct[:16], ct[16:], 4, tag) is None  # replayed: the IV moved on
    assert gcm.GcmCipher(os.urandom(16), iv).decrypt(ct[:16], ct[16:], 4, tag) is None
    for key_len, iv_len in ((24, 12), (16, 8), (0, 12)):
        with pytest.raises(ValueError):
            gcm.GcmCipher(os.urandom(key_len), os.urandom(iv_len))


def test_new_connections_use_it(live_server: LiveServer) -> None:
    compat.use_fast_ciphers()
    for name in compat.GCM:
        installed: object = asyncssh.encryption._enc_params[name][0]
        assert installed is gcm.FastGcmEncryption
        assert name in asyncssh.encryption.get_default_encryption_algs()
