"""Client-side load in its own process: idle sessions, a login storm, or a mixed load.

python -m bench.loadgen idle PORT USER KEY COUNT      prints "ready", holds until stdin closes
python -m bench.loadgen logins PORT USER KEY SECONDS CONCURRENCY   prints logins per second
python -m bench.loadgen mixed PORT USER[,USER...] KEY SECONDS SESSIONS [DIR]
    SESSIONS sessions spread over the users, a quarter each churning 4 KiB files, rewriting
    a 4 MiB file, and two quarters timing stat and ls; prints one JSON line with operations,
    errors and latency percentiles (ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

import asyncssh


async def _session(
    port: int, user: str, key: str
) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
    conn = await asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
        server_host_key_algs=["ssh-ed25519"],  # what OpenSSH clients prefer; all servers have it
    )
    return conn, await conn.start_sftp_client()


async def idle(port: int, user: str, key: str, count: int) -> None:
    sessions = []
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem:
            sessions.append(await _session(port, user, key))

    await asyncio.gather(*(one() for _ in range(count)))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for conn, _ in sessions:
        conn.close()


async def logins(port: int, user: str, key: str, seconds: float, concurrency: int) -> None:
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            conn, sftp = await _session(port, user, key)
            await sftp.stat(".")
            conn.close()
            await conn.wait_closed()
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(f"{done / (time.monotonic() - start):.2f}", flush=True)


KiB, MiB = 1024, 1024 * 1024
SMALL, CHUNK = os.urandom(4 * KiB), os.urandom(256 * KiB)


async def _mix(
    sftp: asyncssh.SFTPClient, role: int, here: str, stop: float, lat: dict[str, list[float]]
) -> int:
    ops = 0
    await sftp.makedirs(here, exist_ok=True)
    while time.monotonic() < stop:
        if role == 0:  # small-file churn
            name = f"{here}/small{ops % 20}"
            async with sftp.open(name, "wb") as f:
                await f.write(SMALL)
            await sftp.stat(name)
            await sftp.remove(name)
        elif role == 1:  # a large upload, rewritten in place
            async with sftp.open(f"{here}/large", "wb") as f:
                for offset in range(0, 4 * MiB, len(CHUNK)):
                    await f.write(CHUNK, offset)
        else:  # listings and stats, timed
            t0 = time.perf_counter()
            await sftp.stat(here)
            lat["stat"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await sftp.listdir(here)
            lat["ls"].append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        ops += 1
    return ops


def _ms(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    if pct == 50:
        return round(statistics.median(values) * 1000, 2)
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))] * 1000, 2)


async def mixed(
    port: int, users: list[str], key: str, seconds: float, sessions: int, base: str
) -> None:
    sem = asyncio.Semaphore(16)

    async def connect(i: int) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        async with sem:
            return await _session(port, users[i % len(users)], key)

    opened = await asyncio.gather(*(connect(i) for i in range(sessions)))
    lat: dict[str, list[float]] = {"stat": [], "ls": []}
    stop = time.monotonic() + seconds
    roles = [min(i % 4, 2) for i in range(sessions)]
    results = await asyncio.gather(
        *(_mix(sftp, roles[i], f"{base}/s{i}", stop, lat) for i, (_, sftp) in enumerate(opened)),
        return_exceptions=True,
    )
    for conn, _ in opened:
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for conn, _ in opened))
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    out = {
        "sessions": sessions,
        "seconds": seconds,
        "operations": sum(r for r in results if isinstance(r, int)),
        "errors": len(errors),
        "error_samples": errors[:3],
        "stat_p50_ms": _ms(lat["stat"], 50),
        "stat_p99_ms": _ms(lat["stat"], 99),
        "ls_p50_ms": _ms(lat["ls"], 50),
        "ls_p99_ms": _ms(lat["ls"], 99),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    mode, port, user, key, *rest = sys.argv[1:]
    if mode == "idle":
        asyncio.run(idle(int(port), user, key, int(rest[0])))
    elif mode == "mixed":
        base = rest[2] if len(rest) > 2 else "."
        asyncio.run(
            mixed(int(port), user.split(","), key, float(rest[0]), int(rest[1]), base.rstrip("/"))
        )
    else:
        asyncio.run(logins(int(port), user, key, float(rest[0]), int(rest[1])))
