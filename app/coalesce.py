"""Coalesces concurrent identical work: one run per key at a time, its result shared."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Coalescer:
    """Runs at most one job per key at a time; callers arriving meanwhile await the same job."""

    _running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    async def run(self, key: str, job: Callable[[], Awaitable[Any]]) -> Any:
        """Run `job` for `key`, or join the run already under way.

        The job is shielded: a caller that goes away does not cancel it for the others.
        """
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(job())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)
