"""sftpd's chacha20-poly1305@openssh.com (sftpd/ssh/chacha.py, the C accelerator in
sftpd/ssh/_chacha.c): the same bytes as asyncssh's implementation for every size and
sequence number, forgeries refused, and real OpenSSH on the other end both ways, for it and
for AES-GCM (sftpd/ssh/gcm.py), whose packets compat.fast_send seals the same way."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import asyncssh
import pytest
from asyncssh.crypto.chacha import ChachaCipher as Reference

from sftpd.ssh import chacha, compat
from tests.support.live import LiveServer, OpenSSHServer, User

CHACHA = "chacha20-poly1305@openssh.com"
SIZES = (0, 1, 12, 59, 60, 64, 65, 1000, 32768 + 12, 35000, 262144 + 28)
SEQS = (0, 1, 255, 256, 65536, 2**31, 2**32 - 1)


def implementations() -> list[Callable[[bytes], chacha.ChachaCipher]]:
    native = chacha.NativeCipher
    assert native is not None, (
        "the C accelerator did not build: `pip install -e .` needs gcc and OpenSSL 3's "
        "headers (scripts/test.sh installs build-essential and libssl-dev)"
    )
    return [chacha.PythonCipher, native]


@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_as_asyncssh(size: int) -> None:
    for impl in implementations():
        for seq in SEQS:
            key, header, payload = os.urandom(64), os.urandom(4), os.urandom(size)
            nonce = seq.to_bytes(8, "big")
            want_ct, want_tag = Reference(key).encrypt_and_sign(header, payload, nonce)
            cipher = impl(key)
            assert cipher.encrypt(seq, header, payload) == (want_ct, want_tag), (impl, seq)
            assert cipher.decrypt_header(seq, want_ct[:4]) == header
            split = min(len(want_ct), 16)  # asyncssh hands over the first block, then the rest
            got = cipher.decrypt(seq, want_ct[:split], want_ct[split:], 4, want_tag)
            assert got == payload, (impl, seq)


def test_forgeries_and_wrong_sequence_numbers_are_refused() -> None:
    for impl in implementations():
        key, header, payload = os.urandom(64), os.urandom(4), os.urandom(5000)
        cipher = impl(key)
        ct, tag = cipher.encrypt(7, header, payload)
        for i in (0, 3, 4, 100, len(ct) - 1):  # the length, the payload
            bad = bytearray(ct)
            bad[i] ^= 0x01
            assert cipher.decrypt(7, bytes(bad[:16]), bytes(bad[16:]), 4, tag) is None
        bad_tag = bytes([tag[0] ^ 0x80]) + tag[1:]
        assert cipher.decrypt(7, ct[:16], ct[16:], 4, bad_tag) is None
        assert cipher.decrypt(8, ct[:16], ct[16:], 4, tag) is None  # a replayed packet
        assert impl(os.urandom(64)).decrypt(7, ct[:16], ct[16:], 4, tag) is None
        with pytest.raises(ValueError):
            impl(os.urandom(32))


def test_new_connections_use_it(live_server: LiveServer) -> None:
    assert compat.use_fast_ciphers() == "native"
    installed: object = asyncssh.encryption._enc_params[CHACHA.encode()][0]
    assert installed is chacha.FastChachaEncryption
    assert CHACHA.encode() in asyncssh.encryption.get_default_encryption_algs()


#: Every AEAD cipher sftpd replaces (chacha.py, gcm.py), each sealed by compat.fast_send.
AEAD = [CHACHA, "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]


@pytest.mark.parametrize("cipher", AEAD)
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


@pytest.mark.parametrize("cipher", AEAD)
async def test_asyncssh_client_against_openssh_sshd(
    openssh_server: OpenSSHServer, tmp_path: Path, cipher: str
) -> None:
    """The client side (xfer's connections) against OpenSSH's server."""
    compat.use_fast_ciphers()
    data = os.urandom(2 * 1024 * 1024 + 5)
    remote = openssh_server.root / f"{tmp_path.name}-{cipher.split('@')[0]}.bin"
    async with asyncssh.connect(
        "127.0.0.1", openssh_server.port, username=openssh_server.user,
        client_keys=[str(openssh_server.key)], known_hosts=str(openssh_server.known_hosts),
        agent_path=None, encryption_algs=[cipher],
    ) as conn:  # fmt: skip
        assert conn.get_extra_info("send_cipher") == cipher
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(str(remote), "wb") as f:
                await f.write(data)
            async with sftp.open(str(remote), "rb") as f:
                back = cast(bytes, await f.read())
    assert remote.read_bytes() == data and back == data
