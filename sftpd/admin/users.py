"""``sftpd user ...``, ``sftpd user key ...`` and ``sftpd quota scan``: accounts, keys, usage."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from sftpd.admin.base import (
    EXIT_FAILED,
    JsonOpt,
    access_lines,
    ask_password,
    check_name,
    fail,
    key_app,
    parse_quota,
    quota_app,
    quota_text,
    read_keys,
    settings,
    user_app,
    with_store,
)
from sftpd.admin.logins import factors_line
from sftpd.config import Settings
from sftpd.core.limits import parse_networks
from sftpd.passwords import hash_password, random_password
from sftpd.reconcile import ScanResult, scan_user
from sftpd.sizes import count, format_size
from sftpd.store import (
    Store,
    UserRecord,
    folder_account,
)
from sftpd.users import ensure_home


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: str,
    key: Annotated[list[Path] | None, typer.Option("--key", "-k", help="Public key file.")] = None,
    password: Annotated[bool, typer.Option("--password", help="Prompt for a password.")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    quota: Annotated[str | None, typer.Option(help="e.g. 5GiB, 500MB, unlimited.")] = None,
    max_files: Annotated[int | None, typer.Option(help="File-count limit (0: none).")] = None,
) -> None:
    """Add a user. With no key and no password option, a random password is printed."""
    check_name(name)
    keys = [k for path in key or [] for k in read_keys(path)]
    quota_bytes = None if quota is None else parse_quota(quota)
    generated = None
    if password or password_stdin:
        pw_hash: str | None = hash_password(ask_password(password_stdin))
    elif not keys:
        generated = random_password()
        pw_hash = hash_password(generated)
    else:
        pw_hash = None

    async def add(store: Store, conf: Settings) -> None:
        await store.add_user(
            UserRecord(name, pw_hash, quota_bytes, keys=tuple(keys), max_files=max_files)
        )
        ensure_home(conf.homes_dir, name)

    with_store(ctx, add)
    typer.echo(f"added user {name}" + (f" with password {generated}" if generated else ""))


@user_app.command("list")
def user_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List users with status and usage."""

    async def q(store: Store, conf: Settings) -> tuple[list[UserRecord], int]:
        return await store.list_users(), conf.default_quota

    users, default = with_store(ctx, q)
    if json_out:
        typer.echo(json.dumps([user_json(u, default) for u in users], indent=2))
        return
    for u in users:
        status = "disabled" if u.disabled else "enabled"
        typer.echo(f"{u.name:<20} {status:<9} keys={len(u.keys):<3} {quota_text(u, default)}")


def user_json(u: UserRecord, default: int) -> dict[str, Any]:
    quota = default if u.quota_bytes is None else u.quota_bytes
    return {
        "name": u.name,
        "disabled": u.disabled,
        "password": u.password_hash is not None,
        "quota": quota or None,
        "used": u.used_bytes,
        "files": u.used_files,
        "max_files": u.max_files or None,
        "keys": [
            {
                "fingerprint": k.fingerprint,
                "algorithm": k.algorithm,
                "from": list(k.allowed_from),
                "exempt": k.exempt,
            }
            for k in u.keys
        ],
        "permissions": u.access.permissions or "all",
        "paths": dict(u.access.paths),
        "allowed_from": list(u.access.allowed_from),
        "expires_at": u.access.expires_at,
        "upload_bps": u.access.upload_bps or None,
        "download_bps": u.access.download_bps or None,
        "folders": {m.vpath: m.folder for m in u.mounts},
        "login_policy": u.login_policy,
        "totp": u.totp_secret is not None,
        "recovery_codes": u.recovery_codes,
    }


@user_app.command("show")
def user_show(ctx: typer.Context, name: str, json_out: JsonOpt = False) -> None:
    """Show one user."""

    async def q(store: Store, conf: Settings) -> tuple[UserRecord | None, Settings]:
        return await store.get_user(name), conf

    user, conf = with_store(ctx, q)
    default = conf.default_quota
    if user is None:
        fail(f"no such user: {name}")
    if json_out:
        typer.echo(json.dumps(user_json(user, default), indent=2))
        return
    typer.echo(f"user:     {user.name}")
    typer.echo(f"status:   {'disabled' if user.disabled else 'enabled'}")
    typer.echo(f"password: {'set' if user.password_hash else 'none'}")
    typer.echo(f"usage:    {quota_text(user, default)}")
    for k in user.keys:
        limits = (f" from={','.join(k.allowed_from)}" if k.allowed_from else "") + (
            " exempt" if k.exempt else ""
        )
        typer.echo(f"key:      {k.algorithm} {k.fingerprint} {k.comment}".rstrip() + limits)
    for line in access_lines(user.access):
        typer.echo(line)
    for m in user.mounts:
        typer.echo(f"folder:   {m.vpath} -> {m.folder}")
    typer.echo(f"logins:   {factors_line(user, conf)}")


def _must(found: bool, name: str) -> None:
    if not found:
        fail(f"no such user: {name}")


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: str,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Set a user's password."""
    pw_hash = hash_password(ask_password(password_stdin))
    _must(with_store(ctx, lambda s, _c: s.set_password(name, pw_hash)), name)
    typer.echo(f"password of {name} changed")


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: str) -> None:
    """Forbid logins (by any method) from the next login on."""
    _must(with_store(ctx, lambda s, _c: s.set_disabled(name, True)), name)
    typer.echo(f"disabled user {name}")


@user_app.command("enable")
def user_enable(ctx: typer.Context, name: str) -> None:
    """Allow logins again."""
    _must(with_store(ctx, lambda s, _c: s.set_disabled(name, False)), name)
    typer.echo(f"enabled user {name}")


@user_app.command("del")
def user_del(
    ctx: typer.Context,
    name: str,
    purge: Annotated[bool, typer.Option(help="Also delete the user's home and files.")] = False,
) -> None:
    """Delete a user (their files stay unless --purge)."""
    check_name(name)
    _must(with_store(ctx, lambda s, _c: s.delete_user(name)), name)
    if purge:
        home = settings(ctx).homes_dir / name
        if home.is_dir() and not home.is_symlink():
            shutil.rmtree(home)
    typer.echo(f"deleted user {name}" + (" and their files" if purge else ""))


@user_app.command("quota")
def user_quota(
    ctx: typer.Context,
    name: str,
    size: Annotated[str, typer.Argument(help="e.g. 5GiB, 500MB, unlimited, or 'default'.")],
    max_files: Annotated[int | None, typer.Option(help="File-count limit (0: none).")] = None,
) -> None:
    """Set a user's byte quota (and optionally file-count limit); applies at once."""
    quota_bytes = None if size == "default" else parse_quota(size)

    async def q(store: Store, _conf: Settings) -> bool:
        found = await store.set_quota(name, quota_bytes)
        if found and max_files is not None:
            await store.set_max_files(name, max_files or None)
        return found

    _must(with_store(ctx, q), name)
    typer.echo(f"quota of {name} set to {size}")


@quota_app.command("scan")
def quota_scan(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="One user (@NAME: a folder); all if omitted.")
    ] = None,
) -> None:
    """Recompute usage from the disk (also done at start after a crash)."""

    async def q(store: Store, conf: Settings) -> list[ScanResult]:
        names = (
            [name]
            if name
            else [u.name for u in await store.list_users()]
            + [folder_account(f.name) for f in await store.list_folders()]
        )
        try:
            return [await scan_user(store, conf, n) for n in names]
        except LookupError as exc:
            fail(str(exc))

    busy = False
    for r in with_store(ctx, q):
        if r.stored:
            typer.echo(f"{r.user}: {format_size(r.used)} in {count(r.files, 'file')}")
        else:
            busy = True
            typer.echo(f"{r.user}: busy (uploads in progress), usage left as it was", err=True)
    if busy:
        raise typer.Exit(EXIT_FAILED)


@key_app.command("add")
def key_add(
    ctx: typer.Context,
    name: str,
    file: Path,
    allowed_from: Annotated[
        str | None,
        typer.Option("--from", help="Accept the key only from these networks (CIDR, commas)."),
    ] = None,
    exempt: Annotated[
        bool,
        typer.Option(
            "--exempt",
            help="The key alone completes a login, whatever the login policy (needs --from).",
        ),
    ] = False,
) -> None:
    """Add the public key(s) in FILE to a user."""
    nets: tuple[str, ...] = ()
    if allowed_from is not None:
        try:
            nets = tuple(str(n) for n in parse_networks(allowed_from.split(",")))
        except ValueError as exc:
            fail(str(exc))
    if exempt and not nets:
        fail("an exempt key must be limited to given addresses: add --from NETWORKS")
    keys = [replace(k, allowed_from=nets, exempt=exempt) for k in read_keys(file)]

    async def add(store: Store, _conf: Settings) -> None:
        for k in keys:
            await store.add_key(name, k)

    with_store(ctx, add)
    for k in keys:
        typer.echo(f"added key {k.fingerprint} to {name}")


@key_app.command("del")
def key_del(ctx: typer.Context, name: str, fingerprint: str) -> None:
    """Remove a key by its SHA256 fingerprint."""
    if not with_store(ctx, lambda s, _c: s.delete_key(name, fingerprint)):
        fail(f"{name} has no key {fingerprint}")
    typer.echo(f"removed key {fingerprint} from {name}")
