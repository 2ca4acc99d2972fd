"""sftpd's AES-GCM (sftpd/ssh/gcm.py): the same bytes as asyncssh's implementation for both
key sizes, every size and across the invocation counter's wrap, sealed in one buffer by
compat.fast_send, forgeries and replays refused, and real OpenSSH on the other end both
ways."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import asyncssh
import pytest
from asyncssh.crypto.cipher import GCMCipher as Reference

from sftpd.ssh import compat, gcm
from tests.support.live import LiveServer, OpenSSHServer, User

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


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"])
def test_openssh_sftp_both_ways(
    live_server: LiveServer, user: User, tmp_path: Path, cipher: str
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # many full 32 KiB packets and a short one
    (tmp_path / "up.bin").write_bytes(data)
    batch = f"put {tmp_path / 'up.bin'} up.bin\nget up.bin {tmp_path / 'down.bin'}\n"
    r = live_server.sftp(user, batch, "-c", cipher, "-v")
    assert r.returncode == 0, r.stderr[-600:]
    assert f"cipher: {cipher}" in r.stderr  # negotiated, not a fallback
    assert (user.home / "up.bin").read_bytes() == data
    assert (tmp_path / "down.bin").read_bytes() == data


async def test_asyncssh_client_against_openssh_sshd(
    openssh_server: OpenSSHServer, tmp_path: Path
) -> None:
    """The client side (xfer's connections) against OpenSSH's server."""
    compat.use_fast_ciphers()
    data = os.urandom(2 * 1024 * 1024 + 5)
    remote = openssh_server.root / f"{tmp_path.name}-gcm.bin"
    async with asyncssh.connect(
        "127.0.0.1", openssh_server.port, username=openssh_server.user,
        client_keys=[str(openssh_server.key)], known_hosts=str(openssh_server.known_hosts),
        agent_path=None, encryption_algs=["aes256-gcm@openssh.com"],
    ) as conn:  # fmt: skip
        assert conn.get_extra_info("send_cipher") == "aes256-gcm@openssh.com"
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(str(remote), "wb") as f:
                await f.write(data)
            async with sftp.open(str(remote), "rb") as f:
                back = cast(bytes, await f.read())
    assert remote.read_bytes() == data and back == data
