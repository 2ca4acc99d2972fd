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
#: What a command inherits from the server's environment: nothing secret (SFTPD_DB may hold
#: a password), enough to find programs and format text.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
RETRY_DELAY = 0.5  # seconds before the first retry; doubles each time


def body_of(event: Event) -> bytes:
    return json.dumps(event.to_dict(), sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Sftpd-Signature`` header: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def run_command(hook: Hook, event: Event) -> str:
    """Run ``hook.command`` with the event as JSON on stdin and as ``SFTPD_EVENT_*``;
    "ok", "failed" or "timeout". Output goes to the log."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ} | event.env()
    try:
        proc = await asyncio.create_subprocess_exec(
            *hook.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a timeout kills the command and its children
        )
    except OSError as exc:
        log.warning("hook cannot start", extra={"hook": hook.label, "error": str(exc)})
        return "failed"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(body_of(event)), hook.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        log.warning("hook timed out", extra={"hook": hook.label, "event": event.name,
                    "timeout": hook.timeout})  # fmt: skip
        return "timeout"
    text = out[:OUTPUT_LIMIT].decode("utf-8", "replace").strip()
    if proc.returncode:
        log.warning("hook failed", extra={"hook": hook.label, "event": event.name,
                    "status": proc.returncode, "output": text})  # fmt: skip
        return "failed"
    log.info("hook ran", extra={"hook": hook.label, "event": event.name, "output": text})
    return "ok"


async def post_webhook(client: httpx.AsyncClient, hook: Hook, event: Event) -> str:
    """POST the event; retry a connection error or a 5xx with backoff. "ok" or "failed"."""
    body = body_of(event)
    headers = {"Content-Type": "application/json", "X-Sftpd-Event": event.name}
    if hook.secret:
        headers["X-Sftpd-Signature"] = signature(hook.secret, body)
    delay, reason = RETRY_DELAY, ""
    for attempt in range(hook.retries + 1):
        if attempt:
            await asyncio.sleep(delay)
            delay *= 2
        try:
            response = await client.post(hook.url, content=body, headers=headers,
                                         timeout=hook.timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            continue
        if response.status_code < 500:
            if response.is_success:
                return "ok"
            reason = f"HTTP {response.status_code}"
            break  # the receiver refused it: trying again will not help
        reason = f"HTTP {response.status_code}"
    log.warning("webhook failed", extra={"hook": hook.label, "event": event.name,
                "error": reason})  # fmt: skip
    return "failed"
