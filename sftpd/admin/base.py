"""The admin CLI's typer apps, global options and the helpers every command uses."""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import asyncssh
import typer

from sftpd.config import ConfigError, Settings, flag_of, help_of, load_settings
from sftpd.core.session import UsageReport
from sftpd.exec.sp import sp_line
from sftpd.server import open_service_store
from sftpd.sizes import format_size, parse_size
from sftpd.store import (
    AccessRecord,
    KeyRecord,
    Store,
    StoreError,
    UserRecord,
)
from sftpd.users import valid_username

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
folder_app = typer.Typer(
    rich_markup_mode=None,
    help="Shared folders: directories with their own quota, mounted into users' trees.",
    no_args_is_help=True,
)
app.add_typer(folder_app, name="folder")
mount_app = typer.Typer(
    rich_markup_mode=None, help="Mount shared folders into a user's tree.", no_args_is_help=True
)
user_app.add_typer(mount_app, name="folder")
twofa_app = typer.Typer(
    rich_markup_mode=None,
    help="A second factor (TOTP codes from an authenticator app) for a user's logins.",
    no_args_is_help=True,
)
user_app.add_typer(twofa_app, name="2fa")

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
