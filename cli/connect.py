"""Targets, authentication and host-key policy: everything up to an open SFTP session.

Host keys are checked against ``~/.ssh/known_hosts`` (or ``--known-hosts``). An
unknown host is shown with its fingerprint and confirmed on a terminal, added
with ``--accept-new``, refused in batch mode; a changed key is always refused.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from cli.errors import AUTH, CONNECT, USAGE, XferError
from sftpd.ssh.algorithms import CLIENT_WINDOW, SUPPORTED_CIPHERS
from sftpd.ssh.compat import fast_send, quiet_logging, sliced_input, use_fast_ciphers

_TARGET = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:@\[\]]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Target:
    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.match(text.strip())
        if not m:
            raise XferError(USAGE, f"bad target {text!r}: use user@host[:port]")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise XferError(USAGE, f"bad port in target {text!r}")
        return cls(m["user"], m["host"].strip("[]"), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{user}{host}" + (f":{self.port}" if self.port else "")


@dataclass
class ConnectOptions:
    target: Target
    keys: list[str] = field(default_factory=list)
    known_hosts: Path | None = None
    accept_new: bool = False
    batch: bool = False
    password: str | None = None  # from --password-stdin or XFER_PASSWORD
    trust: str | None = None  # an unknown host's fingerprint the user accepted (xfer ui)
    code: Callable[[], str | None] | None = None  # a verification code (--otp-stdin)

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts or default_known_hosts()


class UnknownHost(XferError):
    """A host not in known_hosts, refused without asking (batch mode); a caller with its
    own way to ask (the UI's dialog) retries with ``ConnectOptions.trust``."""

    def __init__(self, pattern: str, algorithm: str, fingerprint: str) -> None:
        super().__init__(
            CONNECT,
            f"unknown host {pattern} ({algorithm} {fingerprint}); "
            "use --accept-new or add it to known_hosts",
        )
        self.pattern, self.algorithm, self.fingerprint = pattern, algorithm, fingerprint


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


#: AES-GCM first where the CPU has AES instructions: even sftpd's own chacha20-poly1305
#: (sftpd/ssh/chacha.py, ~11 us per 32 KiB packet with its C accelerator) costs twice
#: AES-GCM's ~5 us, and asyncssh's took ~30. OpenSSH clients put chacha20 first; a
#: ``Ciphers`` line in ~/.ssh/config still wins.
FAST_CIPHERS = list(SUPPORTED_CIPHERS)  # sftpd's own order: AES-GCM, chacha20, AES-CTR


def _cpu_has_aes() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(
        line.split(":", 1)[0].strip() in ("flags", "Features") and " aes" in line
        for line in text.splitlines()
    )


def _config_sets_ciphers(config: Path) -> bool:
    try:
        lines = config.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.strip().lower().startswith("ciphers") for line in lines)


def cipher_preference() -> list[str] | None:
    """The cipher order to ask for, or None to leave asyncssh's (and ssh_config's)."""
    if _config_sets_ciphers(Path.home() / ".ssh" / "config") or not _cpu_has_aes():
        return None
    return FAST_CIPHERS


def known_host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def ask_tty(prompt: str) -> str:
    """Ask on the controlling terminal (not stdin, which may carry data)."""
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(prompt)
            tty.flush()
            return tty.readline().strip()
    except OSError:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return sys.stdin.readline().strip()


class _Client(asyncssh.SSHClient):
    """Host-key decisions and password prompts for one connection attempt."""

    def __init__(self, opts: ConnectOptions, known: asyncssh.SSHKnownHosts | None) -> None:
        self.opts = opts
        self.known = known
        self.refusal: XferError | None = None
        self.new_key: tuple[str, asyncssh.SSHKey] | None = None
        self._password_tries = 0
        self.asked_code = False  # the server asked for a verification code

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        fast_send(conn)
        sliced_input(conn)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        # ``host`` is the name after ~/.ssh/config (HostName), as OpenSSH records it.
        pattern = known_host_pattern(host, port)
        trusted = self.known.match(host, addr, port)[0] if self.known else []
        if key in trusted:
            return True
        if trusted:
            self.refusal = XferError(
                CONNECT,
                f"HOST KEY OF {pattern} HAS CHANGED (now {key.get_algorithm()} {fingerprint}); "
                f"it may be an attack. Refusing to connect; check with the server's admin and "
                f"fix {self.opts.known_hosts_path}",
            )
            return False
        if not self.opts.accept_new and fingerprint != self.opts.trust:
            if self.opts.batch:
                self.refusal = UnknownHost(pattern, key.get_algorithm(), fingerprint)
                return False
            answer = ask_tty(
                f"The authenticity of host '{pattern}' can't be established.\n"
                f"{key.get_algorithm()} key fingerprint is {fingerprint}.\n"
                "Are you sure you want to continue connecting (yes/no)? "
            )
            if answer.lower() not in ("yes", "y"):
                self.refusal = XferError(CONNECT, f"host key of {pattern} not accepted")
                return False
        self.new_key = (pattern, key)
        return True

    def password_auth_requested(self) -> str | None:
        self._password_tries += 1
        if self.opts.password is not None:
            return self.opts.password if self._password_tries == 1 else None
        if self.opts.batch or self._password_tries > 3:
            return None
        return getpass.getpass(
            f"{self.opts.target.user or 'user'}@{self.opts.target.host}'s password: "
        )

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        """Keyboard-interactive: a password prompt gets the password, any other (sftpd's
        "Verification code: ") a code from --otp-stdin or the terminal; batch mode answers
        nothing it was not given."""
        answers = []
        for prompt, _echo in prompts:
            if "password" in prompt.lower():
                answer = self.password_auth_requested()
            elif self.opts.code is not None:
                answer = self.opts.code()
            elif self.opts.batch:
                answer = None
            else:
                answer = getpass.getpass(prompt)
            if answer is None:
                return None
            self.asked_code = self.asked_code or "password" not in prompt.lower()
            answers.append(answer)
        return answers


def _load_known(path: Path) -> asyncssh.SSHKnownHosts | None:
    try:
        return asyncssh.import_known_hosts(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise XferError(CONNECT, f"cannot read {path}: {exc}") from None


def _remember(path: Path, pattern: str, key: asyncssh.SSHKey) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"
    with open(path, "a") as fh:
        fh.write(line)
    print(f"xfer: added {pattern} to {path}", file=sys.stderr)


async def connect(opts: ConnectOptions) -> asyncssh.SSHClientConnection:
    """Open an authenticated connection, or raise XferError (codes 3 and 4)."""
    use_fast_ciphers()  # if a server (or ~/.ssh/config) settles on chacha20-poly1305
    quiet_logging()
    known = _load_known(opts.known_hosts_path)
    client = _Client(opts, known)
    kwargs: dict[str, Any] = {
        "known_hosts": known if known is not None else asyncssh.import_known_hosts(""),
        "client_factory": lambda: client,
        "kbdint_auth": True,  # sftpd's second factor (and servers that ask passwords so)
        "window": CLIENT_WINDOW,  # downloads over a long link: see sftpd/ssh/algorithms.py
    }
    ciphers = cipher_preference()
    if ciphers:
        kwargs["encryption_algs"] = ciphers
    if opts.target.user:
        kwargs["username"] = opts.target.user
    if opts.target.port:
        kwargs["port"] = opts.target.port
    if opts.keys:
        keys = [os.path.expanduser(k) for k in opts.keys]
        for key in keys:
            if not os.access(key, os.R_OK):
                raise XferError(USAGE, f"cannot read identity file {key}")
        kwargs["client_keys"] = keys
    try:
        conn = await asyncssh.connect(opts.target.host, **kwargs)
    except asyncssh.PermissionDenied:
        raise XferError(AUTH, f"authentication failed for {opts.target}") from None
    except (asyncssh.HostKeyNotVerifiable, asyncssh.DisconnectError) as exc:
        if client.refusal is not None:
            raise client.refusal from None
        raise XferError(CONNECT, f"{opts.target}: {exc.reason}") from None
    except (OSError, asyncssh.Error) as exc:
        if client.refusal is not None:
            raise client.refusal from None
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise XferError(CONNECT, f"cannot connect to {opts.target}: {reason}") from None
    if client.new_key is not None:
        _remember(opts.known_hosts_path, *client.new_key)
    conn.set_extra_info(xfer_asked_code=client.asked_code)  # Session.pool reads it
    return conn
