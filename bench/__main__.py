"""`python -m bench` (or `make bench`): run every benchmark and print its ratios.

Each figure comes with its baseline from the same run: the simulator answering directly for the
gateway's request path, a bare FastAPI app answering from memory for CPU per request (wrk),
httpx's default transport for the upstream client, slowapi for the rate limiter, the process's
own start for its memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.console import run_console
from bench.proxy import run_proxy
from bench.ratelimit import run_ratelimit
from bench.trips import ROUNDS, run_trips
from bench.upstream_client import run_upstream_client
from bench.wrk import run_wrk
from tests.scratch_db import scratch_postgres

REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Rows as an aligned text table."""
    print(f"\n{title}")
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


async def main(*, total: int, concurrency: int, output: Path | None) -> None:
    """Run the benchmarks, print them, and optionally write them as JSON."""
    report: dict[str, Any] = {"total": total, "concurrency": concurrency, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="sgw-bench-") as tmp:
        sqlite_dir = Path(tmp, "sqlite")
        sqlite_dir.mkdir()
        sqlite_url = f"sqlite+aiosqlite:///{sqlite_dir}/gateway.db"
        report["proxy_sqlite"] = await run_proxy(
            sqlite_url, sqlite_dir, total=total, concurrency=concurrency
        )
        async with scratch_postgres(f"sgw_bench_{os.getpid()}") as pg_url:
            pg_dir = Path(tmp, "postgres")
            pg_dir.mkdir()
            report["proxy_postgres"] = await run_proxy(
                pg_url, pg_dir, total=total, concurrency=concurrency
            )
            report["wrk"] = await asyncio.to_thread(
                run_wrk, pg_url, pg_dir, redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0"
            )
            report["trips"] = await run_trips(pg_url, pg_dir, redis_port=REDIS_PORT)
        async with scratch_postgres(f"sgw_bench_console_{os.getpid()}") as console_url:
            console_dir = Path(tmp, "console")
            console_dir.mkdir()
            report["console"] = await run_console(console_url, console_dir)
        report["upstream_client"] = await run_upstream_client(
            Path(tmp), total=total, concurrency=concurrency
        )
    report["ratelimit"] = await run_ratelimit(
        REDIS_PORT, delay_ms=1, total=total, concurrency=concurrency
    )

    for name in ("proxy_sqlite", "proxy_postgres"):
        part = report[name]
        print_table(f"Gateway vs simulator direct ({name.split('_')[1]})", part["rows"])
        print(
            f"gateway memory: {part['gateway_rss_mib_start']} MiB at start, "
            f"{part['gateway_rss_mib_end']} MiB after {part['requests_served']} requests "
            f"(x{part['rss_growth_ratio']})"
        )
    wrk = report["wrk"]
    print_table(
        "CPU per request under wrk (PostgreSQL, Redis), beside the floor (a bare FastAPI app "
        "answering from memory) or the pass-through (a bare FastAPI app relaying upstream)",
        wrk["rows"],
    )
    print(
        f"creates/s with --workers 2: {wrk['creates_per_second_two_workers']} "
        f"(x{wrk['two_workers_vs_one']} one worker), CPU per create "
        f"{wrk['two_workers_cpu_ms_per_create']} ms (both workers) and PostgreSQL "
        f"{wrk['two_workers_postgres_cpu_ms_per_create']} ms; gateway memory "
        f"{wrk['gateway_rss_mib_start']}"
        f" -> {wrk['gateway_rss_mib_end']} MiB over {wrk['gateway_requests_served']} requests "
        f"(x{wrk['rss_growth_ratio']})"
    )
    print_table(
        "Round trips per request (one at a time, counted on the wire)",
        report["trips"]["round_trips"],
    )
    print_table(
        "Added p50 latency at 100 requests/s (gateway minus the simulator direct, sent in "
        f"between; median of {ROUNDS} rounds)",
        report["trips"]["added_latency"],
    )
    print_table(
        f"Console pages with {report['console']['tasks']:,} tasks in PostgreSQL (median of 20, "
        "beside /healthz)",
        report["console"]["rows"],
    )
    print_table(
        "Upstream client: httpx transport (baseline) vs httpx-aiohttp",
        report["upstream_client"]["rows"],
    )
    for where, limiter in report["ratelimit"].items():
        print_table(f"Rate limiter, Redis {where}: slowapi (baseline) vs gateway", limiter["rows"])
        print(
            f"gateway/slowapi: throughput x{limiter['rps_ratio_gateway_vs_slowapi']}, "
            f"p99 x{limiter['p99_ratio_gateway_vs_slowapi']}, "
            f"worst loop stall x{limiter['loop_lag_ratio_gateway_vs_slowapi']}"
        )
    failed = [row for part in _tables(report) for row in part if row.get("errors")]
    if failed:
        raise SystemExit(f"requests failed during the benchmark: {failed}")
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {output}")


def _tables(report: dict[str, Any]) -> list[list[dict[str, Any]]]:
    tables = [
        report[name]["rows"] for name in ("proxy_sqlite", "proxy_postgres", "upstream_client")
    ]
    return [
        *tables,
        report["wrk"]["rows"],
        *(part["rows"] for part in report["ratelimit"].values()),
    ]


def cli() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per scenario and side")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    asyncio.run(main(total=args.requests, concurrency=args.concurrency, output=args.json))


if __name__ == "__main__":
    cli()
