"""The ``sftpd`` command: serve, keys, user ... . Verbs parse and print; logic lives elsewhere."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import asyncssh
import typer

from sftpd.config import FIELDS, ConfigError, Settings, flag_of, help_of, load_settings
from sftpd.core.limits import parse_networks
from sftpd.core.permissions import format_permissions, normalize_dir, parse_permissions
from sftpd.core.session import UsageReport
from sftpd.exec.sp import sp_line
from sftpd.hostkeys import HostKeyError, load_or_create
from sftpd.logs import setup_logging
from sftpd.passwords import hash_password, random_password
from sftpd.reconcile import ScanResult, scan_user
from sftpd.server import open_service_store, serve
from sftpd.sizes import count, format_size, parse_size
from sftpd.ssh.compat import warn_if_untested
from sftpd.store import AccessRecord, KeyRecord, Store, StoreError, UserRecord
from sftpd.users import ensure_home, valid_username
from sftpd.workers import serve_workers

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_CONFIG = 2
DEMO_USER = "demo"

app = typer.Typer(
    rich_markup_mode=None,
    help="sftpd: a secure, quota-limited SFTP and SCP server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(
    rich_markup_mode=None, help="Manage users (works while the server runs).", no_args_is_help=True
)
key_app = typer.Typer(
    rich_markup_mode=None, help="Manage a user's public keys.", no_args_is_help=True
)
quota_app = typer.Typer(rich_markup_mode=None, help="Usage and quotas.", no_args_is_help=True)
defender_app = typer.Typer(
    rich_markup_mode=None,
    help="Client addresses blocked after repeated login failures.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")
app.add_typer(quota_app, name="quota")
app.add_typer(defender_app, name="defender")
db_app = typer.Typer(
    rich_markup_mode=None, help="The database (SQLite or PostgreSQL).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
user_app.add_typer(key_app, name="key")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file.", show_default=False)
]
DataDirOpt = Annotated[
    Path | None, typer.Option(flag_of("data_dir"), help=help_of("data_dir"), show_default=False)
]
KeysDirOpt = Annotated[
    Path | None, typer.Option(flag_of("keys_dir"), help=help_of("keys_dir"), show_default=False)
]
DbOpt = Annotated[str | None, typer.Option(flag_of("db"), help=help_of("db"), show_default=False)]


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@dataclass(frozen=True)
class GlobalOptions:
    """What was given before the verb; carried in the root context's ``obj``."""

    config: Path | None = None
    data_dir: Path | None = None
    keys_dir: Path | None = None
    db: str | None = None


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"sftpd: {message}", err=True)
    raise typer.Exit(code)


def settings(ctx: typer.Context, **flags: Any) -> Settings:
    """The settings for this invocation: global options, then ``flags``, over the rest."""
    given = ctx.find_root().obj
    opts = given if isinstance(given, GlobalOptions) else GlobalOptions()
    try:
        return load_settings(
            opts.config,
            {"data_dir": opts.data_dir, "keys_dir": opts.keys_dir, "db": opts.db, **flags},
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)


def with_store(ctx: typer.Context, fn: Callable[[Store, Settings], Awaitable[T]]) -> T:
    """Run ``fn`` against the configured store; map store and config errors to exits."""
    conf = settings(ctx)

    async def run() -> T:
        store = await open_service_store(conf)
        try:
            return await fn(store, conf)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except StoreError as exc:
        fail(str(exc))


def check_name(name: str) -> str:
    if not valid_username(name):
        fail(f"invalid user name {name!r}: use 1-32 of a-z 0-9 _ . - (starting with a letter or _)")
    return name


def read_keys(path: Path) -> list[KeyRecord]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        fail(f"cannot read key file {path}: {exc.strerror}")
    keys = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            key = asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError):
            fail(f"{path} does not hold an OpenSSH public key")
        keys.append(
            KeyRecord(
                fingerprint=key.get_fingerprint("sha256"),
                algorithm=key.get_algorithm(),
                public_key=key.export_public_key().decode().strip(),
                comment=key.get_comment() or "",
            )
        )
    if not keys:
        fail(f"{path} holds no public key")
    return keys


def ask_password(stdin: bool) -> str:
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if password != getpass.getpass("Repeat password: "):
            fail("passwords do not match")
    if not password:
        fail("empty password")
    return password


def quota_text(user: UserRecord, default: int) -> str:
    """``1.2 GiB of 5.0 GiB (24%), 1,234 files``: usage against quota, like ``sp``."""
    quota = default if user.quota_bytes is None else user.quota_bytes
    report = UsageReport(user.used_bytes, user.used_files, quota, user.max_files or 0)
    return sp_line(report).removeprefix("used ")


def parse_quota(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        fail(str(exc))


@app.callback()
def main_options(
    ctx: typer.Context,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    keys_dir: KeysDirOpt = None,
    db: DbOpt = None,
) -> None:
    ctx.obj = GlobalOptions(config, data_dir, keys_dir, db)


def _opt(name: str, *short: str) -> Any:
    """A ``serve`` option for setting ``name``: flag and help from its one declaration."""
    return typer.Option(flag_of(name), *short, help=help_of(name), show_default=False)


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    listen: Annotated[list[str] | None, _opt("listen", "-l")] = None,
    port: Annotated[int | None, _opt("port", "-p")] = None,
    default_quota: Annotated[str | None, _opt("default_quota")] = None,
    login_grace_time: Annotated[float | None, _opt("login_grace_time")] = None,
    max_auth_attempts: Annotated[int | None, _opt("max_auth_attempts")] = None,
    idle_timeout: Annotated[float | None, _opt("idle_timeout")] = None,
    max_sessions_per_user: Annotated[int | None, _opt("max_sessions_per_user")] = None,
    max_connections_per_address: Annotated[int | None, _opt("max_connections_per_address")] = None,
    defender_max_failures: Annotated[int | None, _opt("defender_max_failures")] = None,
    defender_window: Annotated[float | None, _opt("defender_window")] = None,
    defender_ban_time: Annotated[float | None, _opt("defender_ban_time")] = None,
    log_format: Annotated[str | None, _opt("log_format")] = None,
    log_level: Annotated[str | None, _opt("log_level")] = None,
    workers: Annotated[int | None, _opt("workers")] = None,
    ciphers: Annotated[str | None, _opt("ciphers")] = None,
    node_timeout: Annotated[float | None, _opt("node_timeout")] = None,
    demo: Annotated[
        bool, typer.Option(help="Create user 'demo' with a random password if there is no user.")
    ] = True,
) -> None:
    """Run the server until SIGINT or SIGTERM."""
    flags = {k: v for k, v in ctx.params.items() if k in FIELDS and v not in (None, [], ())}
    conf = settings(ctx, **flags)
    setup_logging(conf.log_format, conf.log_level)
    warn_if_untested()
    count = conf.workers or os.cpu_count() or 1
    try:
        if demo:
            asyncio.run(create_demo_user(conf))
        if count == 1:
            asyncio.run(serve(conf))
        else:
            raise typer.Exit(serve_workers(conf, count))
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except KeyboardInterrupt:
        pass


async def create_demo_user(conf: Settings) -> None:
    store = await open_service_store(conf)
    try:
        if await store.count_users():
            return
        password = random_password()
        await store.add_user(UserRecord(DEMO_USER, password_hash=hash_password(password)))
        ensure_home(conf.homes_dir, DEMO_USER)
    finally:
        await store.close()
    port = conf.port if conf.port else "PORT"
    print(
        f"created user {DEMO_USER!r} with password {password}\n"
        f"  log in with: sftp -P {port} {DEMO_USER}@{conf.listen[0]}",
        flush=True,
    )


@app.command("keys")
def keys_cmd(ctx: typer.Context) -> None:
    """Print the host key fingerprints (creating the keys if missing)."""
    try:
        for key in load_or_create(settings(ctx).keys_dir):
            typer.echo(f"{key.algorithm} {key.fingerprint} {key.path}")
    except HostKeyError as exc:
        fail(str(exc), EXIT_CONFIG)


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
        "keys": [{"fingerprint": k.fingerprint, "algorithm": k.algorithm} for k in u.keys],
        "permissions": u.access.permissions or "all",
        "paths": dict(u.access.paths),
        "allowed_from": list(u.access.allowed_from),
        "expires_at": u.access.expires_at,
        "upload_bps": u.access.upload_bps or None,
        "download_bps": u.access.download_bps or None,
    }


@user_app.command("show")
def user_show(ctx: typer.Context, name: str, json_out: JsonOpt = False) -> None:
    """Show one user."""

    async def q(store: Store, conf: Settings) -> tuple[UserRecord | None, int]:
        return await store.get_user(name), conf.default_quota

    user, default = with_store(ctx, q)
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
        typer.echo(f"key:      {k.algorithm} {k.fingerprint} {k.comment}".rstrip())
    for line in access_lines(user.access):
        typer.echo(line)


def access_lines(a: AccessRecord) -> list[str]:
    lines = [f"perm:     {a.permissions or 'all'}"]
    lines += [f"perm:     {path} {perms}" for path, perms in a.paths]
    if a.allowed_from:
        lines.append(f"from:     {', '.join(a.allowed_from)}")
    if a.expires_at is not None:
        lines.append(
            f"expires:  {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(a.expires_at))}"
        )
    for what, rate in (("upload", a.upload_bps), ("download", a.download_bps)):
        if rate:
            lines.append(f"{what + ':':<9} {format_size(rate)}/s")
    return lines


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


def _usage_error(message: str) -> NoReturn:
    fail(message, EXIT_CONFIG)


def _update_access(
    ctx: typer.Context, name: str, change: Callable[[AccessRecord], AccessRecord]
) -> AccessRecord:
    """Read, change and store a user's access (one admin at a time is assumed)."""

    async def q(store: Store, _conf: Settings) -> AccessRecord | None:
        user = await store.get_user(name)
        if user is None:
            return None
        new = change(user.access)
        return new if await store.set_access(name, new) else None

    new = with_store(ctx, q)
    if new is None:
        fail(f"no such user: {name}")
    return new


@user_app.command("perm")
def user_perm(
    ctx: typer.Context,
    name: str,
    args: Annotated[
        list[str], typer.Argument(help="[PATH] PERMISSIONS: all, none or a comma list.")
    ],
    remove: Annotated[bool, typer.Option(help="Remove PATH's override.")] = False,
) -> None:
    """Set what NAME may do: everywhere, or in PATH and below (the longest path wins).

    Permissions: list, download, upload, overwrite, delete, rename, mkdir, rmdir, symlink,
    chmod, chtimes. A read-only user is list,download. Applies to running sessions within a
    second."""
    path, text = (
        (args[0], None) if remove else (args[0], args[1]) if len(args) == 2 else (None, args[0])
    )
    if len(args) > 2 or (remove and len(args) != 1) or (path is None and text is None):
        _usage_error("usage: sftpd user perm NAME [PATH] PERMISSIONS, or NAME PATH --remove")
    try:
        perms = None if text is None else format_permissions(parse_permissions(text))
        key = None if path is None else "/" + "/".join(normalize_dir(path))
    except ValueError as exc:
        _usage_error(str(exc))

    def change(a: AccessRecord) -> AccessRecord:
        if key is None:
            return replace(a, permissions=None if perms == "all" else perms)
        paths = {p: v for p, v in a.paths if p != key}
        if perms is not None:
            paths[key] = perms
        return replace(a, paths=tuple(sorted(paths.items())))

    _update_access(ctx, name, change)
    where = f" in {key}" if key else ""
    typer.echo(f"{name}{where}: " + ("override removed" if remove else f"{perms}"))


def _rate(text: str) -> int:
    try:
        return parse_size(text.removesuffix("/s"))
    except ValueError as exc:
        _usage_error(str(exc))


def _expiry(text: str) -> float | None:
    if text.lower() == "never":
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    _usage_error(f"not a date: {text!r} (YYYY-MM-DD [HH:MM], local time, or never)")


@user_app.command("limit")
def user_limit(
    ctx: typer.Context,
    name: str,
    upload: Annotated[
        str | None, typer.Option(help="Upload rate, e.g. 2MiB (per second), or unlimited.")
    ] = None,
    download: Annotated[
        str | None, typer.Option(help="Download rate, e.g. 10MB, or unlimited.")
    ] = None,
    allow_from: Annotated[
        str | None, typer.Option(help="Comma list of addresses/CIDRs logins may come from; 'any'.")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD [HH:MM] (local), or never.")
    ] = None,
) -> None:
    """Set bandwidth, allowed source addresses and expiry. Rates apply to running sessions
    within a second; addresses and expiry at the next login."""
    if upload is download is allow_from is expires is None:
        _usage_error("nothing to change: give --upload, --download, --allow-from or --expires")
    up = None if upload is None else _rate(upload)
    down = None if download is None else _rate(download)
    nets: tuple[str, ...] | None = None
    if allow_from is not None:
        items = [] if allow_from.strip().lower() == "any" else allow_from.split(",")
        try:
            nets = tuple(str(n) for n in parse_networks(items))
        except ValueError as exc:
            _usage_error(str(exc))
    expiry = None if expires is None else _expiry(expires)

    def change(a: AccessRecord) -> AccessRecord:
        return replace(
            a,
            upload_bps=a.upload_bps if up is None else up,
            download_bps=a.download_bps if down is None else down,
            allowed_from=a.allowed_from if nets is None else nets,
            expires_at=a.expires_at if expires is None else expiry,
        )

    new = _update_access(ctx, name, change)
    for line in access_lines(new)[1 + len(new.paths) :] or ["no limits"]:
        typer.echo(line)


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
    name: Annotated[str | None, typer.Argument(help="One user; all users if omitted.")] = None,
) -> None:
    """Recompute usage from the disk (also done at start after a crash)."""

    async def q(store: Store, conf: Settings) -> list[ScanResult]:
        names = [name] if name else [u.name for u in await store.list_users()]
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
def key_add(ctx: typer.Context, name: str, file: Path) -> None:
    """Add the public key(s) in FILE to a user."""
    keys = read_keys(file)

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


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply schema migrations now (``serve`` also does it at start; safe on many nodes)."""
    with_store(ctx, lambda s, _c: s.count_users())
    typer.echo("database schema is current")


@defender_app.command("list")
def defender_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Addresses with login failures on record, and which are blocked until when."""
    now = time.time()
    bans = with_store(ctx, lambda s, _c: s.bans(now))
    if json_out:
        typer.echo(json.dumps([vars(b) for b in bans]))
        return
    for b in bans:
        state = (
            "blocked until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.banned_until))
            if b.banned_until
            else "not blocked"
        )
        typer.echo(f"{b.addr}  {b.failures} failures  {state}")


@defender_app.command("unblock")
def defender_unblock(ctx: typer.Context, addr: str) -> None:
    """Forget an address's failures and lift its block (on every worker and node)."""
    if not with_store(ctx, lambda s, _c: s.unban(addr)):
        fail(f"{addr} has no failures on record")
    typer.echo(f"unblocked {addr}")


def main() -> None:
    app()
