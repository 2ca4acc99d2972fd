"""/metrics and /healthz: scraped with an HTTP client after real transfers, across workers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sftpd.metrics import MetricsServer, NoMetrics
from tests.support import Serve, known_hosts, run, worker_pids

KiB = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_was_moved_across_workers(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run(tmp_path, "user", "add", "mo", "--key", f"{key}.pub").returncode == 0
    port = free_port()
    server = Serve(tmp_path, "--no-demo", "--workers", "2", "--max-sessions-per-user", "0",
                   "--metrics-listen", f"127.0.0.1:{port}")  # fmt: skip
    sizes = [100 * KiB + i for i in range(6)]
    try:
        assert len(worker_pids(server.proc.pid)) == 2
        hosts = known_hosts(tmp_path, server.port)
        base = ["sftp", "-b", "-", "-P", str(server.port), "-F", "/dev/null",
                "-o", f"UserKnownHostsFile={hosts}", "-o", "BatchMode=yes"]  # fmt: skip
        for i, size in enumerate(sizes):  # six connections: the kernel spreads them
            (tmp_path / f"f{i}").write_bytes(os.urandom(size))
            r = subprocess.run([*base, "-o", f"IdentityFile={key}", "mo@127.0.0.1"],
                               input=f"put {tmp_path / f'f{i}'} f{i}\nget f{i} {tmp_path}/g{i}\n",
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert r.returncode == 0, r.stderr
        wrong = tmp_path / "wrong"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)],
                       check=True)  # fmt: skip
        r = subprocess.run([*base, "-o", f"IdentityFile={wrong}", "-o", "IdentitiesOnly=yes",
                            "mo@127.0.0.1"], input="pwd\n", capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode != 0
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=5) as client:
            while True:  # a logout is counted when the server sees the connection go
                scrapes = [samples(client.get(f"{url}/metrics").text) for _ in range(6)]
                if all(value(s, "sftpd_connections") == 0 for s in scrapes):
                    break
                assert time.monotonic() < deadline, "connections never went back to 0"
                time.sleep(0.1)
            health = client.get(f"{url}/healthz")
            missing = client.get(f"{url}/nope")
        assert health.status_code == 200 and missing.status_code == 404
        for s in scrapes:  # whichever worker answered, the same totals
            assert value(s, "sftpd_bytes_total", direction="upload") == sum(sizes)
            assert value(s, "sftpd_bytes_total", direction="download") == sum(sizes)
            assert value(s, "sftpd_transfers_total", direction="upload",
                         outcome="completed") == len(sizes)  # fmt: skip
            assert value(s, "sftpd_logins_total", method="publickey", outcome="ok") == len(sizes)
            assert value(s, "sftpd_logins_total", method="publickey", outcome="failed") >= 1
            assert value(s, "sftpd_connections_total", outcome="ok") == len(sizes) + 1
            assert value(s, "sftpd_store_seconds_count", call="apply") >= 1
    finally:
        code, err = server.stop()
    assert code == 0, err


async def test_healthz_is_503_when_the_store_does_not_answer() -> None:
    async def broken() -> bool:
        raise OSError("database unavailable")

    server = MetricsServer(NoMetrics(), broken)
    port = free_port()
    await server.start("127.0.0.1", port, reuse_port=False)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{port}/healthz")
            post = await client.post(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 503 and r.text == "unavailable\n"
        assert post.status_code == 405
    finally:
        await server.stop()
