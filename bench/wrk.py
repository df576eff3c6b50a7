"""CPU per request under wrk: the gateway's finished-task retrieve beside the floor (a bare
FastAPI app answering the same bytes), on PostgreSQL and Redis, one worker each.

CPU per request (the server process's CPU time / requests) is the figure to compare: it stays
put on a shared machine where throughput does not. wrk comes from Debian (`make bench` installs
it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stack import CREATE_BODY, TASKS, bench_stack
from tests.e2e.processes import clean_env, free_port, start

SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
CONNECTIONS = 32


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, pid: int, *, header: str = "") -> dict[str, Any]:
    """One wrk run against `url`; the figures with the server's CPU per request."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url]
    if header:
        command[1:1] = ["-H", header]
    before = cpu_seconds(pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
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


def run_wrk(database_url: str, workdir: Path, *, redis_url: str) -> list[dict[str, Any]]:
    """Floor and gateway, interleaved over 3 rounds; the median of each."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    port = free_port()
    floor = start(
        ["bench.floor:app", "--port", str(port), "--log-level", "warning"],
        env=clean_env(),
        port=port,
        log=workdir / "floor.log",
        health=f"{TASKS}/x",
        module="uvicorn",
    )
    rows: dict[str, list[dict[str, Any]]] = {"floor": [], "gateway": []}
    try:
        with bench_stack(database_url, workdir, GATEWAY_REDIS_URL=redis_url) as stack:
            bearer = {"Authorization": f"Bearer {stack.key}"}
            url = stack.gateway.url + TASKS
            url += "/" + httpx.post(url, json=CREATE_BODY, headers=bearer).json()["id"]
            time.sleep(0.5)
            assert httpx.get(url, headers=bearer).json()["status"] == "succeeded"
            auth = f"Authorization: {bearer['Authorization']}"
            for _ in range(3):
                rows["floor"].append(wrk(f"{floor.url}{TASKS}/x", floor.popen.pid))
                rows["gateway"].append(wrk(url, stack.gateway_pid, header=auth))
    finally:
        floor.stop()
    return [
        {"target": f"finished retrieve, {name}", **sorted(runs, key=lambda r: r["rps"])[1]}
        for name, runs in rows.items()
    ]
