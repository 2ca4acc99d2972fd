"""Second factor and chained logins (sftpd/core/logins.py) against the live server: the
asyncssh client, OpenSSH's ssh through a pty, and paramiko; every refusal changes nothing
and names no secret."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pexpect
import pyotp
import pytest

from sftpd.core import logins
from sftpd.store import KeyRecord
from tests.support import Xfer
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code(step_offset: int = 0, secret: str = SECRET) -> str:
    """The code of the time step ``step_offset`` steps from now (-1, 0 and 1 are valid)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * step_offset)


def enrol(server: LiveServer, user: User, policy: str | None = None) -> list[str]:
    """Give ``user`` the TOTP secret, two recovery codes (returned) and ``policy``."""
    codes = logins.new_recovery_codes(2)
    hashes = [logins.recovery_hash(c) for c in codes]
    assert server.call(server.service.store.set_totp(user.name, SECRET, hashes))
    if policy is not None:
        assert server.call(server.service.store.set_login_policy(user.name, policy))
    return codes


class _Answers(asyncssh.SSHClient):
    """An asyncssh client that answers keyboard-interactive prompts from a list."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.prompts = answers, []  # type: ignore[var-annotated]

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        self.prompts.extend(p for p, _ in prompts)
        if not prompts:
            return []
        return [self.answers.pop(0)] if self.answers else None


async def login(server: LiveServer, user: User, answers: list[str], **kwargs: Any) -> _Answers:
    """Log in (a key unless ``client_keys=None``), answer prompts, run ``sp``."""
    client = _Answers(answers)
    async with server.connect(user, client_factory=lambda: client, **kwargs) as conn:
        result = await conn.run("sp", check=True)
        assert "used" in str(result.stdout)
    return client


def outcomes(server: LiveServer, user: User) -> list[tuple[str, str, str]]:
    return [
        (e.get("outcome", ""), e.get("method", ""), e.get("reason", ""))
        for e in server.logs.events("login")
        if e.get("user") == user.name
    ]


async def test_password_then_code(live_server: LiveServer, user: User) -> None:
    """A user with a second factor and no policy of their own: the password is a partial
    success, then the code (asked as 'Verification code: ') completes the login."""
    enrol(live_server, user)
    client = await login(live_server, user, [code()], client_keys=None, password=user.password)
    assert client.prompts == ["Verification code: "]
    assert ("partial", "password", "") in outcomes(live_server, user)
    assert ("ok", "password+totp", "") in outcomes(live_server, user)
    assert SECRET not in live_server.logs.text()


async def test_wrong_replayed_and_missing_codes_are_refused(
    live_server: LiveServer, user: User
) -> None:
    enrol(live_server, user)
    with pytest.raises(asyncssh.PermissionDenied):
        await login(live_server, user, ["000000"], client_keys=None, password=user.password)
    right = code()  # taken now: one taken earlier could age out of the window meanwhile
    await login(live_server, user, [right], client_keys=None, password=user.password)
    with pytest.raises(asyncssh.PermissionDenied):  # the same code again
        await login(live_server, user, [right], client_keys=None, password=user.password)
    with pytest.raises(asyncssh.PermissionDenied):  # a client that has no code to give
        await login(live_server, user, [], client_keys=None, password=user.password)
    with pytest.raises(asyncssh.PermissionDenied):  # a code alone is not a login
        await login(live_server, user, [code(1)], client_keys=None, password=None)
    reasons = [r for o, _, r in outcomes(live_server, user) if o == "failed"]
    assert "wrong code" in reasons and "code already used" in reasons
    assert right not in live_server.logs.text()


async def test_a_recovery_code_works_once(live_server: LiveServer, user: User) -> None:
    spare, _ = enrol(live_server, user)
    await login(live_server, user, [spare], client_keys=None, password=user.password)
    with pytest.raises(asyncssh.PermissionDenied):
        await login(live_server, user, [spare], client_keys=None, password=user.password)
    record = live_server.call(live_server.service.store.get_user(user.name))
    assert record is not None and record.recovery_codes == 1
    assert spare not in live_server.logs.text()


async def test_a_key_alone_suffices_by_default_but_not_under_a_chained_policy(
    live_server: LiveServer, user: User
) -> None:
    enrol(live_server, user)
    await login(live_server, user, [])  # the default once enrolled: the key is enough
    assert live_server.call(live_server.service.store.set_login_policy(user.name, "publickey+totp"))
    with pytest.raises(asyncssh.PermissionDenied):
        await login(live_server, user, [])
    client = await login(live_server, user, [code()])
    assert client.prompts == ["Verification code: "]
    with pytest.raises(asyncssh.PermissionDenied):  # the password is not in this policy
        await login(live_server, user, [code(1)], client_keys=None, password=user.password)
    assert ("ok", "publickey+totp", "") in outcomes(live_server, user)


async def test_wrong_codes_count_toward_the_defender(tmp_path: Path) -> None:
    """Three wrong codes from one address (key right each time) block it, like three
    wrong passwords: then even the right key and code are refused from there."""
    server = start_live_server(tmp_path, defender_max_failures=3, defender_window=60.0,
                               defender_ban_time=30.0)  # fmt: skip
    try:
        user = server.add_user()
        enrol(server, user, "publickey+totp")
        for _ in range(3):  # the third is answered by a disconnect: blocked
            with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
                await login(server, user, ["123456"], local_addr=("127.0.0.9", 0))
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError, OSError)):
            await login(server, user, [code()], local_addr=("127.0.0.9", 0))
        failed = [m for o, m, _ in outcomes(server, user) if o == "failed"]
        assert failed == ["totp"] * 3
        await login(server, user, [code(1)], local_addr=("127.0.0.10", 0))  # others still can
    finally:
        stop_live_server(server)


def test_openssh_asks_for_the_code_through_a_pty(live_server: LiveServer, user: User) -> None:
    """OpenSSH's ssh, key then code (publickey+totp), as a person would type it."""
    enrol(live_server, user, "publickey+totp")
    options = live_server.ssh_options()
    del options[options.index("BatchMode=yes") - 1 : options.index("BatchMode=yes") + 1]
    argv = ["-p", str(live_server.port), *options, "-o", "BatchMode=no",
            "-o", "NumberOfPasswordPrompts=1", f"{user.name}@127.0.0.1", "sp"]  # fmt: skip
    child = pexpect.spawn("ssh", argv, encoding="utf-8", timeout=30)
    try:
        child.expect_exact("Verification code: ")
        child.sendline("000000")
        child.expect("Permission denied")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus != 0
    child = pexpect.spawn("ssh", argv, encoding="utf-8", timeout=30)
    try:
        child.expect_exact("Verification code: ")
        child.sendline(code())
        child.expect("used")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def _paramiko(server: LiveServer) -> paramiko.Transport:
    t = paramiko.Transport(("127.0.0.1", server.port))
    t.start_client(timeout=30)
    return t


def test_paramiko_password_then_interactive(live_server: LiveServer, user: User) -> None:
    enrol(live_server, user)
    t = _paramiko(live_server)
    try:
        left = t.auth_password(user.name, user.password)
        assert left == ["keyboard-interactive"] and not t.is_authenticated()
        t.auth_interactive(user.name, lambda title, instr, prompts: [code()] * len(prompts))
        assert t.is_authenticated()
    finally:
        t.close()


def test_a_new_user_name_starts_the_chain_over(live_server: LiveServer) -> None:
    """The password of one user, then the code of another under the second one's name:
    the code is the other's only factor, so that is not a login (RFC 4252 lets a client
    change names between requests; the server must not carry one user's step over)."""
    alice, bob = live_server.add_user(), live_server.add_user()
    enrol(live_server, alice)
    enrol(live_server, bob)
    t = _paramiko(live_server)
    try:
        assert t.auth_password(alice.name, alice.password) == ["keyboard-interactive"]
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_interactive(bob.name, lambda title, instr, prompts: [code()] * len(prompts))
        assert not t.is_authenticated()
    finally:
        t.close()


def test_paramiko_may_try_a_wrong_key_then_a_password(live_server: LiveServer) -> None:
    """paramiko asks for the ssh-userauth service before every method; asyncssh used to
    answer the second request with a disconnect, so a failed key ended the connection
    before the password could be tried (compat.chained_logins)."""
    user = live_server.add_user(with_key=False)
    t = _paramiko(live_server)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(
                str(live_server.client_key)))  # fmt: skip
        t.auth_password(user.name, user.password)
        assert t.is_authenticated()
    finally:
        t.close()


def test_enrolling_shows_the_qr_code_and_asks_for_a_code(
    live_server: LiveServer, user: User
) -> None:
    """``sftpd user 2fa enable`` as a person runs it: a QR code, the secret, a prompt for
    a code read from it, then the recovery codes; a wrong code changes nothing."""
    base = [sys.executable, "-m", "sftpd", "--data-dir", str(live_server.settings.data_dir),
            "--keys-dir", str(live_server.settings.keys_dir)]  # fmt: skip
    child = pexpect.spawn(base[0], [*base[1:], "user", "2fa", "enable", user.name],
                          encoding="utf-8", timeout=30)  # fmt: skip
    child.expect(r"or type the secret: ([A-Z2-7]+)")
    child.expect_exact("Code from the app: ")
    child.sendline("000000")
    child.expect("does not match")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0
    record = live_server.call(live_server.service.store.get_user(user.name))
    assert record is not None and record.totp_secret is None
    child = pexpect.spawn(base[0], [*base[1:], "user", "2fa", "enable", user.name],
                          encoding="utf-8", timeout=30)  # fmt: skip
    assert child.expect("\u2588") == 0  # the QR code, in block characters
    child.expect(r"or type the secret: ([A-Z2-7]+)")
    secret = child.match.group(1)
    child.expect_exact("Code from the app: ")
    confirming = pyotp.TOTP(secret).now()
    child.sendline(confirming)
    child.expect("Recovery codes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    shown = re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})\r?$", child.before, re.M)
    assert len(shown) == logins.RECOVERY_CODES
    record = live_server.call(live_server.service.store.get_user(user.name))
    assert record is not None and record.totp_secret == secret
    assert record.recovery_codes == logins.RECOVERY_CODES
    # the code typed to confirm is used up, like any code a login accepts
    client = _Answers([confirming])
    with pytest.raises(asyncssh.PermissionDenied):
        async_login = live_server.connect(user, client_keys=None, password=user.password,
                                          client_factory=lambda: client)  # fmt: skip
        asyncio.run(_open_and_close(async_login))
    assert ("failed", "totp", "code already used") in outcomes(live_server, user)


async def _open_and_close(connecting: Any) -> None:
    async with connecting:
        pass


def test_xfer_gives_a_code_from_stdin_and_keeps_to_one_connection(
    live_server: LiveServer, user: User, tmp_path: Path
) -> None:
    """xfer --otp-stdin: key then code (publickey+totp); a put that would open several
    connections stays on the one that had a code (each login would need its own); without
    a code, in batch mode, the login fails with xfer's auth exit code and one clear line."""
    enrol(live_server, user, "publickey+totp")
    x = Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", user.key_path,
             live_server.known_hosts)  # fmt: skip
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    r = x("--otp-stdin", "put", "-j", "4", "--segment-from", "1MiB", "big.bin", "/big.bin",
          input=code() + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (user.home / "big.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
    seen = outcomes(live_server, user)
    assert [m for o, m, _ in seen if o == "ok"] == ["publickey+totp"]  # one login, one code
    assert [m for o, m, _ in seen if o == "partial"] == ["publickey"]  # no second attempt
    r = x("sp")
    assert r.returncode == 3 and "authentication failed" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _exempt_key(server: LiveServer, user: User, tmp: Path, nets: tuple[str, ...], exempt: bool,
                *, name: str = "auto") -> Path:  # fmt: skip
    """A new key for ``user``, registered as ``sftpd user key add --from NETS [--exempt]``."""
    key_path = tmp / name
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(key_path)
    record = KeyRecord(key.get_fingerprint("sha256"), key.get_algorithm(),
                       key.export_public_key().decode().strip(), "", nets, exempt)  # fmt: skip
    server.call(server.service.store.add_key(user.name, record))
    return key_path


async def test_an_exempt_key_logs_in_alone_but_only_from_its_addresses(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Automation under a two-factor policy: a key exempt from it, limited to one host,
    completes the login by itself from that host; from anywhere else it is refused. A key
    limited by --from alone is no exemption, and is refused outside its networks."""
    user = live_server.add_user()
    enrol(live_server, user, "password+totp")  # not even publickey in the policy
    auto = _exempt_key(live_server, user, tmp_path, ("127.0.0.7/32",), True)
    limited = _exempt_key(live_server, user, tmp_path, ("127.0.0.0/29",), False, name="lim")

    def at(addr: str) -> dict[str, Any]:
        return {"local_addr": (addr, 0)}

    client = await login(live_server, user, [], client_keys=[str(auto)], **at("127.0.0.7"))
    assert client.prompts == []
    for addr in ("127.0.0.8", "127.0.0.1"):
        with pytest.raises(asyncssh.PermissionDenied):
            await login(live_server, user, [code()], client_keys=[str(auto)], **at(addr))
    with pytest.raises(asyncssh.PermissionDenied):  # from its network, but not exempt
        await login(live_server, user, [code(1)], client_keys=[str(limited)], **at("127.0.0.7"))
    assert live_server.call(live_server.service.store.set_login_policy(user.name, "publickey"))
    with pytest.raises(asyncssh.PermissionDenied):
        await login(live_server, user, [], client_keys=[str(limited)], **at("127.0.0.8"))
    await login(live_server, user, [], client_keys=[str(limited)], **at("127.0.0.1"))
    seen = outcomes(live_server, user)
    assert [m for o, m, _ in seen if o == "ok"] == ["publickey", "publickey"]
    reasons = [r for o, m, r in seen if o == "failed" and m == "publickey"]
    assert reasons == ["not allowed by login policy", "key not allowed from this address"]
    ok = [e for e in live_server.logs.events("login")
          if e.get("user") == user.name and e.get("outcome") == "ok"]  # fmt: skip
    assert ok[0]["exempt"] == "yes" and "exempt" not in ok[1]
