"""The login model: which methods admit a user, alone or chained, and the TOTP factor.

A policy is a comma list of alternatives; each is one method or several joined by ``+``,
which the client must pass in that order on one connection, like OpenSSH's
``AuthenticationMethods`` (the second factor after the first: a code never stands in for
the password, and nobody can spend codes without it). Methods: ``publickey`` (a key
registered for the user), ``certificate`` (an SSH certificate from a trusted CA, see
core/certs.py), ``password`` and ``totp`` (a code from an authenticator app, asked
through keyboard-interactive). ``publickey,password+totp``: a key alone, or the password and then
a code. A client learns what is left from the server's partial-success replies (RFC 4252
section 5.1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import pyotp

METHODS = ("publickey", "certificate", "password", "totp")
Policy = tuple[tuple[str, ...], ...]

#: Without a policy of their own: a registered key, a certificate from a trusted CA
#: (``user_ca``) or the password, and the code after the password once the user has a
#: second factor (a key stays enough, as with SFTPGo's SSH 2FA).
DEFAULT = "publickey,certificate,password"
DEFAULT_2FA = "publickey,certificate,password+totp"

#: Codes of the time steps either side of now are accepted (clock drift, typing time).
TOTP_DRIFT = 1
RECOVERY_CODES = 10


def parse_policy(text: str) -> Policy:
    """The alternatives of ``text``; ValueError naming what is wrong."""
    chains: list[tuple[str, ...]] = []
    for alternative in text.replace(" ", "").split(","):
        methods = tuple(alternative.split("+"))
        unknown = [m for m in methods if m not in METHODS]
        if not alternative or unknown or len(set(methods)) != len(methods):
            raise ValueError(
                f"bad login policy {text!r}: use methods {', '.join(METHODS)}, "
                "'+' to chain them (each once) and ',' between alternatives"
            )
        chains.append(methods)
    return tuple(chains)


def effective(policy: str | None, default: str | None, has_totp: bool) -> Policy:
    """The user's own policy, else the server's, else :data:`DEFAULT` (or, with a second
    factor enrolled, :data:`DEFAULT_2FA`)."""
    return parse_policy(policy or default or (DEFAULT_2FA if has_totp else DEFAULT))


def remaining(policy: Policy, done: Sequence[str]) -> set[str]:
    """The methods a client may try next after passing ``done`` (in that order): the next
    one of every alternative that begins with ``done``."""
    n = len(done)
    return {chain[n] for chain in policy if len(chain) > n and chain[:n] == tuple(done)}


def satisfied(policy: Policy, done: Sequence[str]) -> bool:
    """Whether ``done`` is one of the alternatives, whole."""
    return tuple(done) in policy


def describe(policy: Policy) -> str:
    """The policy as text."""
    return ",".join("+".join(chain) for chain in policy)


# -- TOTP (RFC 6238: 30 s steps, 6 digits, SHA-1, as every authenticator app) --------


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: str, issuer: str = "sftpd") -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) or takes typed."""
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=issuer)


def code_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step ``code`` is valid for (within :data:`TOTP_DRIFT` of now), or None.
    The caller records the step used, so one code (and any older one) admits once."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    found = None
    try:
        totp = pyotp.TOTP(secret)
        step = totp.timecode(int(time.time() if now is None else now))
        for s in range(step - TOTP_DRIFT, step + TOTP_DRIFT + 1):
            if hmac.compare_digest(totp.generate_otp(s), code):
                found = s  # no early exit: the same work whichever step matches
    except ValueError:  # a secret stored by hand that is not base32 (or too short)
        return None
    return found


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    """Single-use codes, shown once: two groups of five letters and digits (50 bits)."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(2))
        for _ in range(n)
    ]


def recovery_hash(code: str) -> str:
    """What is stored of a recovery code: its sha256 (the code has 50 random bits, so a
    slow hash would add nothing but login time)."""
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def looks_like_recovery_code(text: str) -> bool:
    t = text.strip()
    return len(t) == 11 and t[5] == "-"
