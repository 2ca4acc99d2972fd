"""bench.relay adds the round-trip time it is asked for and keeps to its bandwidth cap, and
bench.wan runs end to end at a small size (its speeds are measured, not asserted)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.relay import serve

ROOT = Path(__file__).resolve().parents[2]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def through_relay(
    rtt_ms: float, rate_mbit: float = 0
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to an echo server through a relay; everything closed afterwards."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    relay = await serve(0, echo.sockets[0].getsockname()[1], rtt_ms, rate_mbit)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.sockets[0].getsockname()[1])
    try:
        yield reader, writer
    finally:
        writer.close()
        relay.close()
        echo.close()
        await relay.wait_closed()
        await echo.wait_closed()


@pytest.mark.parametrize("rtt_ms", [20, 100])
async def test_the_relay_adds_the_round_trip_time(rtt_ms: float) -> None:
    async with through_relay(rtt_ms) as (reader, writer):
        times = []
        for _ in range(5):
            start = time.monotonic()
            writer.write(b"x")
            await writer.drain()
            await reader.readexactly(1)
            times.append((time.monotonic() - start) * 1000)
        assert min(times) >= rtt_ms * 0.98, times  # never faster than the link
        assert sorted(times)[2] < rtt_ms + 25, times  # and not much slower (median)


async def test_the_relay_caps_bandwidth() -> None:
    data = b"y" * 2_500_000  # 0.5 s at 40 Mbit/s each way (they overlap)
    async with through_relay(2, rate_mbit=40) as (reader, writer):
        start = time.monotonic()
        writer.write(data)
        await asyncio.gather(writer.drain(), reader.readexactly(len(data)))
        assert time.monotonic() - start >= 0.5


@pytest.mark.timeout(300)
def test_the_wan_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "wan.json"
    r = subprocess.run([sys.executable, "-m", "bench.wan", "--size", "2MiB", "--rtt", "20",
                        "--reps", "1", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| sftpd | xfer -j 4 | get |" in r.stdout
    assert len(out.read_text()) > 100
