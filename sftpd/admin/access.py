"""Access control: ``sftpd user perm``, ``sftpd user limit``, ``sftpd folder ...`` and
``sftpd user folder ...`` (shared folders and where users see them)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from sftpd.admin.base import (
    EXIT_CONFIG,
    JsonOpt,
    access_lines,
    fail,
    folder_app,
    mount_app,
    user_app,
    with_store,
)
from sftpd.config import Settings
from sftpd.core.limits import parse_networks
from sftpd.core.permissions import format_permissions, normalize_dir, parse_permissions
from sftpd.core.session import UsageReport
from sftpd.exec.sp import sp_line
from sftpd.sizes import parse_size
from sftpd.store import (
    AccessRecord,
    FolderRecord,
    Store,
    StoreError,
    folder_account,
)
from sftpd.users import valid_username


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


# -- shared folders ----------------------------------------------------------------


def _folder_dir(path: Path, conf: Settings, others: list[FolderRecord]) -> str:
    """An absolute folder directory that overlaps no home and no other folder."""
    real = path.expanduser().resolve()
    homes = conf.homes_dir.resolve()
    for taken, what in [(homes, "the homes directory"), *((Path(f.path), f"folder {f.name}")
                                                          for f in others)]:  # fmt: skip
        if real == taken or real.is_relative_to(taken) or taken.is_relative_to(real):
            _usage_error(f"{real} overlaps {what} ({taken})")
    return str(real)


@folder_app.command("add")
def folder_add(
    ctx: typer.Context,
    name: str,
    directory: Annotated[Path, typer.Argument(help="Server directory (created if missing).")],
    quota: Annotated[str, typer.Option(help="e.g. 50GiB, or unlimited.")] = "unlimited",
    max_files: Annotated[int | None, typer.Option(help="File-count limit (0: none).")] = None,
) -> None:
    """Add a shared folder. Its usage counts to its own quota, not to its users'."""
    if not valid_username(name):
        _usage_error(f"invalid folder name {name!r}: use 1-32 of a-z 0-9 _ . -")
    quota_bytes = _rate(quota)

    async def add(store: Store, conf: Settings) -> str:
        path = _folder_dir(directory, conf, await store.list_folders())
        os.makedirs(path, mode=0o700, exist_ok=True)
        await store.add_folder(FolderRecord(name, path, quota_bytes, max_files or None))
        return path

    path = with_store(ctx, add)
    typer.echo(f"added folder {name} at {path}")


@folder_app.command("list")
def folder_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List folders with their usage."""
    folders = with_store(ctx, lambda s, _c: s.list_folders())
    if json_out:
        typer.echo(json.dumps([asdict(f) for f in folders], indent=2))
        return
    for f in folders:
        report = UsageReport(f.used_bytes, f.used_files, f.quota_bytes, f.max_files or 0)
        typer.echo(f"{f.name:<20} {f.path}  {sp_line(report).removeprefix('used ')}")


@folder_app.command("quota")
def folder_quota(
    ctx: typer.Context,
    name: str,
    size: Annotated[str, typer.Argument(help="e.g. 50GiB, or unlimited.")],
    max_files: Annotated[int | None, typer.Option(help="File-count limit (0: none).")] = None,
) -> None:
    """Set a folder's quota; applies at once."""
    quota_bytes = _rate(size)

    async def q(store: Store, _conf: Settings) -> bool:
        found = await store.set_quota(folder_account(name), quota_bytes)
        if found and max_files is not None:
            await store.set_max_files(folder_account(name), max_files or None)
        return found

    if not with_store(ctx, q):
        _usage_error(f"no such folder: {name}")
    typer.echo(f"quota of folder {name} set to {size}")


@folder_app.command("del")
def folder_del(ctx: typer.Context, name: str) -> None:
    """Delete a folder and its mounts (its files stay on disk)."""
    if not with_store(ctx, lambda s, _c: s.delete_folder(name)):
        _usage_error(f"no such folder: {name}")
    typer.echo(f"deleted folder {name}; its directory is left as it was")


def _mount_point(vpath: str) -> str:
    try:
        parts = normalize_dir(vpath)
    except ValueError as exc:
        _usage_error(str(exc))
    if len(parts) != 1:
        _usage_error(f"mount point {vpath!r} must be one name below the root, like /team")
    return "/" + parts[0]


@mount_app.command("add")
def mount_add(
    ctx: typer.Context,
    name: str,
    folder: str,
    vpath: Annotated[str, typer.Argument(help="Where NAME sees it, e.g. /team.")],
    perm: Annotated[
        str | None, typer.Option(help="Permissions in the folder (default: the user's own).")
    ] = None,
) -> None:
    """Mount FOLDER at VPATH in NAME's tree (it hides anything of that name in the home).
    Applies from the next login."""
    at = _mount_point(vpath)
    try:
        perms = None if perm is None else format_permissions(parse_permissions(perm))
    except ValueError as exc:
        _usage_error(str(exc))

    async def q(store: Store, _conf: Settings) -> None:
        # One place per folder per user: two mount points would be two sets of rules
        # for the same bytes (a read-only /audit and a writable /audit2).
        record = await store.get_user(name)
        elsewhere = [m.vpath for m in record.mounts if m.folder == folder] if record else []
        if elsewhere and elsewhere != [at]:
            _usage_error(f"{name} already sees folder {folder} at {elsewhere[0]}: one place "
                         "per user (unmount it first)")  # fmt: skip
        try:
            await store.mount(name, at, folder)
        except StoreError as exc:
            _usage_error(str(exc))

    with_store(ctx, q)
    if perms is not None:
        _update_access(
            ctx,
            name,
            lambda a: replace(a, paths=tuple(sorted({**dict(a.paths), at: perms}.items()))),
        )
    typer.echo(f"{name} sees folder {folder} at {at}" + (f" ({perms})" if perms else ""))


@mount_app.command("del")
def mount_del(ctx: typer.Context, name: str, vpath: str) -> None:
    """Unmount the folder at VPATH from NAME's tree (from the next login)."""
    at = _mount_point(vpath)
    if not with_store(ctx, lambda s, _c: s.unmount(name, at)):
        _usage_error(f"{name} has no folder at {at}")
    typer.echo(f"unmounted {at} for {name}")
