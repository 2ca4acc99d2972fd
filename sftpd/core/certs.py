"""SSH user certificates: when one admits a user (OpenSSH's ``TrustedUserCAKeys``).

A certificate signed by a trusted certificate authority admits the user it names without
their key being registered: it is checked here as plain data (sftpd/ssh/compat.py turns
asyncssh's certificate into a :class:`Certificate`), and asyncssh checks the signature
and the same fields again after us.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sftpd.core.limits import address_in
from sftpd.core.revocation import Revocations


@dataclass(frozen=True)
class Certificate:
    """What sftpd reads of an OpenSSH certificate (all blobs in SSH wire encoding)."""

    blob: bytes  # the whole certificate
    key: bytes  # the certified public key
    ca: bytes  # the key that signed it
    user_cert: bool  # a user certificate, not a host one
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    force_command: str | None
    source_address: tuple[str, ...]


def refusal(
    cert: Certificate,
    username: str,
    addr: str,
    trusted: Collection[bytes],
    revoked: Revocations,
    servable: Callable[[str], bool],
    now: float | None = None,
) -> str:
    """Why ``cert`` does not admit ``username`` from ``addr`` ("" if it does).

    Unlike asyncssh, a certificate without principals admits nobody (sshd refuses those
    for ``TrustedUserCAKeys`` too: a CA that forgot ``-n`` must not mint a key for every
    account). ``servable(command)`` says whether a ``force-command`` is one sftpd can run.
    """
    now = time.time() if now is None else now
    if cert.ca not in trusted:
        return "certificate authority not trusted"
    if not cert.user_cert:
        return "not a user certificate"
    if not cert.principals:
        return "certificate names no principals"
    if username not in cert.principals:
        return "certificate not issued for this user"
    if now < cert.valid_after:
        return "certificate not yet valid"
    if now >= cert.valid_before:
        return "certificate expired"
    if cert.source_address and not address_in(addr, cert.source_address):
        return "certificate source-address does not allow this address"
    if cert.force_command is not None and not servable(cert.force_command):
        return "certificate forces a command sftpd cannot run"
    return revoked.cert_revoked(cert.blob, cert.key, cert.ca, cert.serial, cert.key_id)


def fingerprint(blob: bytes) -> str:
    """A key's SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
