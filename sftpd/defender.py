"""Brute-force defence: addresses that keep failing to log in are slowed, then blocked.

State lives in the store, so every worker process (and, with a shared database, every
node) sees the same counts and blocks. Each failed attempt (a wrong password, an unknown
user, a connection that ended having offered only keys it could not use) counts one; after
``defender_max_failures`` within ``defender_window`` seconds the address is refused for
``defender_ban_time`` seconds. From half the threshold on, each failure is answered a
little later, which costs an attacker time without hurting a user who mistyped once.
The block is logged once, when it starts; refused connections are logged at debug level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sftpd.config import Settings
from sftpd.logs import audit
from sftpd.store import Store, Strike

log = logging.getLogger("sftpd.defender")
MAX_DELAY = 2.0
DELAY_STEP = 0.25


class Defender:
    def __init__(
        self, store: Store, settings: Settings, on_block: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.on_block = on_block
        self.threshold = settings.defender_max_failures
        self.window = settings.defender_window
        self.ban_time = settings.defender_ban_time

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    async def failure(self, addr: str, user: str) -> Strike:
        """Count one failure from ``addr``; log the block if this one started it."""
        if not self.enabled:
            return Strike(0, 0.0, False)
        strike = await self.store.record_failure(
            addr, time.time(), self.window, self.threshold, self.ban_time
        )
        if strike.newly_banned:
            self.on_block()
            audit(
                "address blocked",
                event="defender",
                level=logging.WARNING,
                user=user[:64],
                addr=addr,
                outcome="blocked",
                reason=f"{strike.failures} login failures in {self.window:g} s",
                until=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(strike.banned_until)),
            )
        return strike

    def delay(self, strike: Strike) -> float:
        """Seconds to hold back the answer to a failed attempt."""
        over = strike.failures - self.threshold // 2
        return 0.0 if not self.enabled or over <= 0 else min(MAX_DELAY, DELAY_STEP * over)
