"""Round trips per request and the latency the gateway adds at a steady 100 requests a second.

Round trips are counted on the wire: the gateway reaches PostgreSQL and Redis through counting
TCP forwarders, and every chunk a client sends that its server then answers is one round trip.
Requests go one at a time, so each count belongs to one request kind. Added latency is the
gateway's median at 100 requests a second (open loop: a request every 10 ms, whatever the
answers do) minus the median of the same call made straight to the simulator, sent at the same
rate in between (5 ms after each gateway request), so that both sides meet the same moment of
a machine whose speed drifts from one second to the next; the figure is the median of a few
such rounds, with their range.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.delay_proxy import forward
from bench.stack import CREATE_BODY, MASTER_KEY, TASKS, BenchStack, bench_stack
from tests.e2e.processes import free_port

SEQUENTIAL = 200
RATE = 100
RATE_SECONDS = 10
ROUNDS = 3


@dataclass
class CountingForwarder:
    """A TCP forwarder on 127.0.0.1, in a thread of its own (the benchmark's own calls block),
    that counts what its clients send."""

    target_port: int
    port: int = field(default_factory=free_port)
    sends: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            ready.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        ready.wait(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            forward(reader, upstream_w, self._count), forward(upstream_r, writer, _nothing)
        )

    async def _count(self) -> None:
        self.sends += 1

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _nothing() -> None:
    return None


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = f"{parts.username + '@' if parts.username else ''}127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=host))


async def run_trips(database_url: str, workdir: Path, *, redis_port: int) -> dict[str, Any]:
    """Round trips per request kind, then added p50 latency at 100 requests a second (on a
    gateway of its own reaching PostgreSQL and Redis directly: the forwarders, threads of this
    process, would add their own hops and compete with its client for the interpreter)."""
    postgres = CountingForwarder(urlsplit(database_url).port or 5432)
    redis = CountingForwarder(redis_port)
    postgres.start()
    redis.start()
    forwarded = _via(database_url, postgres.port)
    try:
        with bench_stack(
            forwarded,
            workdir,
            GATEWAY_REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
            GATEWAY_REFRESH_STALE_SECONDS="0",  # the finished task is seen finished at once
        ) as stack:  # the gateway starts while this loop waits: the forwarders have their own
            async with _client(stack) as gateway:
                trips = await _count_trips(gateway, postgres, redis)
    finally:
        postgres.stop()
        redis.stop()
    with bench_stack(
        database_url,
        workdir,
        GATEWAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        GATEWAY_REFRESH_STALE_SECONDS="0",
    ) as stack:
        async with _client(stack) as gateway:
            latency = await _added_latency(gateway, stack.simulator.url)
    return {"round_trips": trips, "added_latency": latency}


def _client(stack: BenchStack) -> httpx.AsyncClient:
    bearer = {"Authorization": stack.auth_header.split(": ", 1)[1]}
    return httpx.AsyncClient(base_url=stack.gateway.url, headers=bearer)


async def _count_trips(
    gateway: httpx.AsyncClient, postgres: CountingForwarder, redis: CountingForwarder
) -> list[dict[str, Any]]:
    finished = (await gateway.post(TASKS, json=CREATE_BODY)).json()["id"]
    await gateway.get(f"{TASKS}/{finished}")
    kinds = {
        "finished-task retrieve": lambda: gateway.get(f"{TASKS}/{finished}"),
        "list, page of 10": lambda: gateway.get(TASKS, params={"page_size": 10}),
        "create": lambda: gateway.post(TASKS, json=CREATE_BODY),
    }
    rows = []
    for name, send in kinds.items():
        await send()  # warm: prepared statements, the price and budget caches
        pg, rd = postgres.sends, redis.sends
        for _ in range(SEQUENTIAL):
            (await send()).raise_for_status()
        rows.append(
            {
                "request": name,
                "postgres_round_trips": round((postgres.sends - pg) / SEQUENTIAL, 2),
                "redis_round_trips": round((redis.sends - rd) / SEQUENTIAL, 2),
            }
        )
    return rows


async def _added_latency(gateway: httpx.AsyncClient, simulator_url: str) -> list[dict[str, Any]]:
    master = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx.AsyncClient(base_url=simulator_url, headers=master) as direct:
        finished = (await gateway.post(TASKS, json=CREATE_BODY)).json()["id"]
        upstream = (await direct.post(TASKS, json=CREATE_BODY)).json()["id"]
        pairs = {
            "retrieve": (
                lambda: gateway.get(f"{TASKS}/{finished}"),
                lambda: direct.get(f"{TASKS}/{upstream}"),
            ),
            "create": (
                lambda: gateway.post(TASKS, json=CREATE_BODY),
                lambda: direct.post(TASKS, json=CREATE_BODY),
            ),
        }
        rows = []
        for name, (through, straight) in pairs.items():
            rounds = [await _steady(through, straight) for _ in range(ROUNDS)]
            added = sorted(gateway_ms - direct_ms for gateway_ms, direct_ms in rounds)
            rows.append(
                {
                    "request": name,
                    "gateway_p50_ms": round(statistics.median(g for g, _ in rounds), 2),
                    "direct_p50_ms": round(statistics.median(d for _, d in rounds), 2),
                    "added_p50_ms": round(statistics.median(added), 2),
                    "rounds": " ".join(f"{ms:+.2f}" for ms in added),
                }
            )
    return rows


async def _steady(through: Any, straight: Any) -> tuple[float, float]:
    """The median latencies of `through` and `straight`, each sent every 1/RATE seconds for
    RATE_SECONDS, `straight` half a period after `through`."""
    latencies: tuple[list[float], list[float]] = ([], [])
    codes: Counter[int] = Counter()

    async def one(send: Any, into: list[float]) -> None:
        began = time.perf_counter()
        answer = await send()
        into.append(time.perf_counter() - began)
        codes[answer.status_code] += 1

    pending = []
    began = time.perf_counter()
    for n in range(2 * RATE * RATE_SECONDS):
        await asyncio.sleep(max(0.0, began + n / (2 * RATE) - time.perf_counter()))
        side = n % 2
        pending.append(asyncio.create_task(one((through, straight)[side], latencies[side])))
    await asyncio.gather(*pending)
    if set(codes) != {200}:
        raise SystemExit(f"steady load answered {dict(codes)}")
    return statistics.median(latencies[0]) * 1000, statistics.median(latencies[1]) * 1000
