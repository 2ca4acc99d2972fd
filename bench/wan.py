"""Throughput over a long link: OpenSSH sftp and xfer (one stream, -j 4) against sftpd and
OpenSSH's sshd, through bench.relay at several round-trip times.

python -m bench.wan [--size 256MiB] [--rtt 20,50,100] [--reps 3] [--plot FILE.png] [--json F]
(an RTT of 0 connects directly, without the relay: loopback)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.harness import _random_file, workdir
from bench.relay import serve
from bench.servers import Server, check_prerequisites, keygen, start_openssh, start_sftpd
from sftpd.sizes import format_size, parse_size

CLIENTS = ("sftp", "xfer -j 1", "xfer -j 4")


class Relays:
    """Relays in a thread of their own, so the clients' subprocesses run freely."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def start(self, target: int, rtt_ms: float) -> tuple[int, asyncio.Server]:
        server = asyncio.run_coroutine_threadsafe(serve(0, target, rtt_ms), self.loop).result()
        return server.sockets[0].getsockname()[1], server

    def stop(self, server: asyncio.Server) -> None:
        self.loop.call_soon_threadsafe(server.close)


def run_client(client: str, server: Server, port: int, key: Path, tmp: Path, upload: bool,
               name: str) -> float:  # fmt: skip
    """Seconds for one transfer of ``name`` through the relay on ``port``."""
    remote = server.remote(name)
    local = tmp / name if upload else tmp / f"back-{name}"
    if client == "sftp":
        batch = f"put {local} {remote}\n" if upload else f"get {remote} {local}\n"
        argv = ["sftp", "-b", "-", "-P", str(port), "-F", "/dev/null", "-o", "BatchMode=yes",
                "-o", f"IdentityFile={key}", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                f"{server.user}@127.0.0.1"]  # fmt: skip
        start = time.perf_counter()
        r = subprocess.run(argv, input=batch.encode(), capture_output=True)
    else:
        jobs = client.split()[-1]
        env = {**os.environ, "HOME": str(tmp), "XFER_CONFIG_DIR": str(tmp / "xfer")}
        env.pop("SSH_AUTH_SOCK", None)
        verb = ["put", str(local), remote] if upload else ["get", remote, str(local)]
        argv = [sys.executable, "-m", "cli", "-q", "--accept-new", "--known-hosts",
                str(tmp / f"kh-{port}"), "-t", f"{server.user}@127.0.0.1:{port}", "-i", str(key),
                verb[0], "-j", jobs, *verb[1:]]  # fmt: skip
        start = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True, cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError(f"{client} against {server.name}: {r.stderr.decode()[-300:]}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--rtt", default="20,50,100")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    check_prerequisites()
    size = parse_size(args.size)
    rtts = [float(x) for x in args.rtt.split(",")]
    results: dict[str, list[float]] = {}  # "server|client|dir|rtt" -> MB/s values
    with workdir(need=4 * size) as base:
        tmp = Path(base)
        key = tmp / "id"
        keygen(key)
        servers = [start_sftpd(tmp, key.with_suffix(".pub")),
                   start_openssh(tmp, key.with_suffix(".pub"))]  # fmt: skip
        relays = Relays()
        _random_file(tmp / "wan.bin", size)
        try:
            for rtt in rtts:
                for server in servers:
                    port, relay = relays.start(server.port, rtt) if rtt else (server.port, None)
                    for _ in range(args.reps):
                        for client in CLIENTS:
                            for upload in (True, False):
                                seconds = run_client(client, server, port, key, tmp, upload,
                                                     "wan.bin")  # fmt: skip
                                k = f"{server.name}|{client}|{'put' if upload else 'get'}|{rtt:g}"
                                results.setdefault(k, []).append(size / seconds / 1e6)
                                print(f"{k}: {size / seconds / 1e6:.1f} MB/s", flush=True)
                    if relay is not None:
                        relays.stop(relay)
        finally:
            for server in servers:
                server.stop()
    table = render(results, rtts, size)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, rtts, args.plot)
    return 0


def render(results: dict[str, list[float]], rtts: list[float], size: int) -> str:
    lines = [f"MB/s, medians, {format_size(size)} file, through bench.relay", "",
             "| server | client | dir | " + " | ".join(f"{r:g} ms" for r in rtts) + " |",
             "|---|---|---|" + "---|" * len(rtts)]  # fmt: skip
    for server in ("sftpd", "openssh"):
        for client in CLIENTS:
            for d in ("put", "get"):
                cells = [results.get(f"{server}|{client}|{d}|{r:g}") for r in rtts]
                row = [f"{statistics.median(c):.1f}" if c else "-" for c in cells]
                lines.append(f"| {server} | {client} | {d} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: dict[str, list[float]], rtts: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, d in zip(axes, ("put", "get"), strict=True):
        for server in ("sftpd", "openssh"):
            for client in CLIENTS:
                ys = [statistics.median(results.get(f"{server}|{client}|{d}|{r:g}", [0]))
                      for r in rtts]  # fmt: skip
                ax.plot(rtts, ys, marker="o", linestyle="-" if server == "sftpd" else "--",
                        label=f"{client} -> {server}")  # fmt: skip
        ax.set_title(f"{d} (upload)" if d == "put" else f"{d} (download)")
        ax.set_xlabel("round-trip time (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MB/s (median)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
