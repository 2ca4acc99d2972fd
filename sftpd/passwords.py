"""Password hashing: argon2id only. Verification runs in a thread (it is slow on purpose)."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified when a user does not exist, so a failed login takes as long either way.
    Made on first use, not at import: every CLI command imports this module."""
    return _hasher.hash(secrets.token_urlsafe(16))


def prepare() -> None:
    """Make the dummy hash now (a server does before it listens), so that the first login
    of an unknown user costs no more than any other."""
    _dummy_hash()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; ``None`` costs the same and fails."""
    return await asyncio.to_thread(_verify, stored, password)


def random_password() -> str:
    return secrets.token_urlsafe(12)
