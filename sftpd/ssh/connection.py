"""One SSH connection: authentication against the store, limits, idle timer, channels.

Every login attempt is one audit line (user, address, method, outcome, reason);
no password or key material is ever logged, only key fingerprints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from sftpd.core import logins
from sftpd.core.certs import Certificate, fingerprint, refusal
from sftpd.core.limits import address_in, expired
from sftpd.core.session import Folder, Session
from sftpd.events import Event
from sftpd.exec.table import servable
from sftpd.logs import audit
from sftpd.passwords import verify_password
from sftpd.ssh.compat import certificate_check, chained_logins, fast_send, sliced_input
from sftpd.ssh.sftp import SftpdServer
from sftpd.store import KeyRecord, StoreUnavailable, UserRecord, folder_account
from sftpd.users import ensure_home, valid_username

if TYPE_CHECKING:
    from sftpd.server import Service

log = logging.getLogger("sftpd.auth")


class Connection(asyncssh.SSHServer):
    """asyncssh's per-connection server object: login callbacks and session bookkeeping."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.username = ""
        self.addr = "?"
        self._conn: asyncssh.SSHServerConnection | None = None
        self._user: UserRecord | None = None
        self._method = ""
        self._failures = 0
        self._authenticated = False
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loaded: dict[str, tuple[UserRecord | None]] = {}
        self._conn_id = service.new_connection_id()
        self._admission: asyncio.Task[bool] | None = None
        # Resolved once the login is admitted (True) or refused (False); channels wait on it.
        self._session_ok: asyncio.Future[bool] | None = None
        self._registered = False
        self._password_failures = 0
        # The login so far: the methods passed, in order, on this connection for this
        # user name (a new name starts over), and what the user's policy asks.
        self._passed: list[str] = []
        self._policy: logins.Policy = logins.parse_policy(logins.DEFAULT)
        self._key_kind = "publickey"  # or "certificate": what the last key validated was
        self._exempt = False  # ... and whether it was a key exempt from the policy
        self._exempt_here = False  # the user has such a key for this address
        # A certificate's force-command, kept here: asyncssh forgets the certificate's
        # options at the next login request, so a step after the certificate (a code)
        # would lift the restriction. _cert_forced: of the last certificate validated.
        self._cert_forced: str | None = None
        self._forced: str | None = None
        self._login_fields: dict[str, Any] = {}  # key fingerprint, certificate id: audited
        self.closed = asyncio.Event()

    # -- connection lifecycle --------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        fast_send(conn)
        sliced_input(conn)
        chained_logins(conn, self._step_passed)
        certificate_check(conn, self._check_certificate)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.addr = str(peer[0])
        self.service.connections.add(self)
        self.service.metrics.connections.inc()
        loop = asyncio.get_running_loop()
        self._admission = loop.create_task(self._admit())
        self._session_ok = loop.create_future()

    async def _admit(self) -> bool:
        """Refuse a blocked address or one over its connection limit, before any login."""
        service = self.service
        try:
            # A blocked address is refused whatever the defender's threshold is now.
            admission = await service.store.admit(
                self._conn_id,
                service.holder,
                self.addr,
                service.settings.max_connections_per_address,
                time.time(),
            )
        except StoreUnavailable as exc:
            # Fail open: the limits are for fairness, and a full or locked database must
            # not lock every user out. Blocks are still read; logins still checked.
            log.error(
                "connection admitted without bookkeeping",
                extra={"addr": self.addr, "error": str(exc)},
            )
            return True
        service.metrics.connections_total.labels(admission).inc()
        if admission == "blocked":
            log.debug("blocked address refused", extra={"addr": self.addr})
            self.close("Too many login failures from your address; try again later")
            return False
        if admission == "full":
            audit(
                "connection refused",
                event="connection",
                level=logging.WARNING,
                addr=self.addr,
                outcome="refused",
                reason="too many connections from this address",
            )
            self.close("Too many connections from your address")
            return False
        self._registered = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.connections.discard(self)
        self.service.metrics.connections.dec()
        self.service.connection_closed()
        self.closed.set()
        if self._idle_timer:
            self._idle_timer.cancel()
        if self._admission is not None and not self._admission.done():
            self._admission.cancel()
        self._admit_sessions(False)
        if self._registered:
            self.service.background(self.service.forget_connection(self._conn_id))
        if not self._authenticated and self._failures and not self._password_failures:
            # Offered only keys (or names) that did not work: one strike per connection.
            self.service.background(self.service.defender.failure(self.addr, self.username))
        if self._authenticated:
            log.info(
                "logout",
                extra={"event": "logout", "user": self.username, "addr": self.addr},
            )
            self.service.bus.emit(Event("logout", self.username, self.addr, "ssh"))

    def close(self, reason: str) -> None:
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- authentication ------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        self.username = username
        self._passed, self._user, self._login_fields = [], None, {}
        self._forced = None
        if self._admission is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._admission)
        user = await self._load(username)
        self._policy = self._policy_of(user)
        self._exempt_here = user is not None and any(
            _key_allows(k, self.addr) and k.exempt for k in user.keys
        )
        return True

    def _policy_of(self, user: UserRecord | None) -> logins.Policy:
        """The user's policy (an unknown user gets the server's default, so the methods
        offered do not tell who exists unless a policy of their own differs)."""
        default = self.service.settings.login_policy
        if user is None:
            return logins.effective(None, default, False)
        try:
            return logins.effective(user.login_policy, default, user.totp_secret is not None)
        except ValueError:  # stored by hand: admit nobody rather than guess
            log.error("bad login policy", extra={"user": user.name})
            return ()

    def _offers(self, method: str) -> bool:
        return method in logins.remaining(self._policy, self._passed)

    def password_auth_supported(self) -> bool:
        return self._offers("password")

    def public_key_auth_supported(self) -> bool:
        exempt = self._exempt_here and not self._passed
        return exempt or self._offers("publickey") or self._offers("certificate")

    def kbdint_auth_supported(self) -> bool:
        return self._offers("totp")

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, tuple[tuple[str, bool], ...]] | bool:
        return "", "", "", (("Verification code: ", False),)

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        """The second factor: a TOTP code (each time step used once, on any node) or an
        unused recovery code. A wrong one counts like a wrong password."""
        if not self._admitted():
            return False
        user = await self._load(username)
        answer = responses[0] if len(responses) == 1 else ""
        reason = await self._second_factor(user, answer)
        if reason:
            self._failed(username, "totp", reason)
            await self._strike(username)
            return False
        assert user is not None
        return self._accept(user, "totp")

    async def _second_factor(self, user: UserRecord | None, answer: str) -> str:
        """Why ``answer`` does not pass (empty: it does, and is now used up)."""
        if user is None or user.totp_secret is None:
            return "no second factor"
        if logins.looks_like_recovery_code(answer):
            used = await self.service.store.use_recovery_code(
                user.name, logins.recovery_hash(answer)
            )
            if used:
                audit("recovery code used", event="login", user=user.name, addr=self.addr)
            return "" if used else "wrong recovery code"
        step = logins.code_step(user.totp_secret, answer)
        if step is None:
            return "wrong code"
        if not await self.service.store.use_totp_step(user.name, step):
            return "code already used"
        return ""

    def _step_passed(self, method: str) -> bool:
        """A method succeeded (compat.chained_logins): True if the login is complete,
        else the client is told to go on with what the policy still asks."""
        step = {"keyboard-interactive": "totp", "publickey": self._key_kind}.get(method, method)
        if step == "publickey" and self._exempt:  # a key exempt from the policy: enough
            self._passed, self._method = [step], step
            return True
        if step == "certificate":
            self._forced = self._cert_forced
        if step not in self._passed:
            self._passed.append(step)
        self._method = "+".join(self._passed)
        done = logins.satisfied(self._policy, self._passed)
        if not done:
            audit(
                "login step ok", event="login", user=self.username[:64], addr=self.addr,
                method=step, outcome="partial",
            )  # fmt: skip
        return done

    async def _load(self, username: str) -> UserRecord | None:
        """The user as stored, read once per connection attempt (a key is validated twice:
        when offered and when signed)."""
        if not valid_username(username) or not self._admitted():
            return None
        cached = self._loaded.get(username)
        if cached is None:
            try:
                cached = self._loaded[username] = (await self.service.store.get_user(username),)
            except StoreUnavailable as exc:
                log.error("cannot read user", extra={"user": username, "error": str(exc)})
                self.close("Service temporarily unavailable")
                return None
        return cached[0]

    def _admitted(self) -> bool:
        task = self._admission
        return task is None or (task.done() and not task.cancelled() and task.result())

    async def validate_password(self, username: str, password: str) -> bool:
        if not self._admitted():  # refused at admission: closing, nothing to count
            return False
        user = await self._load(username)
        ok = await verify_password(user.password_hash if user else None, password)
        if not ok:
            reason = "unknown user" if user is None else "wrong password"
            self._failed(username, "password", reason)
            await self._strike(username)
            return False
        assert user is not None
        return self._accept(user, "password")

    async def _strike(self, username: str) -> None:
        """Count a password failure against the address; answer late, or drop a blocked one."""
        self._password_failures += 1
        try:
            strike = await self.service.defender.failure(self.addr, username)
        except StoreUnavailable:
            return
        if strike.banned_until:
            self.close("Too many login failures from your address; try again later")
            return
        delay = self.service.defender.delay(strike)
        if delay:
            await asyncio.sleep(delay)

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if not self._admitted():
            return False
        user = await self._load(username)
        fp = key.get_fingerprint("sha256")
        if user is None:
            return self._failed(username, "publickey", "unknown user", key=fp)
        record = next((k for k in user.keys if k.fingerprint == fp), None)
        if record is None:
            return self._failed(username, "publickey", "key not authorized", key=fp)
        if not _key_allows(record, self.addr):
            return self._failed(username, "publickey", "key not allowed from this address", key=fp)
        exempt = record.exempt and not self._passed
        if not exempt and not self._offers("publickey"):
            return self._failed(username, "publickey", "not allowed by login policy", key=fp)
        if self.service.trust.revocations().key_revoked(key.public_data):
            return self._failed(username, "publickey", "key revoked", key=fp)
        self._key_kind, self._exempt = "publickey", exempt
        fields = {"key": fp, "exempt": "yes"} if exempt else {"key": fp}
        return self._accept(user, "publickey", **fields)

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """asyncssh's own check, after :meth:`_check_certificate` passed."""
        return key.public_data in self.service.trust.cas

    async def _check_certificate(self, username: str, cert: Certificate) -> bool:
        """An OpenSSH user certificate (compat.certificate_check): trusted CA, issued for
        this user, valid now, from an allowed address, not revoked, and forcing no
        command sftpd cannot run."""
        if not self._admitted():
            return False
        fields = {
            "key": fingerprint(cert.key), "ca": fingerprint(cert.ca),
            "cert_id": cert.key_id[:128], "serial": str(cert.serial),
        }  # fmt: skip
        user = await self._load(username)
        if user is None:
            return self._failed(username, "certificate", "unknown user", **fields)
        if not self._offers("certificate"):
            return self._failed(username, "certificate", "not allowed by login policy", **fields)
        trust = self.service.trust
        reason = refusal(cert, username, self.addr, trust.cas, trust.revocations(), servable)
        if reason:
            return self._failed(username, "certificate", reason, **fields)
        if not self._accept(user, "certificate", **fields):
            return False
        self._key_kind, self._exempt, self._cert_forced = "certificate", False, cert.force_command
        return True

    def _accept(self, user: UserRecord, method: str, **fields: str) -> bool:
        if user.disabled:
            return self._failed(user.name, method, "user disabled", **fields)
        if expired(user.access.expires_at):
            return self._failed(user.name, method, "account expired", **fields)
        if not address_in(self.addr, user.access.allowed_from):
            return self._failed(user.name, method, "address not allowed", **fields)
        self._user = user
        self._login_fields.update(fields)
        return True

    def _failed(self, username: str, method: str, reason: str, **fields: str) -> bool:
        self._failures += 1
        self.service.bus.emit(
            Event("login-failed", username[:64], self.addr, "ssh", reason=reason, method=method)
        )
        audit(
            "login failed",
            event="login",
            level=logging.WARNING,
            user=username[:64],
            addr=self.addr,
            method=method,
            outcome="failed",
            reason=reason,
            **fields,
        )
        if self._failures >= self.service.settings.max_auth_attempts:
            audit(
                "too many authentication failures",
                event="login",
                level=logging.WARNING,
                user=username[:64],
                addr=self.addr,
                outcome="disconnected",
                reason="max auth attempts",
            )
            self.close("Too many authentication failures")
        return False

    async def auth_completed(self) -> None:
        user = self._user
        assert user is not None
        try:
            ok = await self.service.store.start_session(
                self._conn_id, user.name, self.service.settings.max_sessions_per_user
            )
        except StoreUnavailable as exc:
            log.error(
                "session admitted without bookkeeping", extra={"user": user.name, "error": str(exc)}
            )
            ok = True
        if not ok:
            audit(
                "login refused",
                event="login",
                level=logging.WARNING,
                user=user.name,
                addr=self.addr,
                method=self._method,
                outcome="refused",
                reason="too many sessions",
            )
            self.close("Too many sessions for this user")
            return
        self._authenticated = True
        try:
            ensure_home(self.service.settings.homes_dir, user.name)
        except (OSError, ValueError) as exc:
            log.error("cannot prepare home", extra={"user": user.name, "error": str(exc)})
            self.close("Home directory unavailable")
            return
        audit(
            "login ok",
            event="login",
            user=user.name,
            addr=self.addr,
            method=self._method,
            outcome="ok",
            **self._login_fields,
        )
        self.service.bus.emit(Event("login", user.name, self.addr, "ssh", method=self._method))
        self._admit_sessions(True)
        self.touch()

    # -- sessions ------------------------------------------------------------

    def _admit_sessions(self, ok: bool) -> None:
        if self._session_ok is not None and not self._session_ok.done():
            self._session_ok.set_result(ok)

    async def session_requested(self) -> asyncssh.SSHServerSession:  # type: ignore[type-arg]
        """A session channel opens only once the login is admitted (the session limit
        is checked in the store after asyncssh has already reported success)."""
        from sftpd.ssh.channels import ChannelSession

        if self._session_ok is None or not await self._session_ok:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "Session refused"
            )
        return ChannelSession(self)

    def new_sftp_server(
        self,
        chan: asyncssh.SSHServerChannel,  # type: ignore[type-arg]
        protocol: str = "sftp",
    ) -> SftpdServer:
        assert self._user is not None
        name = self._user.name
        home = self.service.settings.homes_dir / name
        access = self.service.access(name, self._user.access)
        session = Session(
            name,
            str(home),
            self.service.ledger(name),
            self.addr,
            access,
            self._folders(),
            upload_mode=self.service.settings.upload_mode,
            process_tag=self.service.process_tag,
            emit=self.service.bus.emit,
            protocol=protocol,
        )
        sessions = self.service.metrics.sessions.labels(protocol)
        sessions.inc()
        return SftpdServer(chan, session, self.touch, sessions.dec)

    def _folders(self) -> list[Folder]:
        """The user's mounted folders; one whose directory is gone is left out and logged."""
        assert self._user is not None
        folders = []
        for m in self._user.mounts:
            if not os.path.isdir(m.path):
                log.error("folder directory missing", extra={"user": self._user.name,
                          "folder": m.folder})  # fmt: skip
                continue
            ledger = self.service.ledger(folder_account(m.folder))
            folders.append(Folder(m.vpath.strip("/"), m.folder, m.path, ledger))
        return folders

    def forced_command(self) -> str | None:
        """The command the login's certificate forces for every session, if any (run in
        place of whatever each session asks; only a servable one gets this far)."""
        return self._forced

    def refused(self, what: str) -> None:
        log.info("request refused", extra={"user": self.username, "addr": self.addr, "what": what})

    # -- idle timeout ----------------------------------------------------------

    def touch(self) -> None:
        """Note activity; the idle timer is re-armed lazily, not on every packet."""
        self._last_activity = time.monotonic()
        timeout = self.service.settings.idle_timeout
        if timeout and self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        timeout = self.service.settings.idle_timeout
        idle = time.monotonic() - self._last_activity
        if idle >= timeout:
            log.info("idle timeout", extra={"user": self.username, "addr": self.addr})
            self.close("Idle timeout")
        else:
            self._idle_timer = asyncio.get_running_loop().call_later(
                timeout - idle, self._check_idle
            )


def _key_allows(key: KeyRecord, addr: str) -> bool:
    """Whether a registered key may be used from ``addr`` (its ``--from`` networks). A key
    stored exempt without networks (by hand) is not exempt: refuse to guess which hosts."""
    if not key.allowed_from:
        return not key.exempt
    return address_in(addr, key.allowed_from)
