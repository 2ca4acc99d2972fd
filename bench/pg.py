"""A throwaway PostgreSQL server (tests, benchmark): initdb into a temp dir, 127.0.0.1, free port.

Debian's ``postgresql`` package provides the binaries (scripts/test.sh installs it); when
none can be found the PostgreSQL tests skip and the run's summary says so loudly.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SKIP_REASON = ""


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(str(Path(shutil.which("pg_ctl") or "").parent))
    for c in candidates:
        if all((Path(c) / tool).exists() for tool in ("initdb", "pg_ctl", "createdb")):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One postgres process; ``url(db)`` for a database in it, ``create_db`` for a new one."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="sftpd-pg-"))  # under /tmp: reachable by postgres
        self.port = _free_port()
        self._as: list[str] = []
        if os.getuid() == 0:  # postgres refuses to run as root: use the package's user
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "sftpd", "--no-sync", "-E", "UTF8"
        )
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        self._count = 0

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://sftpd@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        """A new, empty database; its URL."""
        self._count += 1
        name = f"t{self._count}_{int(time.time() * 1000) % 100000}"
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "sftpd", name],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
