"""The UI's transfer queue: one file at a time, in the background, through the same engine
as ``put``/``get`` (:mod:`cli.transfer`): resume from a proven prefix, verify at the end.

Cancelling stops the running file where it is; its partial stays, so copying it again
resumes it. Nothing here knows about Textual: the app polls :meth:`TransferQueue.status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cli import transfer
from cli.errors import from_exception
from cli.remote import Remote


@dataclass
class Job:
    upload: bool
    src: str
    dst: str
    size: int
    done: int = 0
    state: str = "queued"  # queued, running, done, failed, cancelled
    message: str = ""
    resumed_from: int = 0  # bytes already there and proven, when it ended

    @property
    def name(self) -> str:
        return os.path.basename(self.src.rstrip("/")) or self.src


class _Progress(transfer.Progress):
    """The engine's progress callbacks, counted into the running job."""

    def __init__(self, job: Job) -> None:
        super().__init__(False, job.size)
        self.job = job

    def file(self, name: str, size: int, done: int = 0) -> Callable[[int], None]:
        self.job.done = done

        def advance(n: int) -> None:
            self.job.done += n

        return advance


@dataclass(frozen=True)
class Status:
    running: Job | None
    queued: int
    finished: int
    stopped: int  # failed or cancelled
    done_bytes: int  # of every job added since the queue was last idle
    total_bytes: int
    rate: float  # bytes/s over the last few seconds
    eta: float | None


class TransferQueue:
    """Jobs in order; ``on_finish(job)`` is called after each one ends, whatever the end."""

    def __init__(self, remote: Remote, on_finish: Callable[[Job], None]) -> None:
        self.remote = remote
        self.on_finish = on_finish
        self.jobs: list[Job] = []
        self._task: asyncio.Task[None] | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    async def add(self, upload: bool, sources: list[str], dest_dir: str) -> int:
        """Plan (directories included, created on the way) and queue; returns the count."""
        plan = transfer.plan_put if upload else transfer.plan_get
        planned = await plan(self.remote, sources, dest_dir.rstrip("/") + "/", True)
        if self.idle:
            self.jobs = [j for j in self.jobs if j.state in ("queued", "running")]
        self.jobs += [Job(upload, p.src, p.dst, p.size) for p in planned]
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return len(planned)

    @property
    def idle(self) -> bool:
        return self._task is None or self._task.done()

    async def _run(self) -> None:
        while job := next((j for j in self.jobs if j.state == "queued"), None):
            await self._one(job)

    async def _one(self, job: Job) -> None:
        job.state = "running"
        opts = transfer.Options(resume=True, verify=True, parallel=1)
        report = transfer.Report()
        move = transfer.put_file if job.upload else transfer.get_file
        try:
            await move(self.remote, job.src, job.dst, opts, _Progress(job), report)
        except asyncio.CancelledError:
            job.state, job.message = "cancelled", "partial kept: copy again to resume"
            self.on_finish(job)
            raise
        except Exception as exc:  # every failure is a message, never a traceback
            job.state, job.message = "failed", str(from_exception(exc, job.name))
        else:
            job.state = "done"
            job.done, job.resumed_from = job.size, report.resumed_from
            if report.unverified:
                job.message = "not verified: the server offers no checksum"
        self.on_finish(job)

    def cancel(self) -> int:
        """Stop the running job and drop the queued ones; returns how many were stopped."""
        stopped = 0
        for job in self.jobs:
            if job.state == "queued":
                job.state, job.message = "cancelled", "not started"
                stopped += 1
        if self._task is not None and not self._task.done():
            self._task.cancel()
            stopped += 1
        return stopped

    async def wait(self) -> None:
        """Until the queue is idle (tests, and quitting after a confirmation)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> Status:
        jobs = self.jobs
        done = sum(j.done if j.state != "done" else j.size for j in jobs)
        total = sum(j.size for j in jobs)
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5:
            self._samples.popleft()
        (t0, b0), rate = self._samples[0], 0.0
        if now - t0 > 0.2:
            rate = max(0.0, (done - b0) / (now - t0))
        running = next((j for j in jobs if j.state == "running"), None)
        left = sum(j.size - j.done for j in jobs if j.state in ("queued", "running"))
        return Status(
            running=running,
            queued=sum(j.state == "queued" for j in jobs),
            finished=sum(j.state == "done" for j in jobs),
            stopped=sum(j.state in ("failed", "cancelled") for j in jobs),
            done_bytes=done,
            total_bytes=total,
            rate=rate,
            eta=left / rate if rate > 0 and left else None,
        )
