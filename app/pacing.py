"""Pacers: space calls out to at most `rate` per second in this process, without blocking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


@dataclass
class Pacers:
    """One pacer per key (an upstream account), each at the rate `rate_of` gives for it now."""

    rate_of: Callable[[str], float]
    pacers: dict[str, Pacer] = field(default_factory=dict)
    _not_before: float = 0.0

    async def wait(self, key: str) -> None:
        """Return when a call under `key` may be made."""
        pacer = self.pacers.get(key)
        if pacer is None:
            pacer = self.pacers[key] = Pacer(self.rate_of(key), _next_slot=self._not_before)
        pacer.rate = self.rate_of(key)
        await pacer.wait()

    def hold_off(self, seconds: float) -> None:
        """Grant no call under any key sooner than `seconds` from now."""
        self._not_before = time.monotonic() + seconds
        for pacer in self.pacers.values():
            pacer.hold_off(seconds)

    async def drain(self) -> None:
        """Return once every key's next slot has come."""
        await asyncio.gather(*(pacer.drain() for pacer in self.pacers.values()))
