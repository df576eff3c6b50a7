"""Pacers: space calls out to at most `rate` per second in this process, without blocking."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Grants one call every 1/rate seconds; callers beyond that wait their turn."""

    rate: float
    _next_slot: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _calls: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> None:
        """Return when this caller may make its call."""
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Held around one call: calls go one at a time, each 1/rate after the answer to the one
        before. An answer comes after its call reached the upstream, so the upstream sees the
        calls at least that far apart however late the one before reached it (spacing the
        grants alone, a call held up on its way lands closer to the next one)."""
        async with self._calls:
            await self.wait()
            try:
                yield
            finally:
                self.hold_off(1.0 / self.rate)

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
        await self._pacer(key).wait()

    def call(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held around one call under `key`: one at a time, spaced from the last one's answer."""
        return self._pacer(key).call()

    def _pacer(self, key: str) -> Pacer:
        pacer = self.pacers.get(key)
        if pacer is None:
            pacer = self.pacers[key] = Pacer(self.rate_of(key), _next_slot=self._not_before)
        pacer.rate = self.rate_of(key)
        return pacer

    def hold_off(self, seconds: float) -> None:
        """Grant no call under any key sooner than `seconds` from now."""
        self._not_before = time.monotonic() + seconds
        for pacer in self.pacers.values():
            pacer.hold_off(seconds)

    async def drain(self) -> None:
        """Return once every key's next slot has come."""
        await asyncio.gather(*(pacer.drain() for pacer in self.pacers.values()))
