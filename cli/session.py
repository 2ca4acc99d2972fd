"""The options every verb shares, the profile they name, and a session opened on first use."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from cli.connect import ConnectOptions, Target, connect
from cli.errors import USAGE, XferError, from_exception
from cli.profiles import Profile, Profiles
from cli.remote import Remote


@dataclass(frozen=True)
class Options:
    """The options of one invocation: given before the verb, or (``-i``, ``-q``, ``--json``)
    after it."""

    target: str | None = None
    profile: str | None = None
    keys: tuple[str, ...] = ()
    known_hosts: Path | None = None
    accept_new: bool = False
    batch: bool = False
    password_stdin: bool = False
    otp_stdin: bool = False  # a verification code on stdin's next line (after a password)
    quiet: bool = False
    json: bool = False
    debug: bool = False

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json) and sys.stderr.isatty()

    def with_verb_options(self, keys: tuple[str, ...], quiet: bool, json: bool) -> Options:
        """Options given after the verb add to those given before it."""
        return replace(
            self, keys=(*self.keys, *keys), quiet=self.quiet or quiet, json=self.json or json
        )


def resolve_profile(opts: Options) -> tuple[Target, Profile | None]:
    """The target to connect to, and the saved profile it matches if any."""
    profiles = Profiles.load()
    text = opts.target or os.environ.get("XFER_TARGET")
    if text:
        match = next((p for p in profiles.profiles.values() if p.target == text), None)
        return Target.parse(text), match
    profile = profiles.current(opts.profile)
    if profile is None:
        raise XferError(USAGE, "no target: use -t user@host[:port], XFER_TARGET or `xfer login`")
    return Target.parse(profile.target), profile


def remember_cwd(opts: Options, cwd: str) -> None:
    """Save the working directory later one-shot verbs start in."""
    target, profile = resolve_profile(opts)
    profiles = Profiles.load()
    key = profile.name if profile else str(opts.target or os.environ.get("XFER_TARGET"))
    current = profiles.profiles.get(key) or Profile(key, str(target), list(opts.keys))
    current.cwd = cwd
    profiles.profiles[key] = current
    profiles.save()


async def open_remote(
    opts: Options,
    password: str | None,
    cwd: str | None = None,
    trust: str | None = None,
    code: Callable[[], str | None] | None = None,
) -> Remote:
    """Connect, start SFTP and find the working directory (``cwd``, the profile's, or the
    server's). ``trust``: the fingerprint of an unknown host the user accepted."""
    target, profile = resolve_profile(opts)
    conn = await connect(
        ConnectOptions(
            target=target,
            keys=list(opts.keys) or (profile.keys if profile else []),
            known_hosts=opts.known_hosts
            or (Path(profile.known_hosts) if profile and profile.known_hosts else None),
            accept_new=opts.accept_new,
            batch=opts.batch,
            password=password,
            trust=trust,
            code=code,
        )
    )
    try:
        sftp = await conn.start_sftp_client()
        cwd = cwd or (profile.cwd if profile and profile.cwd else await sftp.realpath("."))
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise from_exception(exc, str(target)) from None
    return Remote(conn, sftp, cwd)


class Session:
    """One connection, opened when a verb first needs it, and more for parallel transfers
    (:meth:`pool`), all kept until :meth:`close`."""

    def __init__(self, opts: Options, remote: Remote | None = None) -> None:
        self.opts = opts
        self._remote = remote
        self._extra: list[Remote] = []
        self._password: str | None = None
        self._password_read = False
        self._code_read = False

    def secret(self) -> str | None:
        """The password, read from stdin once however many connections use it."""
        if not self._password_read:
            self._password_read = True
            self._password = (
                sys.stdin.readline().rstrip("\r\n")
                if self.opts.password_stdin
                else os.environ.get("XFER_PASSWORD")
            )
        return self._password

    def code(self) -> str | None:
        """The verification code from stdin (--otp-stdin), once: a code is good for one
        login, so later connections get none and fail rather than reuse it."""
        if self._code_read:
            return None
        self.secret()  # a password comes first on stdin
        self._code_read = True
        return sys.stdin.readline().strip() or None

    async def remote(self) -> Remote:
        if self._remote is None:
            code = self.code if self.opts.otp_stdin else None
            self._remote = await open_remote(self.opts, self.secret(), code=code)
        return self._remote

    async def pool(self, n: int) -> list[Remote]:
        """``n`` connections (the first is :meth:`remote`), in the same directory: against
        sftpd with several workers they spread over its processes."""
        first = await self.remote()
        if first.conn.get_extra_info("xfer_asked_code"):
            return [first]  # each login would need a code of its own: one connection
        missing = n - 1 - len(self._extra)
        if missing > 0:  # at once: each costs a few round trips
            more = await asyncio.gather(
                *(open_remote(self.opts, self.secret(), first.cwd) for _ in range(missing)),
                return_exceptions=True,
            )
            self._extra += [r for r in more if isinstance(r, Remote)]
            errors = [r for r in more if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        return [first, *self._extra[: max(0, n - 1)]]

    def known_cwd(self) -> str | None:
        """The working directory if it is known without connecting."""
        if self._remote is not None:
            return self._remote.cwd
        _target, profile = resolve_profile(self.opts)
        return profile.cwd if profile else None

    def close(self) -> None:
        for remote in [*([self._remote] if self._remote else []), *self._extra]:
            remote.sftp.exit()
            remote.conn.close()
        self._remote = None
        self._extra = []


@dataclass(frozen=True)
class Call:
    """What a verb runs with: the options in force, the session, and whether a person is at
    the shell (where the session outlives the verb)."""

    opts: Options
    session: Session
    interactive: bool = False

    async def remote(self) -> Remote:
        return await self.session.remote()
