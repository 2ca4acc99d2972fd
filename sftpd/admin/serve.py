"""``sftpd serve`` and ``sftpd keys``: run the server, show its host keys."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

from sftpd.admin.base import (
    DEMO_USER,
    EXIT_CONFIG,
    _opt,
    app,
    fail,
    settings,
)
from sftpd.config import FIELDS, ConfigError, Settings
from sftpd.events.hooks import old_meaning_warnings
from sftpd.hostkeys import HostKeyError, load_or_create
from sftpd.logs import setup_logging
from sftpd.passwords import hash_password, random_password
from sftpd.server import open_service_store, serve
from sftpd.ssh.compat import warn_if_untested
from sftpd.store import (
    UserRecord,
)
from sftpd.users import ensure_home
from sftpd.workers import serve_workers


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
    upload_mode: Annotated[str | None, _opt("upload_mode")] = None,
    login_policy: Annotated[str | None, _opt("login_policy")] = None,
    user_ca: Annotated[list[str] | None, _opt("user_ca")] = None,
    revoked_keys: Annotated[str | None, _opt("revoked_keys")] = None,
    metrics_listen: Annotated[str | None, _opt("metrics_listen")] = None,
    event_buffer: Annotated[int | None, _opt("event_buffer")] = None,
    hook_concurrency: Annotated[int | None, _opt("hook_concurrency")] = None,
    history_days: Annotated[float | None, _opt("history_days")] = None,
    demo: Annotated[
        bool, typer.Option(help="Create user 'demo' with a random password if there is no user.")
    ] = True,
) -> None:
    """Run the server until SIGINT or SIGTERM."""
    flags = {k: v for k, v in ctx.params.items() if k in FIELDS and v not in (None, [], ())}
    conf = settings(ctx, **flags)
    setup_logging(conf.log_format, conf.log_level)
    warn_if_untested()
    for line in old_meaning_warnings(conf.hooks):
        logging.getLogger("sftpd.hooks").warning(line)
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
