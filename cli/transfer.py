"""Uploads and downloads: pipelined requests, resume with a proven prefix, end-to-end checks.

A resume first proves that the part already on the other side is a prefix of the
source (a checksum of that range), so two different files are never glued
together. Every transfer is verified afterwards (sha256 when the server offers
it); a mismatch after a resume restarts that file from zero once, then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncssh

from cli.errors import CHECKSUM, REMOTE, XferError
from cli.profiles import config_dir
from cli.remote import Remote, local_digest, safe_name
from sftpd.core.limits import Pacer

WRITE_NEW = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
WRITE_RESUME = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT
STRIPE = 8 * 1024 * 1024  # a segmented transfer hands out the file in pieces of this size
PARTIAL_TRIM_SECONDS = 10.0  # a stopped upload's last request: cut the partial at its gap

#: ``pool(n)``: n open connections (the first is the session's own)
Pool = Callable[[int], Awaitable[list[Remote]]]


@dataclass
class Options:
    resume: bool = False
    verify: bool = True
    recursive: bool = False
    parallel: int = 4  # connections, and files in flight over them
    requests: int = 64  # requests in flight per connection
    segment_min: int = 64 * 1024 * 1024  # a file this big is split over the connections
    limit: Pacer = field(default_factory=Pacer)  # --limit-rate: all connections together


@dataclass
class Report:
    files: int = 0
    bytes: int = 0
    resumed_from: int = 0
    verified: set[str] = field(default_factory=set)
    unverified: int = 0
    seconds: float = 0.0
    segmented: int = 0  # files split over several connections


class Progress:
    """Rich progress bars on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar = None
        self._total_task = None
        if enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._total_task = self._bar.add_task("total", total=total)

    def file(self, name: str, size: int, done: int = 0) -> Callable[[int], None]:
        if self._bar is None:
            return lambda n: None
        bar, total = self._bar, self._total_task
        task = bar.add_task(name[-40:], total=size, completed=done)
        if total is not None:
            bar.advance(total, done)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if total is not None:
                bar.advance(total, n)

        return advance

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def warn(message: str) -> None:
    print(f"xfer: warning: {message}", file=sys.stderr)


class Frontier:
    """How far from its start a pipelined range is done without a gap: what a partial
    keeps when the transfer stops, so that a resume finds no holes to disprove it."""

    def __init__(self, start: int) -> None:
        self.at = start
        self._ends: dict[int, int] = {}  # finished ranges past the frontier: offset -> end

    def add(self, offset: int, length: int) -> None:
        self._ends[offset] = offset + length
        while self.at in self._ends:
            self.at = self._ends.pop(self.at)


async def _pipeline(
    start: int, size: int, block: int, requests: int, step: Step, frontier: Frontier | None = None
) -> None:
    """Run ``step(offset, length)`` over [start, size) with ``requests`` in flight."""
    offsets = iter(range(start, size, block))

    async def worker() -> None:
        for offset in offsets:
            length = min(block, size - offset)
            await step(offset, length)
            if frontier is not None:
                frontier.add(offset, length)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, requests))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Step = Callable[[int, int], Awaitable[None]]


def _send(
    f: asyncssh.SFTPClientFile, fd: int, opts: Options, advance: Callable[[int], None]
) -> Step:
    """One upload request: a local range written at its offset, within the rate limit."""

    async def step(offset: int, length: int) -> None:
        data = os.pread(fd, length, offset)
        await opts.limit.take(len(data))
        await f.write(data, offset)
        advance(len(data))

    return step


def _receive(
    f: asyncssh.SFTPClientFile, fd: int, rpath: str, opts: Options, advance: Callable[[int], None]
) -> Step:
    """One download request (short reads continued), written locally at its offset."""

    async def step(offset: int, length: int) -> None:
        while length > 0:
            await opts.limit.take(length)
            data = cast(bytes, await f.read(length, offset))
            if not data:
                raise XferError(REMOTE, f"{rpath}: file shrank during download")
            os.pwrite(fd, data, offset)
            advance(len(data))
            offset, length = offset + len(data), length - len(data)

    return step


# -- verification --------------------------------------------------------------


RemoteSum = Awaitable[tuple[str, str] | None]


async def _remote_matches(
    remote: Remote, rpath: str, lpath: str, length: int, whole: bool, report: Report,
    remote_sum: RemoteSum | None = None,
) -> bool | None:  # fmt: skip
    """Does the remote file (whole, or its first ``length`` bytes) match the local one's
    first ``length`` bytes? None when the server offers no way to tell. ``remote_sum``
    is the server's answer already under way, if the caller started it earlier."""
    # Hash here while the server hashes there: sha256 is what servers usually answer with.
    local = asyncio.ensure_future(asyncio.to_thread(local_digest, lpath, "sha256", length))
    try:
        got = await (remote_sum or remote.checksum(rpath, None if whole else length))
    except BaseException:
        await asyncio.gather(local, return_exceptions=True)
        raise
    if got is None:
        await asyncio.gather(local, return_exceptions=True)
        return None
    alg, digest = got
    if alg == "sha256":
        mine = await local
    else:
        await asyncio.gather(local, return_exceptions=True)
        mine = await asyncio.to_thread(local_digest, lpath, alg, length)
    report.verified.add(alg)
    return mine == digest


async def _verify(
    remote: Remote, rpath: str, lpath: str, report: Report, remote_sum: RemoteSum | None
) -> bool:
    size = os.stat(lpath).st_size
    ok = await _remote_matches(remote, rpath, lpath, size, True, report, remote_sum)
    if ok is None:
        report.unverified += 1
        return True
    return ok


# -- upload --------------------------------------------------------------------


#: (resume?, the server's whole-file checksum already under way or None) -> start offset
StartFn = Callable[[bool, RemoteSum | None], Awaitable[int]]
MoveFn = Callable[[int], Awaitable[None]]


async def _transfer(
    verb: str, rpath: str, lpath: str, size: int, start_at: StartFn, move: MoveFn,
    remote: Remote, opts: Options, report: Report,
) -> None:  # fmt: skip
    """Move one file from a (proven) start offset, verify, and restart from zero once
    when a resumed file does not verify. A download asks for the server's checksum of
    its (complete) file at the start, so the server hashes while the bytes travel."""
    early: asyncio.Future[tuple[str, str] | None] | None = None
    if opts.verify and verb == "download":
        early = asyncio.ensure_future(remote.checksum(rpath))
    try:
        for attempt in (1, 2):
            start = await start_at(opts.resume and attempt == 1, early)
            await move(start)
            if not opts.verify or await _verify(remote, rpath, lpath, report, early):
                report.files += 1
                report.bytes += size - start
                report.resumed_from += start
                return
            if start == 0 or attempt == 2:
                raise XferError(CHECKSUM, f"{rpath}: checksum mismatch after {verb}")
            warn(f"{rpath}: checksum mismatch after resuming; {verb} again from zero")
    finally:
        if early is not None and not early.done():
            early.cancel()
            await asyncio.gather(early, return_exceptions=True)


async def put_file(
    remote: Remote, lpath: str, rpath: str, opts: Options, progress: Progress, report: Report,
    pool: list[Remote] | None = None,
) -> None:  # fmt: skip
    """Upload one file; with a ``pool`` of connections a big one is split over them.

    A split file is written under :func:`part_name` beside the target, verified there, and
    renamed over the target: readers (and a server's hooks) never see it partial, whatever
    the server's upload mode, and sftpd counts that rename as the one upload event."""
    size = os.stat(lpath).st_size
    segmented = bool(pool and len(pool) > 1 and size >= opts.segment_min)
    mark = Checkpoint("up", remote, lpath, rpath, size) if segmented else None
    target = part_name(rpath) if segmented else rpath
    if segmented and opts.resume and await _adopt(remote, lpath, rpath, target, size, report):
        report.files += 1  # already complete and proven: nothing to send
        report.resumed_from += size
        return

    async def start_at(resume: bool, _sum: RemoteSum | None) -> int:
        keep = mark.frontier() if mark is not None and resume else None
        if keep is not None:  # keep only the contiguous part a kill left behind
            await _trim_remote(remote, target, keep)
        return await _upload_start(remote, lpath, target, size, resume, report)

    async def move(start: int) -> None:
        if mark is not None and pool:
            await _segmented(pool, True, lpath, target, start, size, opts, progress, mark)
        else:
            await _upload(remote, lpath, rpath, start, size, opts, progress)

    await _transfer("upload", target, lpath, size, start_at, move, remote, opts, report)
    if mark is not None:
        await _publish(remote, target, rpath)
        mark.finish()
        report.segmented += 1


async def _adopt(
    remote: Remote, lpath: str, rpath: str, part: str, size: int, report: Report
) -> bool:
    """Before a split upload resumes: with no part file, a proven prefix of the source under
    the target's name (a one-stream upload that was cut, or another client's) becomes the
    part file, to continue from. True when the target is already the whole source."""
    try:
        await remote.sftp.stat(part)
        return False  # resume from the part file
    except asyncssh.SFTPNoSuchFile:
        pass
    try:
        have = (await remote.sftp.stat(rpath)).size or 0
    except asyncssh.SFTPNoSuchFile:
        return False
    if not 0 < have <= size or not await _remote_matches(remote, rpath, lpath, have, True, report):
        return False  # not a part of this file: it stays until the new one replaces it
    if have == size:
        return True
    await _publish(remote, rpath, part)
    return False


def part_name(rpath: str) -> str:
    """Where a split upload is written: ``.NAME.xfer-part`` beside the target (a name sftpd,
    and anyone listing the directory, knows is in progress), shortened to a digest when the
    name would pass 255 bytes."""
    head, base = posixpath.split(rpath)
    name = f".{base}.xfer-part"
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        digest = hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        name = f".{digest}.xfer-part"
    return posixpath.join(head, name)


async def _publish(remote: Remote, part: str, rpath: str) -> None:
    """Rename the finished part over the target in one step where the server can
    (posix-rename), else by the plain rename, removing an old target first."""
    with contextlib.suppress(asyncssh.SFTPOpUnsupported):
        await remote.sftp.posix_rename(part, rpath)
        return
    try:
        await remote.sftp.rename(part, rpath)
    except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
        await remote.sftp.remove(rpath)
        await remote.sftp.rename(part, rpath)


async def _upload_start(
    remote: Remote, lpath: str, rpath: str, size: int, resume: bool, report: Report
) -> int:
    if not resume:
        return 0
    try:
        have = (await remote.sftp.stat(rpath)).size or 0
    except asyncssh.SFTPNoSuchFile:
        return 0
    if have == 0:
        return 0
    if have > size:
        warn(f"{rpath}: remote file is larger than the local one; uploading from zero")
        return 0
    same = await _remote_matches(remote, rpath, lpath, have, True, report)
    if same is None:
        warn(f"{rpath}: server cannot prove the remote part; resuming unchecked")
    elif not same:
        warn(f"{rpath}: remote part differs from the local file; uploading from zero")
        return 0
    return have


async def _upload(
    remote: Remote, lpath: str, rpath: str, start: int, size: int, opts: Options, progress: Progress
) -> None:
    advance = progress.file(posixpath.basename(rpath), size, start)
    fd = os.open(lpath, os.O_RDONLY)
    try:
        # block_size=0: one request per call; the pipelining is ours, so a failure
        # (quota) surfaces once instead of from asyncssh's internal tasks.
        async with remote.sftp.open(
            rpath, WRITE_RESUME if start else WRITE_NEW, encoding=None, block_size=0
        ) as f:
            step = _send(f, fd, opts, advance)
            done = Frontier(start)
            try:
                await _pipeline(start, size, remote.block_size, opts.requests, step, done)
            except BaseException:  # cancelled or failed: cut the partial at its first gap
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(f.truncate(done.at), PARTIAL_TRIM_SECONDS)
                raise
    finally:
        os.close(fd)


# -- download ------------------------------------------------------------------


async def get_file(
    remote: Remote, rpath: str, lpath: str, opts: Options, progress: Progress, report: Report,
    pool: list[Remote] | None = None,
) -> None:  # fmt: skip
    """Download one file; with a ``pool`` of connections a big one is split over them."""
    size = (await remote.sftp.stat(rpath)).size or 0
    segmented = bool(pool and len(pool) > 1 and size >= opts.segment_min)
    mark = Checkpoint("down", remote, lpath, rpath, size) if segmented else None

    async def start_at(resume: bool, whole: RemoteSum | None) -> int:
        keep = mark.frontier() if mark is not None and resume else None
        if keep is not None and os.path.exists(lpath) and os.stat(lpath).st_size > keep:
            os.truncate(lpath, keep)
        return await _download_start(remote, rpath, lpath, size, resume, report, whole)

    async def move(start: int) -> None:
        if mark is not None and pool:
            await _segmented(pool, False, lpath, rpath, start, size, opts, progress, mark)
        else:
            await _download(remote, rpath, lpath, start, size, opts, progress)

    await _transfer("download", rpath, lpath, size, start_at, move, remote, opts, report)
    if mark is not None:
        mark.finish()
        report.segmented += 1


async def _download_start(
    remote: Remote, rpath: str, lpath: str, size: int, resume: bool, report: Report,
    whole: RemoteSum | None = None,
) -> int:  # fmt: skip
    if not resume or not os.path.exists(lpath):
        return 0
    have = os.stat(lpath).st_size
    if have == 0 or have > size:
        if have > size:
            warn(f"{lpath}: local file is larger than the remote one; downloading from zero")
        return 0
    complete = have == size  # then the whole-file checksum asked for at the start answers
    same = await _remote_matches(
        remote, rpath, lpath, have, complete, report, whole if complete else None
    )
    if same is None:
        warn(f"{rpath}: server cannot prove the local part; resuming unchecked")
    elif not same:
        warn(f"{lpath}: local part differs from the remote file; downloading from zero")
        return 0
    return have


async def _download(
    remote: Remote, rpath: str, lpath: str, start: int, size: int, opts: Options, progress: Progress
) -> None:
    advance = progress.file(posixpath.basename(rpath), size, start)
    flags = os.O_WRONLY | os.O_CREAT | (0 if start else os.O_TRUNC)
    fd = os.open(lpath, flags, 0o644)
    try:
        done = Frontier(start)
        try:
            async with remote.sftp.open(rpath, "rb", encoding=None, block_size=0) as f:
                step = _receive(f, fd, rpath, opts, advance)
                await _pipeline(start, size, remote.block_size, opts.requests, step, done)
        except BaseException:  # cancelled or failed: cut the partial at its first gap
            os.ftruncate(fd, done.at)
            raise
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


# -- one big file over several connections ------------------------------------


class Checkpoint:
    """Which stripes of a segmented transfer are done, in a small file in the config dir,
    so that a resume keeps the contiguous part (the rest may hold holes). Nothing here is
    trusted: a resume still proves the kept prefix by checksum."""

    def __init__(self, direction: str, remote: Remote, lpath: str, rpath: str, size: int) -> None:
        host = remote.conn.get_extra_info("peername", ("?", 0))
        key = f"{direction}|{host[0]}:{host[1]}|{rpath}|{os.path.abspath(lpath)}|{size}"
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        self.path = config_dir() / "partial" / f"{name}.json"
        self.done: set[int] = set()

    def frontier(self) -> int | None:
        """Bytes from the start known to be complete; None without a record (the file was
        not left by a segmented transfer: its size is its contiguous part)."""
        try:
            stripes = set(json.loads(self.path.read_text())["done"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        n = 0
        while n in stripes:
            n += 1
        return n * STRIPE

    def start(self, first: int) -> None:
        self.done = set(range(first // STRIPE))

    def record(self, stripe: int) -> None:
        self.done.add(stripe)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": sorted(self.done)}))
        os.replace(tmp, self.path)

    def finish(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _trim_remote(remote: Remote, rpath: str, keep: int) -> None:
    try:
        if ((await remote.sftp.stat(rpath)).size or 0) > keep:
            await remote.sftp.truncate(rpath, keep)
    except asyncssh.SFTPNoSuchFile:
        pass


async def _segmented(
    pool: list[Remote], upload: bool, lpath: str, rpath: str, start: int, size: int,
    opts: Options, progress: Progress, mark: Checkpoint,
) -> None:  # fmt: skip
    """Move [start, size) in stripes, each connection taking the next free one and writing
    it at its offset. The caller verifies the whole file once at the end."""
    advance = progress.file(posixpath.basename(rpath), size, start)
    mark.start(start)
    first = pool[0]
    if upload:
        async with first.sftp.open(rpath, WRITE_RESUME, encoding=None, block_size=0) as f:
            await f.truncate(start)  # not O_TRUNC: in an atomic-upload mode that is a new file
        fd = os.open(lpath, os.O_RDONLY)
    else:
        fd = os.open(lpath, os.O_WRONLY | os.O_CREAT | (0 if start else os.O_TRUNC), 0o644)
    stripes = iter(range(start // STRIPE, (size + STRIPE - 1) // STRIPE))
    requests = max(8, opts.requests // len(pool))

    async def worker(remote: Remote) -> None:
        mode = WRITE_RESUME if upload else asyncssh.FXF_READ
        async with remote.sftp.open(rpath, mode, encoding=None, block_size=0) as f:
            step = _send(f, fd, opts, advance) if upload else _receive(f, fd, rpath, opts, advance)
            for stripe in stripes:
                lo = max(start, stripe * STRIPE)
                hi = min(size, (stripe + 1) * STRIPE)
                await _pipeline(lo, hi, remote.block_size, requests, step)
                mark.record(stripe)

    try:
        await asyncio.gather(*(worker(r) for r in pool))
        if not upload:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


# -- many files ----------------------------------------------------------------


def split_dest(args: list[str]) -> tuple[list[str], str | None]:
    """``SRC... [DEST]``: the last of several arguments is the destination."""
    return (args[:-1], args[-1]) if len(args) > 1 else (args, None)


@dataclass(frozen=True)
class Job:
    src: str
    dst: str
    size: int


One = Callable[[list[Remote], Job, Options, Progress, Report], Awaitable[None]]


async def run_jobs(
    jobs: list[Job], one: One, opts: Options, show_progress: bool, pool: Pool
) -> Report:
    """Run the jobs over ``opts.parallel`` connections, one file per connection at a time;
    a single big file gets every connection (segmented)."""
    report = Report()
    started = time.monotonic()
    progress = Progress(show_progress, sum(j.size for j in jobs))
    queue = list(reversed(jobs))
    single = len(jobs) == 1
    wanted = opts.parallel if single and jobs[0].size >= opts.segment_min else len(jobs)
    remotes = await pool(max(1, min(opts.parallel, wanted)))

    async def worker(remote: Remote) -> None:
        while queue:
            await one(remotes if single else [remote], queue.pop(), opts, progress, report)

    try:
        tasks = [asyncio.create_task(worker(r)) for r in (remotes[:1] if single else remotes)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        progress.close()
    report.seconds = time.monotonic() - started
    return report


async def plan_put(
    remote: Remote, sources: list[str], dest: str | None, recursive: bool
) -> list[Job]:
    """Work out (local, remote) pairs and create remote directories for ``put``."""
    target = remote.resolve(dest or ".")
    into_dir = dest is None or len(sources) > 1 or await remote.is_dir(target) or dest.endswith("/")
    if len(sources) > 1 and not await remote.is_dir(target):
        raise XferError(REMOTE, f"{dest}: not a remote directory")
    jobs: list[Job] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            if not recursive:
                raise XferError(REMOTE, f"{src} is a directory (use -r)")
            root = posixpath.join(target, path.name) if into_dir else target
            await remote.sftp.makedirs(root, exist_ok=True)
            for dirpath, dirnames, filenames in os.walk(path):
                rel = os.path.relpath(dirpath, path)
                rdir = posixpath.normpath(posixpath.join(root, rel.replace(os.sep, "/")))
                for d in sorted(dirnames):
                    await remote.sftp.makedirs(posixpath.join(rdir, d), exist_ok=True)
                for name in sorted(filenames):
                    local = os.path.join(dirpath, name)
                    if os.path.isfile(local):
                        jobs.append(Job(local, posixpath.join(rdir, name), os.stat(local).st_size))
        elif path.is_file():
            dst = posixpath.join(target, path.name) if into_dir else target
            jobs.append(Job(src, dst, path.stat().st_size))
        else:
            raise XferError(REMOTE, f"{src}: no such local file")
    return jobs


async def plan_get(
    remote: Remote, sources: list[str], dest: str | None, recursive: bool
) -> list[Job]:
    """Work out (remote, local) pairs and create local directories for ``get``."""
    target = Path(dest or ".")
    into_dir = target.is_dir() or len(sources) > 1 or (dest or "").endswith("/")
    if len(sources) > 1 and not target.is_dir():
        raise XferError(REMOTE, f"{dest}: not a local directory")
    jobs: list[Job] = []
    for src in sources:
        rpath = remote.resolve(src)
        attrs = await remote.sftp.stat(rpath)
        name = posixpath.basename(rpath.rstrip("/")) or "root"
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            if not recursive:
                raise XferError(REMOTE, f"{src} is a directory (use -r)")
            root = target / name if into_dir else target
            async for rdir, files in _walk(remote, rpath):
                rel = posixpath.relpath(rdir, rpath)
                ldir = root / rel if rel != "." else root
                ldir.mkdir(parents=True, exist_ok=True)
                for fname, size in files:
                    jobs.append(Job(posixpath.join(rdir, fname), str(ldir / fname), size))
        else:
            dst = target / name if into_dir else target
            jobs.append(Job(rpath, str(dst), attrs.size or 0))
    return jobs


async def _walk(remote: Remote, top: str) -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    pending = [top]
    while pending:
        d = pending.pop()
        files = []
        for n in await remote.sftp.readdir(d):
            name = str(n.filename)
            if not safe_name(name):
                if name not in (".", ".."):
                    warn(f"{d}: skipping a listed name that is not a plain name: {name!r}")
                continue
            if n.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                pending.append(posixpath.join(d, name))
            elif n.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                files.append((name, n.attrs.size or 0))
        yield d, files


async def transfer_many(
    pool: Pool, upload: bool, args: list[str], opts: Options, show_progress: bool
) -> Report:
    """``put``/``get`` with ``SRC... [DEST]`` as the CLI and the shell both take them."""
    sources, dest = split_dest(args)
    plan = plan_put if upload else plan_get
    remote = (await pool(1))[0]
    jobs = await plan(remote, sources, dest, opts.recursive)
    move = put_file if upload else get_file

    async def one(remotes: list[Remote], job: Job, o: Options, p: Progress, r: Report) -> None:
        await move(remotes[0], job.src, job.dst, o, p, r, remotes)

    return await run_jobs(jobs, one, opts, show_progress, pool)
