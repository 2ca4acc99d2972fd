"""Per-user limits: where a user may log in from, until when, and how fast bytes may move.

Bandwidth is paced, never dropped: a request waits for its turn so that the bytes
of all a user's sessions in this process together keep to the rate. A waiting
request holds the client's pipeline, so the client slows down instead of failing.
Each server process paces on its own (see docs/access.md for workers and nodes).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Bytes a pacer lets through ahead of the rate (smooths timer granularity).
BURST_SECONDS = 0.05


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDR networks (a bare address is a /32 or /128); ValueError names a bad one."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {item.strip()!r}") from None
    return tuple(out)


def address_allowed(addr: str, networks: tuple[Network, ...]) -> bool:
    """True when no networks are set, or ``addr`` is in one (IPv4-mapped IPv6 counts as IPv4)."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def expired(expires_at: float | None, now: float | None = None) -> bool:
    return expires_at is not None and (time.time() if now is None else now) >= expires_at


@dataclass
class Pacer:
    """A rate in bytes per second (0: unlimited), shared by every caller of :meth:`take`."""

    rate: int = 0
    _next: float = 0.0  # loop time at which the rate has caught up with what was let through

    async def take(self, n: int) -> None:
        """Wait until ``n`` more bytes fit under the rate."""
        if self.rate <= 0 or n <= 0:
            return
        now = asyncio.get_running_loop().time()
        self._next = max(self._next, now) + n / self.rate
        delay = self._next - now - BURST_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)
