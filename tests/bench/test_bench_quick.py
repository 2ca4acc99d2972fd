"""CI runs the benchmark harness in its quick size to keep it working (no speed asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_quick_benchmark_runs_and_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    table = out.read_text()
    for n in range(1, 10):
        assert f"| {n}. " in table, f"workload {n} missing"
    assert "| sftpd/OpenSSH |" in table and "| sftpd 1 worker/bare |" in table
    for line in table.splitlines():
        if line.startswith("| 1. ") or line.startswith("| 2. "):
            assert "n/a" not in line.split("|")[3:7], line  # every server ran the transfers


@pytest.mark.timeout(600)
def test_one_workload_with_chosen_ciphers(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    argv = [sys.executable, "-m", "bench", "--quick", "--reps", "1", "--only", "transfers",
            "--ciphers", "aes128-ctr", "--output", str(out)]  # fmt: skip
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split("|")[1].strip() for line in out.read_text().splitlines()[4:] if "|" in line}
    assert rows == {"1. sftp upload, aes128-ctr", "1. sftp download, aes128-ctr", "2. xfer put",
                    "2. xfer get", "7. server CPU per GiB moved, aes128-ctr"}  # fmt: skip
    r = subprocess.run([*argv[:3], "--only", "transfers,bogus"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "unknown workloads: bogus" in r.stderr


@pytest.mark.timeout(600)
def test_quick_two_node_benchmark_runs(pg_server: object) -> None:
    """``pg_server`` only makes this skip loudly when PostgreSQL is missing."""
    r = subprocess.run([sys.executable, "-m", "bench.nodes", "--quick"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    for row in ("quota reservations/s, PostgreSQL", "2 nodes, PostgreSQL", "1 node, SQLite"):
        assert row in r.stdout, r.stdout
