"""python -m bench.events [--before REF] [--reps N] [--files N] [--burst N]: what the outbox
costs and how fast it delivers (docs/automation.md).

1. Small files, A/B in one run: ``sftp put -r`` of N x 4 KiB to sftpd at REF (default: the
   last commit before the outbox) and to this tree, alternating, default workers; this tree
   also with one webhook. Medians of files/s and of the servers' CPU per file, and the
   ratios to REF.
2. Recording: events per second the bus records into SQLite (10,000 emitted at once).
3. Delivery latency with a healthy receiver: from an upload's event time to the POST's
   arrival, p50 and p99 over N sequential uploads.
4. A burst of N uploads over 4 connections while the receiver is down, then up: seconds
   until every event is delivered, and the server's peak RSS.
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
from pathlib import Path

from bench.servers import free_port, keygen, wait_port
from tests.support.receiver import Receiver, wait_until

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "b517244"  # main before issue 26


def start_server(
    code: Path, tmp: Path, name: str, pub: Path, url: str = ""
) -> subprocess.Popen[bytes]:
    """sftpd from the tree at ``code``, one user ``bench``, optionally a webhook."""
    data = tmp / name
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code)}
    if url:
        (data / "c.toml").write_text(
            f'[[hooks]]\nevents = ["upload"]\nurl = "{url}"\nbackoff_max = 2\n'
        )
        env["SFTPD_CONFIG"] = str(data / "c.toml")
    base = [sys.executable, "-m", "sftpd", "--data-dir", str(data), "--keys-dir", str(data / "k")]
    subprocess.run([*base, "user", "add", "bench", "--key", str(pub), "--quota", "unlimited"],
                   check=True, capture_output=True, cwd=code, env=env)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [*base, "serve", "--port", str(port), "--no-demo", "--log-level", "error",
         "--max-sessions-per-user", "0", "--max-connections-per-address", "0"],
        cwd=code, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc, name)
    proc.port = port  # type: ignore[attr-defined]
    return proc


def sftp_put(port: int, key: Path, batch: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["sftp", "-q", "-b", "-", "-P", str(port), "-i", str(key), "-F", "/dev/null",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-c", "aes128-gcm@openssh.com", "bench@127.0.0.1"],
        input=batch.encode(), check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def small_files(tmp: Path, key: Path, before: Path, reps: int, files: int) -> None:
    tree = tmp / "tree"
    tree.mkdir()
    for i in range(files):
        (tree / f"f{i:05d}").write_bytes(os.urandom(4096))
    receiver = Receiver()
    pub = Path(f"{key}.pub")
    servers = {"before": start_server(before, tmp, "before", pub),
               "after": start_server(ROOT, tmp, "after", pub),
               "after+webhook": start_server(ROOT, tmp, "hooked", pub, receiver.url)}  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpus: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for rep in range(reps):
            order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
            for name in order:
                proc = servers[name]
                before_cpu = _cpu(proc.pid)
                secs = sftp_put(proc.port, key, f"put -r {tree} t{rep}\n")  # type: ignore[attr-defined]
                rates[name].append(files / secs)
                cpus[name].append((_cpu(proc.pid) - before_cpu) / files * 1e6)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait()
        receiver.close()
    base = statistics.median(rates["before"])
    base_cpu = statistics.median(cpus["before"])
    print(f"\n1. {files:,} x 4 KiB put -r, {reps} reps"
          " (files/s, median (min-max), ratio to before)")  # fmt: skip
    for name, values in rates.items():
        med, cpu = statistics.median(values), statistics.median(cpus[name])
        print(f"   {name:<14} {med:8.0f} ({min(values):.0f}-{max(values):.0f})  {med / base:.3f}"
              f"   server CPU {cpu:6.0f} us/file  {cpu / base_cpu:.3f}")  # fmt: skip


async def recording(tmp: Path, n: int = 10_000) -> None:
    from sftpd.events import Event
    from sftpd.events.bus import EventBus
    from sftpd.store import open_store

    store = await open_store(str(tmp / "rec.db"))
    bus = EventBus((), store, "bench", buffer=n, concurrency=1)
    bus.start()
    start = time.perf_counter()
    waits = [bus.emit(Event("upload", "bench", path=f"/f{i}", size=i)) for i in range(n)]
    await asyncio.gather(*(asyncio.ensure_future(_await(w)) for w in waits))
    secs = time.perf_counter() - start
    await bus.stop(5)
    await store.close()
    print(f"\n2. recording: {n:,} events in {secs:.3f} s = {n / secs:,.0f} events/s (SQLite)")


async def _await(w: object) -> None:
    await w  # type: ignore[misc]


async def upload_many(port: int, key: Path, n: int, connections: int) -> None:
    import asyncssh

    async def one(k: int) -> None:
        async with asyncssh.connect(
            "127.0.0.1", port, username="bench", client_keys=[str(key)], known_hosts=None,
            agent_path=None,
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            for i in range(k, n, connections):
                async with sftp.open(f"/b{i}", "wb") as f:
                    await f.write(b"x" * 512)

    await asyncio.gather(*(one(k) for k in range(connections)))


def latency_and_burst(tmp: Path, key: Path, files: int, burst: int) -> None:
    receiver = Receiver()
    arrivals: dict[str, float] = {}

    class Stamped(list[tuple[dict[str, str], bytes]]):
        def append(self, item: tuple[dict[str, str], bytes]) -> None:
            arrivals[item[0]["X-Sftpd-Event-Id"]] = time.time()
            super().append(item)

    receiver.requests = Stamped()
    proc = start_server(ROOT, tmp, "latency", Path(f"{key}.pub"), receiver.url)
    port = proc.port  # type: ignore[attr-defined]
    try:
        asyncio.run(upload_many(port, key, files, 1))
        wait_until(lambda: len(receiver.events()) >= files, "not delivered", 120)
        lat = sorted((arrivals[e["id"]] - e["time"]) * 1000 for e in receiver.events())
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"\n3. delivery latency, {files} sequential uploads: p50 {p50:.1f} ms,"
              f" p99 {p99:.1f} ms")  # fmt: skip
        receiver.down = True
        got = len(receiver.events())
        t0 = time.perf_counter()
        asyncio.run(upload_many(port, key, burst, 4))
        uploaded = time.perf_counter() - t0
        receiver.down = False
        wait_until(lambda: len(receiver.events()) >= got + burst, "burst lost", 900)
        drained = time.perf_counter() - t0
        ids = {e["id"] for e in receiver.events()}
        peak = max(_peak_kib(pid) for pid in _tree(proc.pid))
        print(f"4. burst: {burst:,} uploads in {uploaded:.1f} s with the receiver down; all "
              f"{len(ids) - got:,} delivered {drained:.1f} s after the start; peak RSS of a "
              f"worker {peak / 1024:.0f} MiB")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()
        receiver.close()


def _cpu(pid: int) -> float:
    """CPU seconds of a server and its workers so far."""
    total = 0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--before", default=BEFORE, help="git ref of the A side")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--only", default="1,2,3", help="which parts: 1,2,3 (3 includes 4)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-events-") as name:
        tmp = Path(name)
        key = tmp / "client"
        keygen(key)
        if "1" in parts:
            before = tmp / "before-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                            str(before), args.before], check=True)  # fmt: skip
            try:
                small_files(tmp, key, before, args.reps, args.files)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(before)], check=True)  # fmt: skip
        if "2" in parts:
            asyncio.run(recording(tmp))
        if "3" in parts:
            latency_and_burst(tmp, key, min(args.files, 1000), args.burst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
