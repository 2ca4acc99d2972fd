"""Workloads, run interleaved (sftpd, OpenSSH, bare asyncssh, again...), and the report."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import Server, keygen, start_bare, start_openssh, start_sftpd

MiB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    big: int  # workload 1/2/7 file size
    small_files: int  # workload 3
    concurrent: int  # workload 4 clients
    concurrent_size: int
    login_seconds: float  # workload 5
    idle_sessions: int  # workload 6
    hash_size: int  # workload 8
    reps: int
    load_sessions: int = 64  # workload 9
    load_seconds: float = 10.0

    @classmethod
    def full(cls) -> Sizes:
        return cls(1024 * MiB, 2000, 16, 64 * MiB, 10.0, 1000, 1024 * MiB, 3)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(8 * MiB, 40, 4, 4 * MiB, 1.0, 20, 8 * MiB, 1, 8, 1.0)  # keeps it working


@dataclass
class Row:
    """One workload: values per server; ``higher_is_better`` says how to read them."""

    name: str
    unit: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, server: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault(server, []).append(value)

    def median(self, server: str) -> float | None:
        vals = self.values.get(server)
        return statistics.median(vals) if vals else None

    def cell(self, server: str) -> str:
        vals = self.values.get(server)
        if not vals:
            return "n/a"
        med = statistics.median(vals)
        if len(vals) == 1:
            return f"{med:,.1f}"
        return f"{med:,.1f} ({min(vals):,.1f}-{max(vals):,.1f})"

    def ratio(self, other: str, ours: str = "sftpd") -> str:
        """``ours`` against ``other`` as a cost ratio: < 1 means sftpd is better."""
        a, b = self.median(ours), self.median(other)
        if not a or not b:
            return "n/a"
        return f"{(b / a if self.higher_is_better else a / b):.2f}"


class Bench:
    #: what ``--only`` names: the methods below, in the order a repetition runs them
    WORKLOADS = ("transfers", "small_files", "concurrent", "logins", "hashing", "latency", "idle")

    def __init__(
        self, sizes: Sizes, ciphers: list[str], workdir: Path, only: set[str] | None = None
    ) -> None:
        self.only = set(self.WORKLOADS) if only is None else only
        self.sizes = sizes
        self.ciphers = ciphers
        self.tmp = workdir
        self.key = workdir / "client"
        keygen(self.key)
        self.home = workdir / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.servers: list[Server] = []
        self.rows: dict[str, Row] = {}
        self.src = workdir / "src"
        self.src.mkdir()

    # -- setup -----------------------------------------------------------------

    def start(self) -> None:
        pub = Path(str(self.key) + ".pub")
        self.servers = [
            start_sftpd(self.tmp, pub),
            start_sftpd(self.tmp, pub, workers=1),
            start_openssh(self.tmp, pub),
            start_bare(self.tmp, pub),
        ]
        self.start_clients()

    def start_clients(self) -> None:
        """Known hosts for the servers, and the source files."""
        lines = [
            f"[127.0.0.1]:{s.port} {Path(s.extra['host_key']).read_text().split(' ')[0]} "
            f"{Path(s.extra['host_key']).read_text().split(' ')[1]}"
            for s in self.servers
        ]
        (self.home / ".ssh" / "known_hosts").write_text("\n".join(lines) + "\n")
        self.big = self.src / "big.bin"
        _random_file(self.big, self.sizes.big)
        self.conc = self.src / "conc.bin"
        _random_file(self.conc, self.sizes.concurrent_size)
        self.tree = self.src / "tree"
        self.tree.mkdir()
        for i in range(self.sizes.small_files):
            (self.tree / f"f{i:05d}").write_bytes(os.urandom(4096))

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def row(self, name: str, unit: str, higher_is_better: bool) -> Row:
        return self.rows.setdefault(name, Row(name, unit, higher_is_better))

    # -- clients -----------------------------------------------------------------

    def ssh_opts(self, server: Server, cipher: str) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            f"IdentityFile={self.key}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.home / '.ssh' / 'known_hosts'}",
            "-c",
            cipher,
        ]

    def sftp_cmd(self, server: Server, cipher: str) -> list[str]:
        """OpenSSH's sftp in batch mode, commands on stdin."""
        opts = self.ssh_opts(server, cipher)
        return ["sftp", "-b", "-", "-P", str(server.port), *opts, f"{server.user}@127.0.0.1"]

    def sftp(self, server: Server, batch: str, cipher: str) -> float:
        start = time.perf_counter()
        r = subprocess.run(
            self.sftp_cmd(server, cipher),
            input=batch.encode(),
            capture_output=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"sftp against {server.name} failed: {r.stderr.decode()[-300:]}")
        return time.perf_counter() - start

    def xfer(self, server: Server, cipher: str, *args: str) -> float:
        (self.home / ".ssh" / "config").write_text(f"Host *\n  Ciphers {cipher}\n")
        env = {**os.environ, "HOME": str(self.home), "XFER_CONFIG_DIR": str(self.home / "xfer")}
        env.pop("SSH_AUTH_SOCK", None)
        start = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "-q",
                "-t",
                f"{server.user}@127.0.0.1:{server.port}",
                "-i",
                str(self.key),
                *args,
            ],
            env=env,
            capture_output=True,
            cwd=self.tmp,
        )
        if r.returncode != 0:
            raise RuntimeError(f"xfer against {server.name} failed: {r.stderr.decode()[-300:]}")
        return time.perf_counter() - start

    # -- workloads -------------------------------------------------------------

    def run(self, progress: Callable[[str], None]) -> None:
        progress("warm-up (untimed)")
        for server in self.servers:
            self.sftp(server, f"put {self.conc} {server.remote('warm.bin')}\n", self.ciphers[0])
            server.clean()
        for rep in range(self.sizes.reps):
            # Rotate who goes first, so no server always pays for a cold machine.
            order = (
                self.servers[rep % len(self.servers) :] + self.servers[: rep % len(self.servers)]
            )
            for server in order:
                progress(f"rep {rep + 1}/{self.sizes.reps}: {server.name}")
                if "transfers" in self.only:
                    for cipher in self.ciphers:
                        self.transfers(server, cipher)
                for name in self.WORKLOADS[1:-1]:
                    if name in self.only:
                        getattr(self, name)(server)
                server.clean()
        for server in self.servers if "idle" in self.only else []:
            progress(f"idle sessions: {server.name}")
            self.idle(server)

    def transfers(self, server: Server, cipher: str) -> None:
        gib = self.sizes.big / 1024**3
        short = cipher.split("@")[0]
        cpu0 = server.cpu_seconds()
        up = self.sftp(server, f"put {self.big} {server.remote('big.bin')}\n", cipher)
        down = self.sftp(
            server, f"get {server.remote('big.bin')} {self.tmp / 'down.bin'}\n", cipher
        )
        cpu = server.cpu_seconds() - cpu0
        mb = self.sizes.big / 1e6
        self.row(f"1. sftp upload, {short}", "MB/s", True).add(server.name, mb / up)
        self.row(f"1. sftp download, {short}", "MB/s", True).add(server.name, mb / down)
        self.row(f"7. server CPU per GiB moved, {short}", "s/GiB", False).add(
            server.name, cpu / (2 * gib)
        )
        (self.tmp / "down.bin").unlink()
        if cipher != self.ciphers[0]:
            return
        up = self.xfer(server, cipher, "put", "--no-verify", str(self.big), server.remote("x.bin"))
        down = self.xfer(
            server,
            cipher,
            "get",
            "--no-verify",
            server.remote("x.bin"),
            str(self.tmp / "xdown.bin"),
        )
        self.row("2. xfer put", "MB/s", True).add(server.name, mb / up)
        self.row("2. xfer get", "MB/s", True).add(server.name, mb / down)
        (self.tmp / "xdown.bin").unlink()

    def small_files(self, server: Server) -> None:
        secs = self.sftp(server, f"put -r {self.tree} {server.remote('tree')}\n", self.ciphers[0])
        self.row(f"3. {self.sizes.small_files:,} x 4 KiB put -r", "files/s", True).add(
            server.name, self.sizes.small_files / secs
        )

    def concurrent(self, server: Server) -> None:
        n = self.sizes.concurrent
        cmd = self.sftp_cmd(server, self.ciphers[0])
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(n)
        ]
        for i, p in enumerate(procs):
            assert p.stdin is not None
            p.stdin.write(f"put {self.conc} {server.remote(f'c{i}.bin')}\n".encode())
            p.stdin.close()
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError(f"concurrent uploads to {server.name} failed")
        secs = time.perf_counter() - start
        self.row(f"4. {n} concurrent uploads", "MB/s", True).add(
            server.name, n * self.sizes.concurrent_size / 1e6 / secs
        )

    def logins(self, server: Server) -> None:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "logins",
                str(server.port),
                server.user,
                str(self.key),
                str(self.sizes.login_seconds),
                "8",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.row("5. logins (key + stat, 8 parallel)", "logins/s", True).add(
            server.name, float(r.stdout)
        )

    def latency(self, server: Server) -> None:
        """p99 of stat and ls while other sessions churn small files and upload."""
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "mixed",
                str(server.port),
                server.user,
                str(self.key),
                str(self.sizes.load_seconds),
                str(self.sizes.load_sessions),
                server.remote("load"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(r.stdout)
        if result["errors"]:
            raise RuntimeError(f"mixed load on {server.name} failed: {result['error_samples']}")
        n = self.sizes.load_sessions
        for op in ("stat", "ls"):
            self.row(f"9. {op} p99 under load ({n} sessions)", "ms", False).add(
                server.name, result[f"{op}_p99_ms"]
            )

    def hashing(self, server: Server) -> None:
        if not server.exec_ok:
            return
        target = server.disk / "hash.bin"
        _random_file(target, self.sizes.hash_size)
        start = time.perf_counter()
        r = subprocess.run(
            [
                "ssh",
                "-p",
                str(server.port),
                *self.ssh_opts(server, self.ciphers[0]),
                f"{server.user}@127.0.0.1",
                "sha256sum",
                server.remote("hash.bin"),
            ],
            capture_output=True,
        )
        secs = time.perf_counter() - start
        if r.returncode == 0:
            self.row("8. sha256sum exec", "MB/s", True).add(
                server.name, self.sizes.hash_size / 1e6 / secs
            )

    def idle(self, server: Server) -> None:
        n = self.sizes.idle_sessions
        time.sleep(3.0)  # let the last workload's connections close and memory settle
        before = server.memory_kib()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "idle",
                str(server.port),
                server.user,
                str(self.key),
                str(n),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"idle sessions against {server.name} failed")
        time.sleep(1.0)
        after = server.memory_kib()
        proc.stdin.close()
        proc.wait(60)
        self.row(f"6. memory per idle session ({n:,})", "KiB", False).add(
            server.name, (after - before) / n
        )
        self.row(f"6. server memory with {n:,} idle sessions", "MiB", False).add(
            server.name, after / 1024
        )

    # -- report ------------------------------------------------------------------

    def table(self) -> str:
        lines = [
            "| workload | unit | sftpd | sftpd, 1 worker | OpenSSH | bare asyncssh "
            "| sftpd/OpenSSH | sftpd 1 worker/bare |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in sorted(self.rows.values(), key=lambda r: r.name):
            lines.append(
                f"| {row.name} | {row.unit} | {row.cell('sftpd')} | {row.cell('sftpd-1')} | "
                f"{row.cell('openssh')} | {row.cell('bare')} | {row.ratio('openssh')} | "
                f"{row.ratio('bare', 'sftpd-1')} |"
            )
        lines.append("")
        lines.append(
            "Cells: median (min-max) of the runs. sftpd runs with its default of one worker "
            "process per core; 'sftpd, 1 worker' is one event loop like bare asyncssh, so their "
            "ratio is sftpd's own overhead. Ratios are costs (time or resources of sftpd divided "
            "by the other's): below 1 means sftpd is better."
        )
        return "\n".join(lines)


def _random_file(path: Path, size: int) -> None:
    chunk = os.urandom(MiB)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(chunk)
        fh.write(os.urandom(size % MiB))


def workdir(need: int = 0) -> tempfile.TemporaryDirectory[str]:
    """A temp dir on tmpfs when there is one with ``need`` bytes free (as the targets were
    measured), else /tmp. A full tmpfs shows up as a transfer dying mid-run, so check first."""
    base = None
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= need:
            base = "/dev/shm"
        else:
            print(
                f"bench: /dev/shm has less than {need / 1024**3:.1f} GiB free; using /tmp",
                file=sys.stderr,
            )
    return tempfile.TemporaryDirectory(prefix="sftpd-bench-", dir=base)
