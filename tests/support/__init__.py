"""Helpers the test suites share: the sftpd and xfer commands as child processes,
host keys, users and a look at the ledger. Fixtures stay in conftest.py files."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SFTPD = [sys.executable, "-m", "sftpd"]


def run(
    cwd: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SFTPD, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


class Serve:
    """``sftpd serve`` as a child process, with what it printed at start."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*SFTPD, "serve", "--port", "0", *args], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))
            if m := re.match(r"sftpd: listening on [\d.]+:(\d+)", line):
                self.port = int(m.group(1))
                return
        raise AssertionError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


def known_hosts(workdir: Path, port: int) -> Path:
    path = workdir / "known_hosts"
    pub = (workdir / "keys" / "ssh_host_ed25519_key.pub").read_text().strip()
    path.write_text(f"[127.0.0.1]:{port} {pub}\n")
    return path


def worker_pids(parent: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]


def ledger_row(workdir: Path, user: str) -> tuple[int, int, int]:
    with sqlite3.connect(workdir / "data" / "sftpd.db") as db:
        used, files = db.execute(
            "SELECT used_bytes, used_files FROM users WHERE name=?", (user,)
        ).fetchone()
        (reserved,) = db.execute(
            "SELECT coalesce(sum(bytes), 0) FROM reservations WHERE user=?", (user,)
        ).fetchone()
    return used, files, reserved


def new_user(workdir: Path, name: str, quota: str = "10GiB") -> Path:
    key = workdir / f"id_{name}"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = run(workdir, "user", "add", name, "--key", f"{key}.pub", "--quota", quota)
    assert added.returncode == 0, added.stderr
    return key


class Xfer:
    """Runs ``python -m cli`` with an isolated HOME and config dir."""

    def __init__(self, tmp: Path, target: str, key: Path | None, known_hosts: Path | None) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "HOME": str(tmp / "home"), "XFER_CONFIG_DIR": str(tmp / "cfg")}
        self.env.pop("SSH_AUTH_SOCK", None)
        (tmp / "home").mkdir(exist_ok=True)
        self.base = [sys.executable, "-m", "cli", "-t", target]
        if key:
            self.base += ["-i", str(key)]
        if known_hosts:
            self.base += ["--known-hosts", str(known_hosts)]

    def cmd(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def __call__(self, *args: str, input: str | None = None, base: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = self.cmd(*args) if base else [sys.executable, "-m", "cli", *args]
        return subprocess.run(argv, input=input, capture_output=True, text=True, env=self.env,
                              cwd=self.tmp, timeout=timeout)  # fmt: skip


def keypair(directory: Path, name: str = "id") -> Path:
    """A fresh ed25519 key without a passphrase; returns the private key's path."""
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key
