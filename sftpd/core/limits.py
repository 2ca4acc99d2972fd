"""Per-user limits: where a user may log in from, until when, and how fast bytes may move.

Bandwidth is paced, never dropped: a request waits for its turn so that the bytes
of all a user's sessions together keep to the rate. A waiting request holds the
client's pipeline, so the client slows down instead of failing. The worker processes
of one node share their pace through :class:`SharedRates`; each node paces on its own
(a user on two nodes may get the rate on each: docs/access.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import mmap
import multiprocessing
import struct
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


def address_in(addr: str, items: Iterable[str]) -> bool:
    """:func:`address_allowed` for networks as stored (empty: anywhere); networks that do not
    parse (stored by hand) allow nowhere: refuse rather than guess."""
    try:
        return address_allowed(addr, parse_networks(items))
    except ValueError:
        return False


def expired(expires_at: float | None, now: float | None = None) -> bool:
    return expires_at is not None and (time.time() if now is None else now) >= expires_at


class SharedRates:
    """When each paced account's rate has caught up, in memory the worker processes of a node
    share: an anonymous shared mapping and a lock made before the workers fork.

    A slot is (key, time): a 64-bit digest of the account and the monotonic time (one clock
    for every process of the machine) at which what was let through has been paid for. A
    slot whose time has passed is as good as empty and may be taken by another key; a full
    probe window falls back to pacing in this process alone (never refusing bytes)."""

    SLOTS = 4096
    PROBE = 32
    _SLOT = struct.Struct("=Qd")

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.SLOTS * self._SLOT.size)  # MAP_SHARED: kept by fork
        self._lock = multiprocessing.get_context("fork").Lock()

    @staticmethod
    def key(account: str) -> int:
        return int.from_bytes(hashlib.blake2b(account.encode(), digest_size=8).digest()) or 1

    def book(self, key: int, n: int, rate: int, now: float) -> float | None:
        """Let ``n`` bytes through at ``rate`` for ``key``; the time they are paid for, or
        None when no slot is free (the caller paces alone)."""
        with self._lock:  # held for a few microseconds, never across an await
            found, free = None, None
            for i in range(self.PROBE):
                offset = ((key + i) % self.SLOTS) * self._SLOT.size
                k, until = self._SLOT.unpack_from(self._map, offset)
                if k == key:
                    found = (offset, until)
                    break
                if free is None and (k == 0 or until < now):
                    free = (offset, 0.0)
            slot = found or free
            if slot is None:
                return None
            offset, until = slot
            until = max(until, now) + n / rate
            self._SLOT.pack_into(self._map, offset, key, until)
            return until


@dataclass
class Pacer:
    """A rate in bytes per second (0: unlimited), shared by every caller of :meth:`take`, and
    with ``shared``, by every process of the node pacing the same ``account``."""

    rate: int = 0
    shared: SharedRates | None = None
    account: str = ""
    _next: float = 0.0  # loop time at which the rate has caught up with what was let through

    async def take(self, n: int) -> None:
        """Wait until ``n`` more bytes fit under the rate."""
        if self.rate <= 0 or n <= 0:
            return
        now = time.monotonic()  # the loop's clock, and the same in every process
        until = None
        if self.shared is not None:
            until = self.shared.book(SharedRates.key(self.account), n, self.rate, now)
        if until is None:
            until = self._next = max(self._next, now) + n / self.rate
        delay = until - now - BURST_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)
