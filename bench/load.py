"""A closed-loop HTTP load generator: N workers, each sending its next request on a reply."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class LoadResult:
    """Throughput and latency of one load run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds


async def drive(
    base_url: str,
    send: Send,
    *,
    total: int,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadResult:
    """Send `total` requests from `concurrency` workers; any non-2xx answer counts as an error."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=30, transport=transport
    ) as client:

        async def worker() -> None:
            nonlocal errors
            for index in counter:
                began = time.perf_counter()
                response = await send(client, index)
                latencies.append(time.perf_counter() - began)
                errors += not response.is_success

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return LoadResult(
        requests=total,
        seconds=seconds,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
        errors=errors,
    )
