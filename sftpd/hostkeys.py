"""Host keys in ``keys/``: created at first start (mode 0600), reused afterwards."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

#: (file name, asyncssh algorithm, key size in bits for RSA)
HOST_KEY_TYPES: tuple[tuple[str, str, int], ...] = (
    ("ssh_host_ed25519_key", "ssh-ed25519", 0),
    ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256", 0),
    ("ssh_host_rsa_key", "ssh-rsa", 3072),
)


class HostKeyError(Exception):
    """A host key file is unreadable, corrupt or too open; the message names it."""


@dataclass(frozen=True)
class HostKey:
    path: Path
    key: asyncssh.SSHKey

    @property
    def fingerprint(self) -> str:
        return self.key.get_fingerprint("sha256")

    @property
    def algorithm(self) -> str:
        return self.key.get_algorithm()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_or_create(keys_dir: Path) -> list[HostKey]:
    """Every host key in ``keys_dir``, generating the missing ones."""
    try:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise HostKeyError(f"cannot create keys directory {keys_dir}: {exc.strerror}") from None
    keys = []
    for name, algorithm, bits in HOST_KEY_TYPES:
        path = keys_dir / name
        if not path.exists():
            key = (
                asyncssh.generate_private_key(algorithm, key_size=bits)
                if bits
                else asyncssh.generate_private_key(algorithm)
            )
            try:
                _write_private(path, key.export_private_key())
                (keys_dir / f"{name}.pub").write_bytes(key.export_public_key())
            except OSError as exc:
                raise HostKeyError(f"cannot write host key {path}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            raise HostKeyError(f"host key {path} is readable by others: chmod 600 it")
        try:
            keys.append(HostKey(path, asyncssh.read_private_key(path)))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise HostKeyError(f"cannot load host key {path}: {exc}") from None
    return keys
