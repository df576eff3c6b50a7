"""A pacer: spaces calls out to at most `rate` per second in this process, without blocking."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Grants one call every 1/rate seconds; callers beyond that wait their turn."""

    rate: float
    _next_slot: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> None:
        """Return when this caller may make its call."""
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    def hold_off(self, seconds: float) -> None:
        """Grant no call sooner than `seconds` from now (another process's call came last)."""
        self._next_slot = max(self._next_slot, time.monotonic() + seconds)

    async def drain(self) -> None:
        """Return once the slot after the last granted call has come (a clean hand-over)."""
        delay = self._next_slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
