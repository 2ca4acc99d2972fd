"""What a hook does with an event: run a command, or POST it to a URL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal

import httpx

from sftpd.events import Event
from sftpd.events.hooks import Hook

log = logging.getLogger("sftpd.hooks")

OUTPUT_LIMIT = 4096  # bytes of a command's output kept for the log
#: Seconds a command's output pipe is read after the command exited (or was killed): a child
#: in another session may hold it open, and must not hold a hook worker with it.
OUTPUT_GRACE = 1.0
#: What a command inherits from the server's environment: nothing secret (SFTPD_DB may hold
#: a password), enough to find programs and format text.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
Outcome = tuple[str, str]  # "ok" | "failed" | "timeout", and why (for the outbox)


def body_of(event: Event) -> bytes:
    return json.dumps(event.to_dict(), sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Sftpd-Signature`` header: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Output(asyncio.SubprocessProtocol):
    """A command's output as it arrives: the first ``OUTPUT_LIMIT`` bytes are kept, the
    rest is read and dropped, so a chatty command costs no memory and never blocks on a
    full pipe. ``exited`` and ``closed`` (EOF on the output) are separate: a child the
    command left behind may hold the pipe open long after the command is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.kept = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.kept += data[: OUTPUT_LIMIT - len(self.kept)]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_command(hook: Hook, event: Event) -> Outcome:
    """Run ``hook.command`` with the event as JSON on stdin and as ``SFTPD_EVENT_*``;
    "ok", "failed" or "timeout", decided by the command's own exit. Output goes to the
    log; the pipe gets ``OUTPUT_GRACE`` after the exit, then is closed unread."""
    spawned = await _spawn(hook, event)
    if spawned is None:
        return "failed", "cannot start"
    transport, output = spawned
    try:
        _feed(transport, body_of(event))
        in_time = await _wait(transport, output, hook)
    finally:
        transport.close()
    if not in_time:
        log.warning("hook timed out", extra={"hook": hook.label, "event": event.name,
                    "timeout": hook.timeout})  # fmt: skip
        return "timeout", f"timed out after {hook.timeout:g} s"
    return _report(hook, event, transport.get_returncode(), bytes(output.kept))


async def _spawn(hook: Hook, event: Event) -> tuple[asyncio.SubprocessTransport, _Output] | None:
    env = {k: os.environ[k] for k in INHERITED if k in os.environ} | event.env()
    loop = asyncio.get_running_loop()
    try:
        return await loop.subprocess_exec(
            lambda: _Output(loop),
            *hook.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a timeout kills the command and its children
        )
    except OSError as exc:
        log.warning("hook cannot start", extra={"hook": hook.label, "error": str(exc)})
        return None


def _feed(transport: asyncio.SubprocessTransport, body: bytes) -> None:
    """Hand the body to stdin's buffer and close it; a command that never reads it
    (or exits first) costs nothing but the buffer."""
    stdin = transport.get_pipe_transport(0)
    assert isinstance(stdin, asyncio.WriteTransport)
    stdin.write(body)
    stdin.close()


async def _wait(transport: asyncio.SubprocessTransport, output: _Output, hook: Hook) -> bool:
    """Whether the command exited within ``hook.timeout``: else (or if cancelled) its process
    group is killed. Then at most ``OUTPUT_GRACE`` for the end of its output."""
    try:
        done, _ = await asyncio.wait({output.exited}, timeout=hook.timeout)
        if not done:
            await _kill(transport, output)
        await asyncio.wait({output.closed}, timeout=OUTPUT_GRACE)
        return bool(done)
    except asyncio.CancelledError:  # the server is stopping: the command must not outlive it
        await _kill(transport, output)
        raise


async def _kill(transport: asyncio.SubprocessTransport, output: _Output) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(transport.get_pid(), signal.SIGKILL)
    await asyncio.wait({output.exited})


def _report(hook: Hook, event: Event, status: int | None, output: bytes) -> Outcome:
    text = output.decode("utf-8", "replace").strip()
    if status:
        log.warning("hook failed", extra={"hook": hook.label, "event": event.name,
                    "status": status, "output": text})  # fmt: skip
        return "failed", f"exit status {status}"
    log.info("hook ran", extra={"hook": hook.label, "event": event.name, "output": text})
    return "ok", ""


async def post_webhook(client: httpx.AsyncClient, hook: Hook, event: Event) -> Outcome:
    """POST the event once, with its id in ``X-Sftpd-Event-Id`` (and in the JSON): a 2xx is
    "ok", anything else "failed" (the courier tries again later)."""
    body = body_of(event)
    headers = {"Content-Type": "application/json", "X-Sftpd-Event": event.name,
               "X-Sftpd-Event-Id": event.id}  # fmt: skip
    if hook.secret:
        headers["X-Sftpd-Signature"] = signature(hook.secret, body)
    try:
        response = await client.post(hook.url, content=body, headers=headers,
                                     timeout=hook.timeout)  # fmt: skip
    except httpx.TimeoutException:
        reason, outcome = f"no answer in {hook.timeout:g} s", "timeout"
    except httpx.HTTPError as exc:
        reason, outcome = str(exc) or type(exc).__name__, "failed"
    else:
        if response.is_success:
            return "ok", ""
        reason, outcome = f"HTTP {response.status_code}", "failed"
    log.warning("webhook failed", extra={"hook": hook.label, "event": event.name,
                "error": reason})  # fmt: skip
    return outcome, reason
