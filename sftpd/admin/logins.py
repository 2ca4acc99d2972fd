"""``sftpd user 2fa ...`` and ``sftpd user policy``: a user's second factor and which
login methods admit them (sftpd/core/logins.py, docs/security.md)."""

from __future__ import annotations

import io
import sys
from typing import Annotated

import segno
import typer

from sftpd.admin.base import fail, twofa_app, user_app, with_store
from sftpd.config import Settings
from sftpd.core import logins
from sftpd.store import Store, UserRecord


def _user(ctx: typer.Context, name: str) -> tuple[UserRecord, Settings]:
    async def q(store: Store, conf: Settings) -> tuple[UserRecord | None, Settings]:
        return await store.get_user(name), conf

    user, conf = with_store(ctx, q)
    if user is None:
        fail(f"no such user: {name}")
    return user, conf


def factors_line(user: UserRecord, conf: Settings) -> str:
    """``publickey,certificate,password+totp (server default); TOTP enrolled, 9 recovery codes``."""
    own = user.login_policy is not None
    policy = logins.describe(
        logins.effective(user.login_policy, conf.login_policy, user.totp_secret is not None)
    )
    totp = (
        f"TOTP enrolled, {user.recovery_codes} recovery codes left"
        if user.totp_secret
        else "no second factor"
    )
    return f"{policy} ({'own policy' if own else 'server default'}); {totp}"


@twofa_app.command("enable")
def twofa_enable(
    ctx: typer.Context,
    name: str,
    code_stdin: Annotated[
        bool, typer.Option(help="Read the confirming code from stdin (no QR code shown).")
    ] = False,
) -> None:
    """Enrol a TOTP secret: shows it as a QR code and an otpauth:// URI, asks for one code
    from the app to confirm, then shows single-use recovery codes (once)."""
    user, _conf = _user(ctx, name)
    if user.totp_secret is not None:
        fail(f"{name} already has a second factor: '2fa disable' it first")
    secret = logins.new_secret()
    uri = logins.provisioning_uri(secret, name)
    if not code_stdin:
        qr = io.StringIO()
        segno.make(uri, error="m").terminal(out=qr, compact=True)
        typer.echo(qr.getvalue())
    typer.echo(f"otpauth URI: {uri}")
    typer.echo(f"or type the secret: {secret}")
    code = sys.stdin.readline().strip() if code_stdin else typer.prompt("Code from the app")
    step = logins.code_step(secret, code)
    if step is None:
        fail("that code does not match: nothing was changed; run '2fa enable' again")
    codes = logins.new_recovery_codes()
    hashes = [logins.recovery_hash(c) for c in codes]

    async def enable(store: Store, _conf: Settings) -> bool:
        # the confirming code is used up, like any code a login accepts
        return await store.set_totp(name, secret, hashes) and await store.use_totp_step(name, step)

    if not with_store(ctx, enable):
        fail(f"no such user: {name}")
    typer.echo(f"second factor enabled for {name}. Recovery codes (each works once; shown once):")
    for c in codes:
        typer.echo(f"  {c}")


@twofa_app.command("disable")
def twofa_disable(ctx: typer.Context, name: str) -> None:
    """Remove the user's TOTP secret and recovery codes."""
    if not with_store(ctx, lambda s, _c: s.set_totp(name, None, [])):
        fail(f"no such user: {name}")
    typer.echo(f"second factor disabled for {name}")


@twofa_app.command("status")
def twofa_status(ctx: typer.Context, name: str) -> None:
    """Whether the user has a second factor, recovery codes left, and the login policy."""
    user, conf = _user(ctx, name)
    typer.echo(f"{name}: {factors_line(user, conf)}")


@user_app.command("policy")
def user_policy(
    ctx: typer.Context,
    name: str,
    policy: Annotated[
        str,
        typer.Argument(
            help="Methods that admit the user: alternatives separated by ',', chained with "
            "'+', of publickey, password, totp (e.g. 'publickey+totp,password+totp'); "
            "'default' for the server's."
        ),
    ],
) -> None:
    """Set which login methods admit a user, alone or chained."""
    value = None if policy == "default" else policy
    if value is not None:
        try:
            value = logins.describe(logins.parse_policy(value))
        except ValueError as exc:
            fail(str(exc))
    user, _conf = _user(ctx, name)
    if not with_store(ctx, lambda s, _c: s.set_login_policy(name, value)):
        fail(f"no such user: {name}")
    if value and user.totp_secret is None and all("totp" in c for c in logins.parse_policy(value)):
        typer.echo(f"warning: every alternative needs a code and {name} has no second factor "
                   f"yet ('sftpd user 2fa enable {name}')", err=True)  # fmt: skip
    typer.echo(f"login policy of {name}: {value or 'server default'}")
