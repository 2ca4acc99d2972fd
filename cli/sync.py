"""``xfer sync``: make a destination tree match a source tree; a plan first, then its application.

A file is copied when the destination lacks it or it differs by size or modification time
(with ``checksum``, by content: the server's sha256 or check-file against the local hash).
Copies go through the one transfer engine (:mod:`cli.transfer`) with resume on, so an
interrupted sync continues partial files after proving their prefix; each copy is verified
and gets the source's mtime, so a second run copies nothing. ``delete`` removes destination
files (and then directories) the source lacks, only below the destination root.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from cli import transfer
from cli.errors import REMOTE, XferError
from cli.remote import Remote, local_digest, safe_name


@dataclass(frozen=True)
class Entry:
    size: int
    mtime: int


@dataclass
class Tree:
    """Regular files and directories below a root, by relative POSIX path."""

    files: dict[str, Entry] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Change:
    action: str  # upload, download, delete, rmdir
    rel: str
    reason: str = ""  # missing, size, mtime, checksum
    size: int = 0
    mtime: int = 0


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    mkdirs: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def copies(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("upload", "download")]

    @property
    def removals(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("delete", "rmdir")]


@dataclass
class Options:
    pull: bool = False
    delete: bool = False
    dry_run: bool = False
    checksum: bool = False
    exclude: tuple[str, ...] = ()


@dataclass
class Report:
    transferred: int = 0
    skipped: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    copied: transfer.Report = field(default_factory=transfer.Report)


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """A pattern matches the relative path, or any of its components (so excluding a
    directory's name excludes what is in it)."""
    parts = rel.split("/")
    return any(
        fnmatch.fnmatchcase(rel, p) or any(fnmatch.fnmatchcase(part, p) for part in parts)
        for p in patterns
    )


def local_tree(root: Path, patterns: tuple[str, ...]) -> Tree:
    """Blocking: run it in a thread. Symlinks are neither followed nor copied."""
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = [d for d in dirnames if not excluded(prefix + d, patterns)]
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                tree.dirs.add(prefix + d)
        for name in filenames:
            rel = prefix + name
            st = os.lstat(os.path.join(dirpath, name))
            if excluded(rel, patterns) or not os.path.isfile(os.path.join(dirpath, name)):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                continue
            tree.files[rel] = Entry(st.st_size, int(st.st_mtime))
    return tree


async def remote_tree(remote: Remote, root: str, patterns: tuple[str, ...]) -> Tree:
    tree = Tree()
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        for n in await remote.sftp.readdir(posixpath.join(root, rel_dir) if rel_dir else root):
            name = str(n.filename)
            if not safe_name(name):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if excluded(rel, patterns):
                continue
            if n.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                tree.dirs.add(rel)
                pending.append(rel)
            elif n.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                tree.files[rel] = Entry(n.attrs.size or 0, int(n.attrs.mtime or 0))
    return tree


async def _exists_remote_dir(remote: Remote, path: str) -> bool:
    try:
        return (await remote.sftp.stat(path)).type == asyncssh.FILEXFER_TYPE_DIRECTORY
    except asyncssh.SFTPNoSuchFile:
        return False


async def plan(remote: Remote, local: Path, rroot: str, opts: Options) -> Plan:
    """Compare the trees and list what to do, in the order to do it."""
    if opts.pull:
        if not await _exists_remote_dir(remote, rroot):
            raise XferError(REMOTE, f"{rroot}: no such remote directory")
        src = await remote_tree(remote, rroot, opts.exclude)
        dst = await asyncio.to_thread(local_tree, local, opts.exclude) if local.is_dir() else Tree()
    else:
        if not local.is_dir():
            raise XferError(REMOTE, f"{local}: no such local directory")
        src = await asyncio.to_thread(local_tree, local, opts.exclude)
        dst = (
            await remote_tree(remote, rroot, opts.exclude)
            if await _exists_remote_dir(remote, rroot)
            else Tree()
        )
    out = Plan(mkdirs=sorted(src.dirs - dst.dirs))
    verb = "download" if opts.pull else "upload"
    for rel, entry in sorted(src.files.items()):
        have = dst.files.get(rel)
        reason = await _differs(remote, local, rroot, rel, entry, have, opts)
        if reason:
            out.changes.append(Change(verb, rel, reason, entry.size, entry.mtime))
        else:
            out.skipped += 1
    if opts.delete:
        out.changes += [Change("delete", rel) for rel in sorted(set(dst.files) - set(src.files))]
        gone = sorted(dst.dirs - src.dirs, key=lambda d: d.count("/"), reverse=True)
        out.changes += [Change("rmdir", rel) for rel in gone]
    return out


async def _differs(
    remote: Remote, local: Path, rroot: str, rel: str, src: Entry, have: Entry | None,
    opts: Options,
) -> str:  # fmt: skip
    """Why ``rel`` must be copied ("" if it need not be)."""
    if have is None:
        return "missing"
    if have.size != src.size:
        return "size"
    if not opts.checksum:
        return "mtime" if have.mtime != src.mtime else ""
    got = await remote.checksum(posixpath.join(rroot, rel))
    if got is None:
        transfer.warn(f"{rel}: the server offers no checksum; comparing size and mtime")
        return "mtime" if have.mtime != src.mtime else ""
    alg, digest = got
    mine = await asyncio.to_thread(local_digest, str(local / rel), alg)
    return "" if mine == digest else "checksum"


def describe(change: Change) -> str:
    return f"{change.action} {change.rel}" + (f" ({change.reason})" if change.reason else "")


async def apply(
    pool: transfer.Pool, local: Path, rroot: str, the_plan: Plan, opts: Options,
    copy_opts: transfer.Options, show_progress: bool,
) -> Report:  # fmt: skip
    """Create directories, copy (resuming, verifying, keeping mtimes), then delete."""
    started = time.monotonic()
    remote = (await pool(1))[0]
    report = Report(skipped=the_plan.skipped)
    if opts.pull:
        local.mkdir(parents=True, exist_ok=True)
        for rel in the_plan.mkdirs:
            (local / rel).mkdir(parents=True, exist_ok=True)
    else:
        await remote.sftp.makedirs(rroot, exist_ok=True)
        for rel in the_plan.mkdirs:
            await remote.sftp.makedirs(posixpath.join(rroot, rel), exist_ok=True)
    copies = the_plan.copies
    jobs = [
        transfer.Job(posixpath.join(rroot, c.rel) if opts.pull else str(local / c.rel),
                     str(local / c.rel) if opts.pull else posixpath.join(rroot, c.rel), c.size)
        for c in copies
    ]  # fmt: skip
    mtimes = {job.dst: c.mtime for job, c in zip(jobs, copies, strict=True)}
    resume = transfer.Options(**{**copy_opts.__dict__, "resume": True})
    move = transfer.get_file if opts.pull else transfer.put_file
    stamp = _stamp_local if opts.pull else _stamp_remote

    async def one(remotes: list[Remote], job: transfer.Job, o: transfer.Options,
                  p: transfer.Progress, r: transfer.Report) -> None:  # fmt: skip
        await move(remotes[0], job.src, job.dst, o, p, r, remotes)
        await stamp(remotes[0], job.dst, mtimes[job.dst])

    report.copied = await transfer.run_jobs(jobs, one, resume, show_progress, pool)
    report.transferred, report.bytes = report.copied.files, report.copied.bytes
    for change in the_plan.removals:
        await _remove(remote, local, rroot, change, opts.pull)
        report.deleted += change.action == "delete"
    report.seconds = time.monotonic() - started
    return report


async def _stamp_remote(remote: Remote, path: str, mtime: int) -> None:
    await remote.sftp.utime(path, (mtime, mtime))


async def _stamp_local(remote: Remote, path: str, mtime: int) -> None:
    os.utime(path, (mtime, mtime))


async def _remove(remote: Remote, local: Path, rroot: str, change: Change, pull: bool) -> None:
    if pull:
        target = local / change.rel
        remove: Callable[[], None] = target.rmdir if change.action == "rmdir" else target.unlink
        try:
            remove()
        except OSError as exc:  # a directory holding excluded files stays, like rsync
            transfer.warn(f"{change.rel}: not removed: {exc.strerror}")
        return
    path = posixpath.join(rroot, change.rel)
    try:
        if change.action == "rmdir":
            await remote.sftp.rmdir(path)
        else:
            await remote.sftp.remove(path)
    except asyncssh.SFTPError as exc:
        transfer.warn(f"{change.rel}: not removed: {exc.reason}")
