"""python -m bench.nodes [--quick] [--reps N]: two sftpd nodes on one PostgreSQL.

Measures, in one run and interleaved:
- quota reservations per second (claim + release) from 16 concurrent tasks on two store
  connections ("nodes"), against SQLite and against PostgreSQL;
- aggregate throughput of concurrent OpenSSH ``sftp`` uploads of one user: one node on SQLite,
  one node on PostgreSQL, and two nodes sharing PostgreSQL and the data dir (clients split
  between them). Each node runs one worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.pg import PgServer, find_bindir
from bench.servers import free_port, keygen, wait_port
from sftpd.store import Store, UserRecord, open_store

MiB = 1024 * 1024


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]


def start_node(work: Path, db: str | None) -> Node:
    port = free_port()
    base = [sys.executable, "-m", "sftpd", "--data-dir", str(work / "data"),
            "--keys-dir", str(work / "keys")] + (["--db", db] if db else [])  # fmt: skip
    proc = subprocess.Popen(
        [*base, "serve", "--port", str(port), "--workers", "1", "--no-demo", "--log-level",
         "warning", "--max-sessions-per-user", "0", "--max-connections-per-address", "0"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc, "sftpd")
    return Node(port, proc)


def add_user(work: Path, db: str | None, key: Path) -> None:
    base = [sys.executable, "-m", "sftpd", "--data-dir", str(work / "data"),
            "--keys-dir", str(work / "keys")] + (["--db", db] if db else [])  # fmt: skip
    subprocess.run(
        [*base, "user", "add", "bench", "--key", f"{key}.pub", "--quota", "unlimited"],
        check=True, capture_output=True,
    )  # fmt: skip


def uploads(nodes: list[Node], key: Path, src: Path, clients: int) -> float:
    """MB/s of ``clients`` concurrent sftp uploads of ``src``, spread over the nodes."""
    opts = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"IdentityFile={key}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-c", "aes128-gcm@openssh.com"]  # fmt: skip
    start = time.perf_counter()
    procs = []
    for i in range(clients):
        node = nodes[i % len(nodes)]
        p = subprocess.Popen(
            ["sftp", "-b", "-", "-P", str(node.port), *opts, "bench@127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert p.stdin is not None
        p.stdin.write(f"put {src} u{i}.bin\n".encode())
        p.stdin.close()
        procs.append(p)
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("an upload failed")
    return clients * src.stat().st_size / 1e6 / (time.perf_counter() - start)


async def reservations(url: str, seconds: float, tasks: int = 16) -> float:
    """Claim+release pairs per second from ``tasks`` tasks over two store connections."""
    stores: list[Store] = [await open_store(url), await open_store(url)]
    name = f"r{os.getpid()}{int(time.time() * 1000) % 100000}"
    await stores[0].add_user(UserRecord(name, quota_bytes=1 << 50))
    done = 0
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        store = stores[i % 2]
        while time.monotonic() < stop:
            grant = await store.reserve(name, f"h{i}", 8 * MiB, 1, 0)
            await store.apply(name, f"h{i}", reserved=-grant)
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    rate = done / (time.monotonic() - t0)
    for s in stores:
        await s.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nodes", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=0)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print("bench.nodes: PostgreSQL is needed: apt-get install postgresql", file=sys.stderr)
        return 2
    reps = args.reps or (1 if args.quick else 3)
    size, clients, seconds = (8 * MiB, 4, 2.0) if args.quick else (64 * MiB, 16, 10.0)
    pg = PgServer(bindir)
    rows: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sftpd-nodes-") as tmp_name:
            tmp = Path(tmp_name)
            key = tmp / "id"
            keygen(key)
            src = tmp / "src.bin"
            src.write_bytes(os.urandom(size))
            sqlite_url = f"sqlite:///{tmp / 'r.db'}"
            for rep in range(reps):
                print(f"bench.nodes: rep {rep + 1}/{reps}", file=sys.stderr, flush=True)
                for label, url in (("SQLite", sqlite_url), ("PostgreSQL", pg.create_db())):
                    rate = asyncio.run(reservations(url, seconds))
                    rows.setdefault(f"quota reservations/s, {label}", []).append(rate)
                setups = [("1 node, SQLite", None, 1), ("1 node, PostgreSQL", "pg", 1),
                          ("2 nodes, PostgreSQL", "pg", 2)]  # fmt: skip
                for label, kind, count in setups:
                    work = tmp / f"w{rep}-{count}-{kind}"
                    db = pg.create_db() if kind else None
                    add_user(work, db, key)
                    nodes = [start_node(work, db) for _ in range(count)]
                    try:
                        mbs = uploads(nodes, key, src, clients)
                    finally:
                        for n in nodes:
                            n.proc.terminate()
                            n.proc.wait(timeout=30)
                    rows.setdefault(f"{clients} concurrent uploads (MB/s), {label}", []).append(mbs)
    finally:
        pg.stop()
    print(f"\n{os.cpu_count()} cores; {'quick' if args.quick else 'full'} run, {reps} rep(s)\n")
    print("| measurement | median | min-max |\n|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):,.1f} | "
              f"{min(values):,.1f}-{max(values):,.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
