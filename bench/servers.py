"""The three servers under test, each on 127.0.0.1 with a free port and its own temp dirs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class Missing(Exception):
    """A prerequisite is not installed; the message says how to get it."""


def check_prerequisites() -> None:
    if not os.path.exists(SSHD):
        raise Missing(
            "OpenSSH's sshd is needed for the comparison: apt-get install openssh-server "
            "(the benchmark starts its own sshd with its own config; the system's is not touched)"
        )
    for tool in ("sftp", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise Missing(f"{tool} is needed: apt-get install openssh-client")


@dataclass
class Server:
    name: str
    port: int
    user: str
    base: str  # remote directory where benchmark files go
    disk: Path  # the same directory on the local disk
    proc: subprocess.Popen[bytes]
    exec_ok: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def remote(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{name}"

    def clean(self) -> None:
        for p in self.disk.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def pids(self) -> list[int]:
        """The server's process and all its descendants."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
        return out

    def cpu_seconds(self) -> float:
        """utime+stime of the server and of every child it has reaped (sshd's sessions)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        live_children = sum(_own_ticks(p) for p in self.pids()[1:])
        return (ticks + live_children) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> int:
        """Proportional set size of the whole process tree, in KiB."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
            total += int(m.group(1)) if m else 0
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _own_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sftpd(
    tmp: Path, client_pub: Path, workers: int | None = None, code: Path | None = None,
    name: str = "", extra: Sequence[str] = (),
) -> Server:  # fmt: skip
    """sftpd as users run it: ``workers=None`` means its default, one process per core;
    ``code``: run the tree there (another commit) instead of the installed one; ``extra``:
    more ``serve`` flags."""
    name = name or ("sftpd" if workers is None else f"sftpd-{workers}")
    data, keys = tmp / f"{name}-data", tmp / f"{name}-keys"
    base = [sys.executable, "-m", "sftpd", "--data-dir", str(data), "--keys-dir", str(keys)]
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run(
        [*base, "user", "add", "bench", "--key", str(client_pub), "--quota", "unlimited"],
        check=True, capture_output=True, cwd=code, env=env,
    )  # fmt: skip
    port = free_port()
    args = [
        *base,
        "serve",
        "--port",
        str(port),
        "--no-demo",
        "--log-level",
        "warning",
        "--max-sessions-per-user",
        "0",
        "--max-connections-per-address",
        "0",
        "--idle-timeout",
        "0",
    ]
    if workers:
        args += ["--workers", str(workers)]
    args += extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=code, env=env)
    wait_port(port, proc, name)
    return Server(
        name,
        port,
        "bench",
        "/",
        data / "homes" / "bench",
        proc,
        extra={"host_key": str(keys / "ssh_host_ed25519_key.pub")},
    )


def start_openssh(tmp: Path, client_pub: Path) -> Server:
    import pwd

    d = tmp / "openssh"
    d.mkdir()
    keygen(d / "host")
    (d / "authorized_keys").write_text(client_pub.read_text())
    root = d / "files"
    root.mkdir()
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile none\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 200:30:2000\n"
        "MaxSessions 100\nUseDNS no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL
    )
    wait_port(port, proc, "sshd")
    user = pwd.getpwuid(os.getuid()).pw_name
    return Server(
        "openssh", port, user, str(root), root, proc, extra={"host_key": str(d / "host.pub")}
    )


def start_bare(tmp: Path, client_pub: Path) -> Server:
    d = tmp / "bare"
    d.mkdir()
    keygen(d / "host")
    root = d / "files"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_server", str(root), str(d / "host"), str(client_pub)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return Server(
        "bare",
        port,
        "bench",
        "/",
        root,
        proc,
        exec_ok=False,
        extra={"host_key": str(d / "host.pub")},
    )
