"""Event hooks with a real HTTP server and a real command: what arrives, when, and that a
slow or failing hook never slows a transfer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from sftpd.events import EVENT_NAMES, Event
from sftpd.events.actions import OUTPUT_GRACE, OUTPUT_LIMIT, run_command, signature
from sftpd.events.bus import EventBus
from sftpd.events.hooks import Hook
from sftpd.store import open_store
from sftpd.store.outbox import EventQuery
from tests.support import Serve, known_hosts, run
from tests.support.live import LiveServer, User, start_live_server, stop_live_server
from tests.support.receiver import Receiver, wait_until

SECRET = "s3cret-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recorder(tmp: Path) -> tuple[tuple[str, ...], Path]:
    """A command hook that appends the event, its env name and the size of the file it
    names as seen when the hook ran."""
    out = tmp / "ran.jsonl"
    script = tmp / "record.py"
    script.write_text(
        "import json, os, sys\n"
        "event = json.load(sys.stdin)\n"
        "p = event.get('local_path', '')\n"
        "seen = os.stat(p).st_size if p and os.path.isfile(p) else None\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'event': event, 'env': os.environ.get('SFTPD_EVENT_NAME'),\n"
        "                        'seen': seen}) + '\\n')\n"
    )
    return (sys.executable, str(script)), out


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[tuple[LiveServer, Path]]:
    tmp = tmp_path_factory.mktemp("hooks")
    command, out = recorder(tmp)
    hooks = (
        Hook(events=("upload",), paths=("/incoming/*",), command=command, timeout=20),
        Hook(events=EVENT_NAMES, url=receiver.url, secret=SECRET, timeout=5),
    )
    server = start_live_server(tmp, hooks=hooks)
    yield server, out
    stop_live_server(server)


def test_an_openssh_upload_is_one_event_after_the_close(
    hooked: tuple[LiveServer, Path], receiver: Receiver, tmp_path: Path
) -> None:
    server, out = hooked
    user = server.add_user()
    (user.home / "incoming").mkdir()
    data = os.urandom(5 * 1024 * 1024 + 7)
    (tmp_path / "in.bin").write_bytes(data)
    r = server.sftp(
        user, f"put {tmp_path / 'in.bin'} /incoming/in.bin\nput {tmp_path / 'in.bin'} /other.bin\n"
    )
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(lines(out)) >= 1, "the command hook never ran")
    wait_until(
        lambda: sum(e["name"] == "upload" and e["user"] == user.name
                    for e in receiver.events()) >= 2,
        "the webhook never got the uploads",
    )  # fmt: skip
    [ran] = [x for x in lines(out) if x["event"]["user"] == user.name]  # the path filter held
    event = ran["event"]
    assert ran["env"] == "upload"
    assert event["path"] == "/incoming/in.bin" and event["protocol"] == "sftp"
    assert event["size"] == event["bytes"] == len(data)
    assert ran["seen"] == len(data)  # the hook ran after the close: the file was complete
    assert event["local_path"] == str(user.home / "incoming" / "in.bin")
    assert event["addr"] == "127.0.0.1" and event["duration"] >= 0
    uploads = [e for e in receiver.events() if e["name"] == "upload" and e["user"] == user.name]
    assert [e["path"] for e in uploads] == ["/incoming/in.bin", "/other.bin"]  # once each
    for headers, body in receiver.requests:
        assert hmac.compare_digest(headers["X-Sftpd-Signature"], signature(SECRET, body))


async def test_every_event_kind_arrives(
    hooked: tuple[LiveServer, Path], receiver: Receiver
) -> None:
    server, _ = hooked
    user = server.add_user(quota=4096)
    with pytest.raises(asyncssh.PermissionDenied):
        await server.connect(user, client_keys=None, password="wrong")
    async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/d")
        async with sftp.open("/d/a.txt", "wb") as f:
            await f.write(b"hello")
        async with sftp.open("/d/a.txt", "rb") as f:
            assert await f.read() == b"hello"
        await sftp.rename("/d/a.txt", "/d/b.txt")
        with pytest.raises(asyncssh.SFTPError):
            async with sftp.open("/big.bin", "wb") as f:
                await f.write(os.urandom(8192))
        await sftp.remove("/d/b.txt")
        await sftp.rmdir("/d")

    def names() -> list[str]:
        return [e["name"] for e in receiver.events() if e["user"] == user.name]

    expected = ["login-failed", "login", "mkdir", "upload", "download", "rename",
                "quota-exceeded", "upload-failed", "delete", "rmdir", "logout"]  # fmt: skip
    await asyncio.to_thread(wait_until, lambda: len(names()) >= len(expected), str(names()))
    got = names()
    assert sorted(got) == sorted(expected), got
    rename = next(e for e in receiver.events() if e["name"] == "rename" and e["user"] == user.name)
    assert (rename["path"], rename["target"]) == ("/d/a.txt", "/d/b.txt")


async def test_slow_and_failing_hooks_never_slow_uploads_or_lose_events(tmp_path: Path) -> None:
    """Every upload triggers a hook that sleeps far longer than the whole test, one at a
    time, and a webhook to a port nobody listens on: uploads go at full speed regardless,
    and every event waits in the outbox (the old in-memory queue dropped all but four)."""
    dead = Receiver()
    dead_url = dead.url
    dead.close()  # nothing listens there any more
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    hooks = (
        Hook(
            events=("upload",), users=("slowpoke",), command=(sys.executable, str(slow)), timeout=1
        ),
        Hook(events=("upload",), users=("slowpoke",), url=dead_url, timeout=1, retries=1),
    )
    server = start_live_server(tmp_path, hooks=hooks, hook_concurrency=1)
    try:
        slowpoke, plain = server.add_user("slowpoke"), server.add_user()

        async def upload_many(user: User) -> float:
            async with server.connect(user) as conn, conn.start_sftp_client() as sftp:
                start = time.monotonic()
                for i in range(40):
                    async with sftp.open(f"f{i}", "wb") as f:
                        await f.write(os.urandom(64 * 1024))
                return time.monotonic() - start

        without = await upload_many(plain)
        with_hooks = await upload_many(slowpoke)
        outcomes = server.service.bus.outcomes
        print(f"40 uploads: {without:.2f} s without hooks, {with_hooks:.2f} s with a 30 s "
              f"hook and a dead webhook each; outcomes {dict(outcomes)}")  # fmt: skip
        assert with_hooks < 5 + 2 * without  # a blocking hook would take 40 x 1 s at least
        assert outcomes["dropped"] == 0
        stats = await server.service.store.outbox_stats()
        assert stats.pending + stats.dead == 80 and stats.delivered == 0  # 40 uploads x 2 hooks
        async with server.connect(plain) as conn, conn.start_sftp_client() as sftp:
            assert len(await sftp.listdir(".")) == 42  # still serving
    finally:
        stop_live_server(server)
    assert server.service.bus.outcomes["timeout"] + server.service.bus.outcomes["failed"] >= 1


def stalling_command(pids: Path, then: str = "") -> tuple[str, ...]:
    """A hook command that leaves a child in its own session holding the output pipe open
    for 30 s (its pid appended to ``pids``), then runs ``then``."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        f"open({str(pids)!r}, 'a').write(f'{{child.pid}}\\n')\n"
        "print('started', flush=True)\n" + then
    )
    return (sys.executable, "-c", script)


def open_pipes() -> set[str]:
    """This process's pipes, by inode (``pipe:[123]``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return {x for x in found if x.startswith("pipe:")}


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """Where stalling commands note their children, all killed after the test."""
    path = tmp_path / "pids"
    yield path
    for pid in path.read_text().split() if path.exists() else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


async def test_a_hook_printing_200_mib_keeps_4_kib_and_costs_little_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chatty = "import sys\nfor _ in range(200): sys.stdout.buffer.write(b'x' * 2**20)\n"
    hook = Hook(events=("upload",), command=(sys.executable, "-c", chatty), timeout=60)
    caplog.set_level(logging.INFO, logger="sftpd.hooks")
    tracemalloc.start()
    try:
        assert (await run_command(hook, Event("upload", "ana")))[0] == "ok"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB of Python memory"
    [ran] = [r for r in caplog.records if r.getMessage() == "hook ran"]
    assert ran.__dict__["output"] == "x" * OUTPUT_LIMIT


@pytest.mark.parametrize(("then", "outcome"), [("", "ok"), ("time.sleep(30)\n", "timeout")])
async def test_a_child_holding_the_output_open_cannot_hold_the_hook(
    pids: Path, then: str, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The hook's own process decides: its exit (or kill at the timeout), then at most
    OUTPUT_GRACE for the pipe; no descriptor, task or transport is left behind."""
    hook = Hook(events=("upload",), command=stalling_command(pids, then), timeout=1)
    gc.collect()  # what earlier tests left, before this one counts
    pipes = open_pipes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            start = time.monotonic()
            assert (await run_command(hook, Event("upload", "ana")))[0] == outcome
            elapsed = time.monotonic() - start
            assert elapsed < hook.timeout + OUTPUT_GRACE + 2, f"took {elapsed:.1f} s"
        await asyncio.sleep(0.1)
        gc.collect()
    assert open_pipes() <= pipes
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert len(pids.read_text().split()) == 3


async def test_a_stalled_hook_does_not_hold_the_next_one(pids: Path, tmp_path: Path) -> None:
    """One delivery at a time per hook: a hook whose child keeps its output open, then
    another hook's event."""
    command, out = recorder(tmp_path)
    store = await open_store(str(tmp_path / "sftpd.db"))
    bus = EventBus(
        (
            Hook(events=("upload",), command=stalling_command(pids), timeout=15),
            Hook(events=("mkdir",), command=command, timeout=5),
        ),
        store,
        "test-holder",
        buffer=10,
        concurrency=1,
    )
    bus.start()
    try:
        start = time.monotonic()
        await bus.emit(Event("upload", "ana", path="/a"))
        await bus.emit(Event("mkdir", "ana", path="/d"))
        while not lines(out) and time.monotonic() - start < 20:
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - start
        while bus.outcomes["ok"] < 2 and time.monotonic() - start < 20:
            await asyncio.sleep(0.02)
    finally:
        await bus.stop(drain=5)
        await store.close()
    assert [x["event"]["name"] for x in lines(out)] == ["mkdir"]
    assert elapsed < OUTPUT_GRACE + 3, f"the second hook ran after {elapsed:.1f} s"
    assert bus.outcomes["ok"] == 2


def test_the_documented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/examples/sftpd.toml as shipped, only its ports and URL changed: an upload to
    /incoming ends up in /processed, the webhook hears of it, /metrics counts it."""
    root = Path(__file__).resolve().parents[2]
    receiver = Receiver()
    metrics_port = free_port()
    conf = (root / "docs" / "examples" / "sftpd.toml").read_text()
    conf = conf.replace("http://127.0.0.1:8080/sftp-events", receiver.url)
    conf = conf.replace('"docs/examples/', f'"{root}/docs/examples/')
    conf = conf.replace('["0.0.0.0"]', '["127.0.0.1"]')
    conf = conf.replace("127.0.0.1:9100", f"127.0.0.1:{metrics_port}")
    (tmp_path / "sftpd.toml").write_text(conf)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("SFTPD_CONFIG", str(tmp_path / "sftpd.toml"))
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = run(tmp_path, "user", "add", "ana", "--key", f"{key}.pub")
    assert added.returncode == 0, added.stderr
    home = tmp_path / "data" / "homes" / "ana"
    (home / "incoming").mkdir(parents=True, exist_ok=True)
    (tmp_path / "report.csv").write_text("a,b\n1,2\n")
    server = Serve(tmp_path, "--no-demo")
    try:
        hosts = known_hosts(tmp_path, server.port)
        r = subprocess.run(
            ["sftp", "-b", "-", "-P", str(server.port), "-F", "/dev/null",
             "-o", f"IdentityFile={key}", "-o", f"UserKnownHostsFile={hosts}", "ana@127.0.0.1"],
            input=f"put {tmp_path / 'report.csv'} /incoming/report.csv\n",
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        wait_until(lambda: (home / "processed" / "report.csv").exists(), "the hook never moved it")
        assert not (home / "incoming" / "report.csv").exists()
        wait_until(lambda: receiver.events(), "the webhook never heard of it")
        [(headers, body)] = receiver.requests
        assert hmac.compare_digest(headers["X-Sftpd-Signature"], signature(SECRET, body))
        assert json.loads(body)["path"] == "/incoming/report.csv"
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'sftpd_bytes_total{direction="upload"} 8.0' in metrics
    finally:
        code, err = server.stop()
        receiver.close()
    assert code == 0, err


async def test_an_event_the_store_cannot_take_is_dropped_alone(tmp_path: Path) -> None:
    """An event the store refuses for what it holds (here a field JSON cannot encode) is
    dropped with one error line; the events queued with and after it are recorded and
    their operations answered."""
    store = await open_store(str(tmp_path / "sftpd.db"))
    bus = EventBus((), store, "test-holder", buffer=10, concurrency=1)
    bus.start()
    try:
        waits = [bus.emit(Event("upload", "ana", path=f"/{i}")) for i in range(3)]
        waits.insert(1, bus.emit(Event("upload", "ana", path="/bad", size=b"x")))  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.gather(*waits), 10)
        waits = [bus.emit(Event("mkdir", "ana", path="/later"))]
        await asyncio.wait_for(asyncio.gather(*waits), 10)
        found = await store.query_events(EventQuery(user="ana"))
    finally:
        await bus.stop(drain=5)
        await store.close()
    assert [e.data["path"] for e in found] == ["/0", "/1", "/2", "/later"]
    assert bus.outcomes["dropped"] == 1
