"""Load: 200 mixed sessions at once, idle-session memory, 1,000 connections that never log in.

What must hold: no errors, every descriptor and task the load created is gone afterwards,
usage is exact, and real users log in while the server is being flooded.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sftpd.core.quota import scan_home
from tests.stress.conftest import open_fds, report, scale
from tests.support import Serve, new_user
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path, max_connections_per_address=0, login_grace_time=2.0)
    yield server
    stop_live_server(server)


async def test_200_mixed_sessions_leave_nothing_behind(loaded: LiveServer) -> None:
    """The load comes from another process (bench.loadgen), so latencies are the server's."""
    server = loaded
    sessions, seconds = 200, scale(6, 60)
    users = [server.add_user() for _ in range(sessions // 10)]
    await asyncio.sleep(0.5)
    tasks_before = server.call(_task_count())
    fds_before = open_fds()
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", "mixed", str(server.port),
        ",".join(u.name for u in users), str(server.client_key), str(seconds), str(sessions),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(load.communicate(), seconds + 120)
    assert load.returncode == 0, err.decode()[-2000:]
    result = json.loads(out)
    assert result["errors"] == 0, result["error_samples"]

    for _ in range(200):
        await asyncio.sleep(0.05)
        if (
            not server.service.connections
            and open_fds() <= fds_before
            and server.call(_task_count()) <= tasks_before
        ):
            break
    assert len(server.service.connections) == 0
    assert open_fds() <= fds_before, f"{open_fds() - fds_before} descriptors leaked"
    assert server.call(_task_count()) <= tasks_before, "tasks leaked"
    assert connection_rows(server) == 0
    for u in users:
        usage = server.call(server.service.store.usage(u.name, 0))
        assert usage is not None
        assert (usage.used, usage.files, usage.reserved) == (*scan_home(str(u.home)), 0)
    del result["error_samples"]
    report("200 mixed sessions", **result, leaked_fds=0, leaked_tasks=0, usage_exact=True)


async def _task_count() -> int:
    return len(asyncio.all_tasks())


def connection_rows(server: LiveServer) -> int:
    """Connections the store still has on record (each live connection has one)."""
    with sqlite3.connect(server.settings.data_dir / "sftpd.db") as db:
        return int(db.execute("SELECT count(*) FROM connections").fetchone()[0])


async def test_1000_silent_connections_are_dropped_while_users_log_in(
    loaded: LiveServer,
) -> None:
    server = loaded
    user: User = server.add_user()
    count = 1000
    fds_before = open_fds()
    silent = []
    for _ in range(count):
        silent.append(await asyncio.open_connection("127.0.0.1", server.port))
    t0 = time.monotonic()
    async with server.connect(user) as conn:  # a real user, in the middle of the flood
        assert (await conn.run("sp", check=False)).exit_status == 0
    login_seconds = time.monotonic() - t0

    async def dropped(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(), 15)  # EOF once the grace time is up
            return True
        except (TimeoutError, ConnectionError):
            return False

    t1 = time.monotonic()
    outcome = await asyncio.gather(*(dropped(r) for r, _ in silent))
    drop_seconds = time.monotonic() - t1
    for _, w in silent:
        w.close()
    assert all(outcome), f"{outcome.count(False)} silent connections were never dropped"
    for _ in range(100):
        if not server.service.connections and open_fds() <= fds_before:
            break
        await asyncio.sleep(0.05)
    assert not server.service.connections
    assert open_fds() <= fds_before
    report(
        "1,000 silent connections",
        connections=count,
        grace_s=server.settings.login_grace_time,
        all_dropped=True,
        dropped_within_s=round(drop_seconds, 1),
        real_login_s=round(login_seconds, 2),
    )


@pytest.mark.timeout(600)
async def test_idle_session_memory(tmp_path: Path) -> None:
    key = new_user(tmp_path, "ida")
    # Quiet logs: nobody reads the server's log pipe, and a line per login would fill it.
    serve = Serve(
        tmp_path,
        "--no-demo",
        "--workers",
        "1",
        "--max-sessions-per-user",
        "0",
        "--max-connections-per-address",
        "0",
        "--idle-timeout",
        "0",
        "--log-level",
        "warning",
    )  # fmt: skip
    count = scale(200, 1000)

    def pss() -> int:
        text = Path(f"/proc/{serve.proc.pid}/smaps_rollup").read_text()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("Pss:")))

    async def hold(n: int) -> asyncio.subprocess.Process:
        """n authenticated SFTP sessions held open by another process."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.loadgen", "idle", str(serve.port), "ida", str(key),
            str(n), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 500)).strip() == b"ready"
        return proc

    try:
        warm = await hold(10)
        await asyncio.sleep(2.5)  # past the server's malloc_trim debounce
        before = pss()
        idle = await hold(count)
        await asyncio.sleep(2.5)
        after = pss()
        for proc in (idle, warm):
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
    finally:
        code, err = serve.stop()
    assert code == 0, err
    report(
        "idle sessions",
        sessions=count,
        server_pss_mib=round(after / 1024, 1),
        kib_per_session=round((after - before) / count, 1),
    )
