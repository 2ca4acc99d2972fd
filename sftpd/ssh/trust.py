"""Trusted user certificate authorities (``user_ca``) and revoked keys (``revoked_keys``),
read once per process; the revoked-keys file is reread when it changes."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from sftpd.config import ConfigError, Settings
from sftpd.core.certs import fingerprint
from sftpd.core.revocation import RevocationError, Revocations, RevokedKeysFile


class Trust:
    """What the settings say to trust beyond each user's registered keys."""

    def __init__(self, settings: Settings) -> None:
        #: Each trusted CA's key blob and its fingerprint (for logs).
        self.cas: dict[bytes, str] = {}
        for path in settings.user_ca:
            for key in _read_cas(path):
                self.cas[key.public_data] = fingerprint(key.public_data)
        self._revoked: RevokedKeysFile | None = None
        if settings.revoked_keys:
            try:
                self._revoked = RevokedKeysFile(Path(settings.revoked_keys), _is_key)
            except RevocationError as exc:
                raise ConfigError(str(exc)) from None

    def revocations(self) -> Revocations:
        """What is revoked now (nothing without ``revoked_keys``)."""
        return self._revoked.current() if self._revoked else _NOTHING


_NOTHING = Revocations()


def _read_cas(path: Path) -> list[asyncssh.SSHKey]:
    """Every key of an OpenSSH public key file (``#`` comments and blank lines skipped);
    unlike asyncssh's reader, a line that is not a key is an error, not skipped."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read user CA keys from {path}: {exc}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys.append(asyncssh.import_public_key(line))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ConfigError(
                f"cannot read user CA keys from {path}, line {number}: {exc}"
            ) from None
    if not keys:
        raise ConfigError(f"user CA file {path} holds no public key")
    return keys


def _is_key(line: str) -> bool:
    """Whether ``line`` of a revoked-keys list is a whole public key or certificate."""
    for parse in (asyncssh.import_public_key, asyncssh.import_certificate):
        try:
            parse(line)
            return True
        except (asyncssh.KeyImportError, ValueError):
            continue
    return False
