"""Exactly-once settlement across real gateway processes sharing PostgreSQL, and after a crash."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import MASTER_KEY
from tests.e2e.conftest import Stack
from tests.e2e.processes import ROOT
from tests.scratch_db import scratch_postgres

pytestmark = pytest.mark.e2e
TASKS = "/api/v3/contents/generations/tasks"
MODEL = "seedance-1-0-pro-250528"


async def ledger_rows(stack: Stack) -> list[tuple[str, str, int]]:
    connection = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("SELECT task_id, kind, tokens FROM ledger ORDER BY id")
    finally:
        await connection.close()
    return [(row["task_id"], row["kind"], row["tokens"]) for row in rows]


async def test_hundred_retrieves_over_two_processes_settle_once(stack: Stack) -> None:
    with stack.timings(queued_seconds=0, running_seconds=1.0):
        await hundred_retrieves_over_two_processes(stack)


async def hundred_retrieves_over_two_processes(stack: Stack) -> None:
    first = stack.start_gateway(GATEWAY_POLL_INTERVAL_SECONDS="0.5")
    second = stack.start_gateway(GATEWAY_POLL_INTERVAL_SECONDS="0.5")
    headers = {"Authorization": f"Bearer {stack.new_key(first, 'race')}"}
    created = httpx.post(
        first.url + TASKS,
        headers=headers,
        json={
            "model": MODEL,
            "content": [{"type": "text", "text": "fox --dur 6"}],
            "ratio": "16:9",
        },
    )
    task_id = created.json()["id"]
    await asyncio.sleep(1.1)  # succeeded upstream a moment ago; the pollers are racing too
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        answers = await asyncio.gather(
            *(client.get(f"{(first, second)[i % 2].url}{TASKS}/{task_id}") for i in range(100))
        )
    assert {answer.json()["status"] for answer in answers} == {"succeeded"}
    rows = [row for row in await ledger_rows(stack) if row[0] == task_id]
    assert [(kind, tokens) for _, kind, tokens in rows] == [
        ("reserve", 295_800),
        ("settle", 295_800),
    ]


async def test_killed_gateway_tasks_are_settled_by_a_fresh_worker(stack: Stack) -> None:
    # A database of its own: the module's other gateways run pollers that would settle the
    # tasks first (and the worker would be stopped before it had started).
    async with scratch_postgres(f"sgw_e2e_crash_{os.getpid()}") as database_url:
        alone = Stack(simulator=stack.simulator, database_url=database_url, tmp=stack.tmp)
        try:
            await _worker_settles_a_killed_gateway_s_tasks(alone)
        finally:
            for process in alone.gateways:
                process.stop()


async def _worker_settles_a_killed_gateway_s_tasks(stack: Stack) -> None:
    doomed = stack.start_gateway(GATEWAY_POLLER_ENABLED="false")
    headers = {"Authorization": f"Bearer {stack.new_key(doomed, 'crash')}"}
    ids = [
        httpx.post(
            doomed.url + TASKS,
            headers=headers,
            json={"model": MODEL, "content": [{"type": "text", "text": f"fox {i}"}]},
        ).json()["id"]
        for i in range(5)
    ]
    doomed.popen.kill()  # SIGKILL: no shutdown, tasks left open
    doomed.popen.wait()
    log = (stack.tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=stack.env(GATEWAY_POLL_INTERVAL_SECONDS="0.5"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            settled = [
                row for row in await ledger_rows(stack) if row[0] in ids and row[1] == "settle"
            ]
            if len(settled) == len(ids):
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.5)  # a few more cycles: nothing may be settled twice
        rows = [row for row in await ledger_rows(stack) if row[0] in ids]
    finally:
        worker.terminate()
        worker.wait(timeout=10)
    assert sorted((task_id, kind) for task_id, kind, _ in rows) == sorted(
        [(task_id, "reserve") for task_id in ids] + [(task_id, "settle") for task_id in ids]
    )
    worker_log = Path(log.name).read_text()
    assert worker_log.count("poller started") == 1
    assert MASTER_KEY not in worker_log
