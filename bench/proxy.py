"""What the gateway costs per request: each endpoint through the gateway against the same call
made straight to the simulator (the baseline), in one run, with real processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.load import LoadResult, Send, drive
from bench.stack import CREATE_BODY, MASTER_KEY, TASKS, BenchStack, bench_stack, rss_kib


@dataclass(frozen=True)
class Comparison:
    """One endpoint: the gateway's run and the simulator's run."""

    name: str
    gateway: LoadResult
    baseline: LoadResult

    def row(self) -> dict[str, Any]:
        """The figures as a flat, printable row."""
        return {
            "scenario": self.name,
            "gateway_rps": round(self.gateway.per_second),
            "direct_rps": round(self.baseline.per_second),
            "rps_ratio": round(self.gateway.per_second / self.baseline.per_second, 2),
            "gateway_p50_ms": round(self.gateway.p50_ms, 1),
            "direct_p50_ms": round(self.baseline.p50_ms, 1),
            "p50_ratio": round(self.gateway.p50_ms / self.baseline.p50_ms, 2),
            "gateway_p99_ms": round(self.gateway.p99_ms, 1),
            "errors": self.gateway.errors + self.baseline.errors,
        }


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _get(path: str, key: str, **params: Any) -> Send:
    headers = _bearer(key)
    return lambda client, _i: client.get(path, headers=headers, params=params or None)


def _post(path: str, key: str) -> Send:
    headers = _bearer(key)
    return lambda client, _i: client.post(path, headers=headers, json=CREATE_BODY)


def _create(base_url: str, key: str) -> str:
    answer = httpx.post(base_url + TASKS, headers=_bearer(key), json=CREATE_BODY)
    answer.raise_for_status()
    return str(answer.json()["id"])


async def _compare(
    name: str,
    stack: BenchStack,
    gateway: Send,
    direct: Send,
    *,
    total: int,
    concurrency: int,
    fresh_upstream: bool = False,
) -> Comparison:
    """Warm both sides up, then measure each; `fresh_upstream` empties the simulator first."""
    runs = []
    for base_url, send in ((stack.gateway.url, gateway), (stack.simulator.url, direct)):
        if fresh_upstream:  # the simulator's create scans its tasks: same start for both sides
            httpx.post(f"{stack.simulator.url}/_sim/reset").raise_for_status()
        await drive(base_url, send, total=concurrency * 4, concurrency=concurrency)
        runs.append(await drive(base_url, send, total=total, concurrency=concurrency))
    return Comparison(name=name, gateway=runs[0], baseline=runs[1])


async def run_proxy(
    database_url: str, workdir: Path, *, total: int, concurrency: int
) -> dict[str, Any]:
    """All endpoint comparisons on one database, plus the gateway's memory before and after."""
    with bench_stack(database_url, workdir, GATEWAY_REFRESH_STALE_SECONDS="0") as stack:
        gw, sim, key = stack.gateway.url, stack.simulator.url, stack.key
        rss_start = rss_kib(stack.gateway_pid)
        args = {"total": total, "concurrency": concurrency}
        # Tasks finish at once: ten on each side, the first then served from the database.
        done_id, *_ = [_create(gw, key) for _ in range(10)]
        done_upstream, *_ = [_create(sim, MASTER_KEY) for _ in range(10)]
        httpx.get(f"{gw}{TASKS}/{done_id}", headers=_bearer(key)).raise_for_status()
        results = [
            await _compare(
                "retrieve, terminal (database)",
                stack,
                _get(f"{TASKS}/{done_id}", key),
                _get(f"{TASKS}/{done_upstream}", MASTER_KEY),
                **args,
            ),
            await _compare(
                "list, page of 10",
                stack,
                _get(TASKS, key, page_size=10),
                _get(TASKS, MASTER_KEY, page_size=10),
                **args,
            ),
            await _compare(
                "create",
                stack,
                _post(TASKS, key),
                _post(TASKS, MASTER_KEY),
                fresh_upstream=True,
                **args,
            ),
        ]
        # From here tasks stay queued, so every gateway retrieve refreshes from upstream.
        httpx.post(f"{sim}/_sim/reset").raise_for_status()
        httpx.patch(f"{sim}/_sim/config", json={"queued_seconds": 3600}).raise_for_status()
        open_id, open_upstream = _create(gw, key), _create(sim, MASTER_KEY)
        results.append(
            await _compare(
                "retrieve, open (refreshed upstream)",
                stack,
                _get(f"{TASKS}/{open_id}", key),
                _get(f"{TASKS}/{open_upstream}", MASTER_KEY),
                **args,
            )
        )
        rss_end = rss_kib(stack.gateway_pid)
    return {
        "rows": [result.row() for result in results],
        "gateway_rss_mib_start": round(rss_start / 1024, 1),
        "gateway_rss_mib_end": round(rss_end / 1024, 1),
        "rss_growth_ratio": round(rss_end / rss_start, 2),
        "requests_served": sum(r.gateway.requests for r in results),
    }
