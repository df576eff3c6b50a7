"""The upstream client's own cost: httpx's default transport (the baseline) against the
aiohttp-backed one the gateway uses (`httpx-aiohttp`), both sending the gateway's calls to a
simulator process.

The figure that matters is CPU time per call in the calling process: the gateway spends it on
every create and every refresh.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from app.upstream.client import create_http_client
from app.upstream.transport import upstream_transport
from bench.load import drive
from bench.stack import CREATE_BODY, MASTER_KEY, TASKS, instant_simulator

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def _measure(
    url: str,
    call: Call,
    transport: httpx.AsyncBaseTransport | None,
    *,
    total: int,
    concurrency: int,
) -> dict[str, float]:
    client = create_http_client(
        base_url=url,
        api_key=MASTER_KEY,
        timeout=30,
        connect_timeout=5,
        max_connections=concurrency,
        transport=transport,
    )
    async with client:
        await drive(
            url, lambda _c, _i: call(client), total=concurrency * 4, concurrency=concurrency
        )
        cpu = time.process_time()
        result = await drive(url, lambda _c, _i: call(client), total=total, concurrency=concurrency)
        cpu = time.process_time() - cpu
    return {
        "rps": round(result.per_second),
        "cpu_ms_per_call": round(1000 * cpu / total, 3),
        "p50_ms": round(result.p50_ms, 2),
        "errors": result.errors,
    }


async def run_upstream_client(workdir: Path, *, total: int, concurrency: int) -> dict[str, Any]:
    """Both transports on create and retrieve calls against one simulator process."""
    simulator = instant_simulator(workdir / "simulator-client.log")
    base = f"{simulator.url}/api/v3"
    try:
        created = httpx.post(
            base + TASKS.removeprefix("/api/v3"),
            json=CREATE_BODY,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        task_path = f"/contents/generations/tasks/{created.json()['id']}"
        pool = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        calls: dict[str, Call] = {
            "retrieve": lambda c: c.get(task_path),
            "create": lambda c: c.post("/contents/generations/tasks", json=CREATE_BODY),
        }
        transports: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
            "httpx": lambda: httpx.AsyncHTTPTransport(limits=pool),
            "aiohttp": lambda: upstream_transport(max_connections=concurrency),
        }
        rows = []
        for name, call in calls.items():
            runs = {}
            for transport, make in transports.items():
                if name == "create":  # the simulator's create scans its tasks: same start;
                    # it comes last, as this also removes the task `retrieve` reads
                    httpx.post(f"{simulator.url}/_sim/reset")
                runs[transport] = await _measure(
                    base, call, make(), total=total, concurrency=concurrency
                )
            httpx_run, aiohttp_run = runs["httpx"], runs["aiohttp"]
            rows.append(
                {
                    "call": name,
                    "httpx_cpu_ms": httpx_run["cpu_ms_per_call"],
                    "aiohttp_cpu_ms": aiohttp_run["cpu_ms_per_call"],
                    "cpu_ratio": round(
                        aiohttp_run["cpu_ms_per_call"] / httpx_run["cpu_ms_per_call"], 2
                    ),
                    "httpx_rps": httpx_run["rps"],
                    "aiohttp_rps": aiohttp_run["rps"],
                    "rps_ratio": round(aiohttp_run["rps"] / httpx_run["rps"], 2),
                    "errors": httpx_run["errors"] + aiohttp_run["errors"],
                }
            )
    finally:
        simulator.stop()
    return {"rows": rows}
