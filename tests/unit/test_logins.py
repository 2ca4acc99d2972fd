"""The login model (sftpd/core/logins.py): policies, TOTP steps, recovery codes."""

from __future__ import annotations

import pyotp
import pytest

from sftpd.core import logins

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_policies_parse_and_chain_in_order() -> None:
    policy = logins.parse_policy("publickey, password+totp")
    assert policy == (("publickey",), ("password", "totp"))
    assert logins.describe(policy) == "publickey,password+totp"
    assert logins.remaining(policy, []) == {"publickey", "password"}  # not the code first
    assert logins.remaining(policy, ["password"]) == {"totp"}
    assert logins.remaining(policy, ["totp"]) == set()
    assert not logins.satisfied(policy, ["password"])
    assert logins.satisfied(policy, ["password", "totp"])
    assert not logins.satisfied(policy, ["totp", "password"])
    assert logins.satisfied(policy, ["publickey"])
    for bad in ("", "key", "password+", "password+password", "publickey,,totp"):
        with pytest.raises(ValueError, match="bad login policy"):
            logins.parse_policy(bad)


def test_the_default_asks_for_the_code_after_the_password_once_enrolled() -> None:
    key, cert = ("publickey",), ("certificate",)
    assert logins.effective(None, "", False) == (key, cert, ("password",))
    assert logins.effective(None, "", True) == (key, cert, ("password", "totp"))
    assert logins.effective(None, "publickey", True) == (("publickey",),)
    assert logins.effective("password+totp", "publickey", True) == (("password", "totp"),)


def test_a_code_is_valid_one_step_either_side_of_now() -> None:
    totp, now = pyotp.TOTP(SECRET), 1_700_000_000.0
    step = totp.timecode(int(now))
    for offset in (-1, 0, 1):
        assert logins.code_step(SECRET, totp.at(now + 30 * offset), now) == step + offset
    assert logins.code_step(SECRET, totp.at(now + 90), now) is None
    assert logins.code_step(SECRET, totp.at(now - 90), now) is None
    assert logins.code_step(SECRET, " " + totp.at(now)[:3] + " " + totp.at(now)[3:], now) == step
    for junk in ("", "12345", "1234567", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16"):
        assert logins.code_step(SECRET, junk, now) is None


def test_recovery_codes_are_random_and_stored_hashed() -> None:
    codes = logins.new_recovery_codes()
    assert len(set(codes)) == logins.RECOVERY_CODES
    assert all(logins.looks_like_recovery_code(c) for c in codes)
    assert not logins.looks_like_recovery_code("123456")
    h = logins.recovery_hash(codes[0])
    assert codes[0] not in h and len(h) == 64
    assert logins.recovery_hash(" " + codes[0].upper() + "\n") == h  # as typed


def test_the_uri_carries_the_user_and_issuer() -> None:
    uri = logins.provisioning_uri(SECRET, "alice")
    assert uri.startswith("otpauth://totp/sftpd:alice?") and f"secret={SECRET}" in uri


def test_a_broken_stored_secret_admits_nobody() -> None:
    for secret in ("", "not base32!", "JBSWY3DP"):
        assert logins.code_step(secret, "123456") is None
