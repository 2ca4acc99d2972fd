"""Client-side load in its own process: idle sessions, or a login storm.

python -m bench.loadgen idle PORT USER KEY COUNT      prints "ready", holds until stdin closes
python -m bench.loadgen logins PORT USER KEY SECONDS CONCURRENCY   prints logins per second
"""

from __future__ import annotations

import asyncio
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


if __name__ == "__main__":
    mode, port, user, key, *rest = sys.argv[1:]
    if mode == "idle":
        asyncio.run(idle(int(port), user, key, int(rest[0])))
    else:
        asyncio.run(logins(int(port), user, key, float(rest[0]), int(rest[1])))
