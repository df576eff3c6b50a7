"""CPU per request under wrk: each gateway request kind beside the floor (a bare FastAPI app
answering a task's bytes from memory), on PostgreSQL and Redis, one worker each.

CPU per request (the server process's CPU time / requests) is the figure to compare: it stays
put on a shared machine where throughput does not. wrk comes from Debian (`make bench` installs
it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stack import CREATE_BODY, TASKS, BenchStack, bench_stack
from tests.e2e.processes import clean_env, free_port, start

SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
CONNECTIONS = 32


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, pid: int, *, header: str = "", script: Path | None = None) -> dict[str, Any]:
    """One wrk run against `url`; the figures with the server's CPU per request."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency"]
    if header:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    before = cpu_seconds(pid)
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": round(requests / SECONDS),
        "cpu_ms_per_request": round(1000 * cpu / requests, 3),
        "p50_ms": round(float(p50.group(1)) * scale[p50.group(2)], 2) if p50 else None,
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput."""
    return sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]


def run_wrk(database_url: str, workdir: Path, *, redis_url: str) -> list[dict[str, Any]]:
    """The floor, then each gateway request kind, interleaved over 3 rounds; medians."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    create_script = workdir / "create.lua"
    create_script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps(CREATE_BODY)}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    port = free_port()
    floor = start(
        ["bench.floor:app", "--port", str(port), "--log-level", "warning"],
        env=clean_env(),
        port=port,
        log=workdir / "floor.log",
        health=f"{TASKS}/x",
        module="uvicorn",
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with bench_stack(
            database_url,
            workdir,
            GATEWAY_REDIS_URL=redis_url,
            GATEWAY_REFRESH_STALE_SECONDS="0",
            GATEWAY_UPSTREAM_REFRESH_RATE="1000000/second",
        ) as stack:
            targets = _targets(stack, create_script)
            for _ in range(3):
                runs.setdefault("floor (bare FastAPI, bytes from memory)", []).append(
                    wrk(f"{floor.url}{TASKS}/x", floor.popen.pid)
                )
                for name, (url, script) in targets.items():
                    runs.setdefault(name, []).append(
                        wrk(url, stack.gateway_pid, header=stack.auth_header, script=script)
                    )
    finally:
        floor.stop()
    floor_cpu = median(runs["floor (bare FastAPI, bytes from memory)"])["cpu_ms_per_request"]
    return [
        {
            "request": name,
            **(row := median(rows)),
            "x_floor_cpu": round(row["cpu_ms_per_request"] / floor_cpu, 1),
        }
        for name, rows in runs.items()
    ]


def _targets(stack: BenchStack, create_script: Path) -> dict[str, tuple[str, Path | None]]:
    """A finished task, an open one, the list and the create (the simulator then holds every new
    task queued)."""
    bearer = {"Authorization": stack.auth_header.split(": ", 1)[1]}
    tasks = stack.gateway.url + TASKS
    finished = httpx.post(tasks, json=CREATE_BODY, headers=bearer).json()["id"]
    time.sleep(0.5)
    assert httpx.get(f"{tasks}/{finished}", headers=bearer).json()["status"] == "succeeded"
    # From here on tasks stay queued (a task's state follows the simulator's current timings).
    held = {"queued_seconds": 3600, "max_queued": 10**9}
    httpx.patch(f"{stack.simulator.url}/_sim/config", json=held).raise_for_status()
    opened = httpx.post(tasks, json=CREATE_BODY, headers=bearer).json()["id"]
    return {
        "gateway: finished-task retrieve": (f"{tasks}/{finished}", None),
        "gateway: list, page of 10": (f"{tasks}?page_size=10", None),
        "gateway: open-task retrieve, refreshed upstream": (f"{tasks}/{opened}", None),
        "gateway: create (upstream answers at once)": (tasks, create_script),
    }
