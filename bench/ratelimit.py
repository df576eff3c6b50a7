"""Why the gateway counts rates with `limits.aio` and not slowapi: slowapi calls the synchronous
Redis storage inside the event loop, so every request stalls the loop for a Redis round trip.

Two in-process ASGI apps, one endpoint each, the same moving-window limit in the same Redis:
slowapi's decorator (the baseline) and the gateway's `RateLimiter`. A heartbeat task measures how
late the event loop wakes it while the load runs.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request
from slowapi import Limiter

from app.limits.rates import RateLimiter
from bench.load import LoadResult, drive
from tests.e2e.processes import ROOT, free_port

LIMIT = "1000000/minute"


def slowapi_app(redis_url: str) -> FastAPI:
    """The baseline: slowapi with its Redis storage, keyed by the bearer key."""
    limiter = Limiter(
        key_func=lambda request: request.headers["authorization"],
        storage_uri=redis_url,
        strategy="moving-window",
        key_prefix=f"bench-slowapi-{uuid.uuid4().hex}",
    )
    app = FastAPI()
    app.state.limiter = limiter

    @app.get("/hit")
    @limiter.limit(LIMIT)
    async def hit(request: Request) -> dict[str, bool]:
        return {"ok": True}

    return app


def gateway_app(redis_url: str) -> FastAPI:
    """The gateway's limiter: `limits.aio` moving window over async Redis."""
    limiter = RateLimiter(redis_url=redis_url, key_prefix=f"bench-gw-{uuid.uuid4().hex}")
    app = FastAPI()

    async def counted(request: Request) -> None:
        decision = await limiter.hit(LIMIT, "read", request.headers["authorization"])
        assert decision.allowed

    @app.get("/hit", dependencies=[Depends(counted)])
    async def hit() -> dict[str, bool]:
        return {"ok": True}

    return app


async def _heartbeat(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 1 ms at a time and record how late each wake-up is."""
    while not stop.is_set():
        planned = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - planned)


async def _load(app: FastAPI, *, total: int, concurrency: int) -> tuple[LoadResult, float]:
    """Run the load in-process; the result and the worst event-loop lag in ms."""
    lags: list[float] = []
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(_heartbeat(lags, stop))
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {uuid.uuid4().hex}"}
    result = await drive(
        "http://bench",
        lambda client, _i: client.get("/hit", headers=headers),
        total=total,
        concurrency=concurrency,
        transport=transport,
    )
    stop.set()
    await heartbeat
    return result, max(lags) * 1000


async def _compare(redis_url: str, *, total: int, concurrency: int) -> dict[str, Any]:
    runs = {}
    for name, build in (
        ("slowapi (sync redis)", slowapi_app),
        ("gateway (limits.aio)", gateway_app),
    ):
        app = build(redis_url)
        await _load(app, total=concurrency * 4, concurrency=concurrency)  # warm up
        runs[name] = await _load(app, total=total, concurrency=concurrency)
    (base, base_lag), (ours, our_lag) = runs.values()
    return {
        "rows": [
            {
                "limiter": name,
                "rps": round(result.per_second),
                "p50_ms": round(result.p50_ms, 2),
                "p99_ms": round(result.p99_ms, 2),
                "max_loop_lag_ms": round(lag, 2),
                "errors": result.errors,
            }
            for name, (result, lag) in runs.items()
        ],
        "rps_ratio_gateway_vs_slowapi": round(ours.per_second / base.per_second, 2),
        "p99_ratio_gateway_vs_slowapi": round(ours.p99_ms / base.p99_ms, 2),
        "loop_lag_ratio_gateway_vs_slowapi": round(our_lag / base_lag, 3),
    }


@contextmanager
def delayed(redis_port: int, delay_ms: float) -> Iterator[int]:
    """A delay proxy in front of Redis; yields the port to use instead."""
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.delay_proxy", str(port), str(redis_port), str(delay_ms)],
        cwd=ROOT,
    )
    try:
        for _ in range(100):
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield port
    finally:
        proxy.terminate()
        proxy.wait()


async def run_ratelimit(
    redis_host_port: int, *, delay_ms: float, total: int, concurrency: int
) -> dict[str, Any]:
    """Both limiters on the local Redis, and on the same Redis `delay_ms` away each way."""
    report = {
        "local": await _compare(
            f"redis://127.0.0.1:{redis_host_port}/0", total=total, concurrency=concurrency
        )
    }
    with delayed(redis_host_port, delay_ms) as port:
        # Fewer requests: the synchronous baseline is bounded by one round trip at a time.
        report[f"+{delay_ms:g} ms each way"] = await _compare(
            f"redis://127.0.0.1:{port}/0", total=max(200, total // 4), concurrency=concurrency
        )
    return report
