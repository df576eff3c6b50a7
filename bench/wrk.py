"""CPU per request under wrk: each gateway request kind beside its baseline from the same run,
on PostgreSQL and Redis, one worker each (and creates again with `--workers 2`).

The baselines: the floor, a bare FastAPI app answering a finished task's bytes from memory (for
retrieves and lists), and the pass-through, a bare FastAPI app relaying the call with the
gateway's own upstream client (for the open-task retrieve and the create). CPU per request (the
server process's CPU time / requests) is the figure to compare: it stays put on a shared machine
where throughput does not. PostgreSQL's CPU per request (all its processes) is beside it: on a
machine of two cores the database's share bounds creates/s as much as the gateway's. wrk comes
from Debian (`make bench` installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.stack import (
    ADMIN_TOKEN,
    CREATE_BODY,
    MASTER_KEY,
    TASKS,
    BenchStack,
    bench_stack,
    rss_kib,
)
from tests.e2e.processes import Process, clean_env, free_port, issue_key, start

SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
CONNECTIONS = 32
CREATORS = 16  # creates come from this many users, a key each
FLOOR = "floor (bare FastAPI, bytes from memory)"
PASS_RETRIEVE = "pass-through: retrieve (bare FastAPI relaying upstream)"
PASS_CREATE = "pass-through: create (bare FastAPI relaying upstream)"
CREATE = "gateway: create, 16 users (upstream answers at once)"
OPEN = "gateway: open-task retrieve, refreshed upstream"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (`--workers 2`: uvicorn's
    supervisor and its two workers)."""
    return sum(_stat_cpu(Path(f"/proc/{each}/stat").read_text()) for each in _tree(pid))


def _tree(pid: int) -> list[int]:
    children = [
        int(child)
        for threads in Path(f"/proc/{pid}/task").glob("*/children")
        for child in threads.read_text().split()
    ]
    return [pid, *(each for child in children for each in _tree(child))]


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process so far (backends, WAL writer, autovacuum): the
    database's share of a request, on the same machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if "(postgres)" in text:
            total += _stat_cpu(text)
    return total


def _stat_cpu(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, pid: int, *, header: str = "", script: Path | None = None) -> dict[str, Any]:
    """One wrk run against `url`; the figures with the server's CPU per request."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency"]
    if header:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    before, database_before = cpu_seconds(pid), postgres_cpu_seconds()
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    database_cpu = postgres_cpu_seconds() - database_before
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": requests,
        "rps": round(requests / SECONDS),
        "cpu_ms_per_request": round(1000 * cpu / requests, 3),
        "postgres_cpu_ms_per_request": round(1000 * database_cpu / requests, 3),
        "p50_ms": round(float(p50.group(1)) * scale[p50.group(2)], 2) if p50 else None,
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput."""
    return sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]


def create_script(workdir: Path, keys: list[str]) -> Path:
    """A wrk script that posts the create body, each request with the next user's key."""
    script = workdir / "create.lua"
    bearers = ", ".join(f'"Bearer {key}"' for key in keys)
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps(CREATE_BODY)}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"local bearers = {{{bearers}}}\n"
        "local turn = 0\n"
        "request = function()\n"
        "  turn = turn % #bearers + 1\n"
        '  wrk.headers["Authorization"] = bearers[turn]\n'
        "  return wrk.format()\n"
        "end\n"
    )
    return script


def end_created_tasks(database_url: str, *, keep: str) -> None:
    """End the tasks a create run left queued, as the poller would once the upstream finished
    them: every run starts with the same few open tasks (an account holds about 120), rather
    than with the thousands the previous runs created. `keep` (a URL) names a task to leave."""
    task_id = keep.rsplit("/", 1)[-1]

    async def end() -> None:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(
                "UPDATE tasks SET status = 'succeeded' WHERE status = 'queued' AND id <> $1",
                task_id,
            )
        finally:
            await connection.close()

    asyncio.run(end())


def _baseline(module: str, workdir: Path, *, health: str, **env: str) -> Process:
    port = free_port()
    return start(
        [module, "--port", str(port), "--log-level", "warning"],
        env=clean_env(**env),
        port=port,
        log=workdir / f"{module.split(':')[0]}.log",
        health=health,
        module="uvicorn",
    )


def run_wrk(database_url: str, workdir: Path, *, redis_url: str) -> dict[str, Any]:
    """The baselines, then each gateway request kind, interleaved over 3 rounds (medians); the
    gateway's memory over the whole run; creates with `--workers 2` against one worker."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    settings = {
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_REFRESH_STALE_SECONDS": "0",
        "GATEWAY_UPSTREAM_REFRESH_RATE": "1000000/second",
    }
    floor = _baseline("bench.floor:app", workdir, health=f"{TASKS}/x")
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with bench_stack(database_url, workdir, **settings) as stack:
            passing = _baseline(
                "bench.passthrough:app",
                workdir,
                health="/docs",
                PASS_UPSTREAM_URL=f"{stack.simulator.url}/api/v3",
                PASS_UPSTREAM_KEY=MASTER_KEY,
            )
            try:
                targets = _targets(stack, passing, create_script(workdir, _creators(stack)))
                rss_start = rss_kib(stack.gateway_pid)
                for _ in range(3):
                    runs.setdefault(FLOOR, []).append(wrk(f"{floor.url}{TASKS}/x", floor.popen.pid))
                    for name, (url, header, script, pid, _) in targets.items():
                        runs.setdefault(name, []).append(
                            wrk(url, pid, header=header, script=script)
                        )
                        if name == CREATE:
                            end_created_tasks(database_url, keep=targets[OPEN][0])
                rss_end = rss_kib(stack.gateway_pid)
            finally:
                passing.stop()
        with bench_stack(database_url, workdir, "--workers", "2", **settings) as two:
            script = create_script(workdir, _creators(two))
            two_runs = []
            for _ in range(3):
                two_runs.append(wrk(two.gateway.url + TASKS, two.gateway_pid, script=script))
                end_created_tasks(database_url, keep="")
            two_workers = median(two_runs)

    finally:
        floor.stop()
    baselines = {name: target[4] for name, target in targets.items()}
    return _report(runs, baselines, two_workers, rss_start=rss_start, rss_end=rss_end)


def _report(
    runs: dict[str, list[dict[str, Any]]],
    baselines: dict[str, str],
    two_workers: dict[str, Any],
    *,
    rss_start: int,
    rss_end: int,
) -> dict[str, Any]:
    medians = {name: median(rows) for name, rows in runs.items()}
    rows = []
    for name, row in medians.items():
        base = medians[baselines.get(name, FLOOR)]["cpu_ms_per_request"]
        rows.append(
            {
                "request": name,
                **{k: v for k, v in row.items() if k != "requests"},
                "baseline": "pass-through" if baselines.get(name, FLOOR) != FLOOR else "floor",
                "x_baseline_cpu": round(row["cpu_ms_per_request"] / base, 1),
            }
        )
    served = sum(run["requests"] for name in baselines if "gateway" in name for run in runs[name])
    return {
        "rows": rows,
        "creates_per_second_two_workers": two_workers["rps"],
        "two_workers_vs_one": round(two_workers["rps"] / medians[CREATE]["rps"], 2),
        # Where cores are short, throughput cannot show scaling; CPU per create (both workers'
        # together) shows whether a second worker adds work of its own (contention) or none.
        "two_workers_cpu_ms_per_create": two_workers["cpu_ms_per_request"],
        "two_workers_postgres_cpu_ms_per_create": two_workers["postgres_cpu_ms_per_request"],
        "gateway_rss_mib_start": round(rss_start / 1024, 1),
        "gateway_rss_mib_end": round(rss_end / 1024, 1),
        "rss_growth_ratio": round(rss_end / rss_start, 2),
        "gateway_requests_served": served,
    }


def _creators(stack: BenchStack) -> list[str]:
    return [
        issue_key(
            stack.gateway.url, admin_token=ADMIN_TOKEN, user_name=f"creator-{os.urandom(4).hex()}"
        )
        for _ in range(CREATORS)
    ]


def _targets(
    stack: BenchStack, passing: Process, create: Path
) -> dict[str, tuple[str, str, Path | None, int, str]]:
    """A finished task, an open one, the list and the create, each with its process and
    baseline; the pass-through's retrieve and create."""
    bearer = {"Authorization": stack.auth_header.split(": ", 1)[1]}
    tasks = stack.gateway.url + TASKS
    finished = httpx.post(tasks, json=CREATE_BODY, headers=bearer).json()["id"]
    time.sleep(0.5)
    assert httpx.get(f"{tasks}/{finished}", headers=bearer).json()["status"] == "succeeded"
    for _ in range(19):  # the list's user has 20 tasks
        httpx.post(tasks, json=CREATE_BODY, headers=bearer).raise_for_status()
    # One task on each side stays queued for good; every other task finishes at once.
    held = {**CREATE_BODY, "content": [{"type": "text", "text": "a fox [sim:hold]"}]}
    opened = httpx.post(tasks, json=held, headers=bearer).json()["id"]
    upstream_open = httpx.post(
        stack.simulator.url + TASKS,
        json=held,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()["id"]
    gw, key = stack.gateway_pid, stack.auth_header
    return {
        PASS_RETRIEVE: (
            f"{passing.url}{TASKS}/{upstream_open}",
            "",
            None,
            passing.popen.pid,
            FLOOR,
        ),
        PASS_CREATE: (passing.url + TASKS, "", create, passing.popen.pid, FLOOR),
        "gateway: finished-task retrieve": (f"{tasks}/{finished}", key, None, gw, FLOOR),
        "gateway: list, page of 10": (f"{tasks}?page_size=10", key, None, gw, FLOOR),
        OPEN: (
            f"{tasks}/{opened}",
            key,
            None,
            gw,
            PASS_RETRIEVE,
        ),
        CREATE: (tasks, "", create, gw, PASS_CREATE),
    }
