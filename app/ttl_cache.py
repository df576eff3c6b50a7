"""A small in-process cache whose entries live a fixed, short time (answers that may be that
stale everywhere, e.g. finished tasks, whose only change is a deletion on some replica)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class TtlCache(Generic[V]):
    """Entries expire `ttl_seconds` after they are put; a TTL of 0 keeps nothing."""

    ttl_seconds: float
    max_entries: int = 10_000
    _entries: dict[str, tuple[float, V]] = field(default_factory=dict)

    def get(self, key: str) -> V | None:
        """The value, if put less than `ttl_seconds` ago."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, value: V) -> None:
        """Remember `value` for `ttl_seconds`."""
        if self.ttl_seconds <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_seconds, value)

    def drop(self, key: str) -> None:
        """Forget `key` (this process changed it)."""
        self._entries.pop(key, None)
