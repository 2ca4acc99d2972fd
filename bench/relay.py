"""A TCP relay on 127.0.0.1 that behaves like a long link: each direction is delayed by half
the round-trip time and optionally capped in bandwidth. The kernel here has no netem.

``python -m bench.relay LISTEN_PORT TARGET_PORT RTT_MS [RATE_MBIT]`` prints "ready".

What it models: the delay every byte takes, so that SSH channel windows and SFTP request
pipelining (the limits of a long link) show. What it does not: loss, and TCP's own window
(the kernel acknowledges at the relay at once); its buffer per direction is bounded
(``BUFFER``) so a fast sender is held back once a bandwidth-delay product is in flight.
Only 127.0.0.1 is ever listened on or connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque

HOST = "127.0.0.1"
BUFFER = 64 * 1024 * 1024  # bytes in flight per direction before reading stops
CHUNK = 256 * 1024
LIFETIME = 3600.0  # seconds a relay started from the command line lives


class Link:
    """One direction: bytes read at t are written at t + delay, at most ``rate`` bytes/s."""

    def __init__(self, delay: float, rate: float) -> None:
        self.delay = delay
        self.rate = rate  # bytes per second; 0: unlimited
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.more = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closed = False

    async def pump_in(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        next_free = loop.time()
        while True:
            await self.room.wait()
            data = await reader.read(CHUNK)
            if not data:
                break
            now = loop.time()
            if self.rate:  # the bottleneck: serialise at the rate, then the delay
                next_free = max(next_free, now) + len(data) / self.rate
                due = next_free + self.delay
            else:
                due = now + self.delay
            self.queue.append((due, data))
            self.queued += len(data)
            if self.queued >= BUFFER:
                self.room.clear()
            self.more.set()
        self.closed = True
        self.more.set()

    async def pump_out(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                if self.closed:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                self.more.clear()
                await self.more.wait()
            due, data = self.queue.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            self.queued -= len(data)
            if self.queued < BUFFER:
                self.room.set()


async def _pair(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: int, delay: float,
    rate: float,
) -> None:  # fmt: skip
    try:
        server_r, server_w = await asyncio.open_connection(HOST, target)
    except OSError:
        client_w.close()
        return
    up, down = Link(delay, rate), Link(delay, rate)
    tasks = [
        asyncio.create_task(up.pump_in(client_r)), asyncio.create_task(up.pump_out(server_w)),
        asyncio.create_task(down.pump_in(server_r)), asyncio.create_task(down.pump_out(client_w)),
    ]  # fmt: skip
    try:
        await asyncio.gather(*tasks)
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        for w in (client_w, server_w):
            w.close()


async def serve(listen: int, target: int, rtt_ms: float, rate_mbit: float = 0) -> asyncio.Server:
    """Start relaying ``listen`` -> ``target`` on 127.0.0.1; close the returned server to stop."""
    delay = rtt_ms / 2000
    rate = rate_mbit * 1_000_000 / 8

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _pair(r, w, target, delay, rate)

    return await asyncio.start_server(accept, HOST, listen)


async def _main(argv: list[str]) -> None:
    listen, target, rtt = int(argv[0]), int(argv[1]), float(argv[2])
    rate = float(argv[3]) if len(argv) > 3 else 0.0
    server = await serve(listen, target, rtt, rate)
    print("ready", flush=True)
    async with server:
        await asyncio.sleep(LIFETIME)  # bounded: a forgotten relay goes away


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
