"""PostgreSQL crashes (an immediate stop: what its WAL buffers held is lost, the upstream ids
stored without waiting for their flush among it) while clients create through a real gateway
process. Afterwards every answered task settles exactly what the upstream billed, every task the
upstream made has its gateway task, and no answer was a 500."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY
from tests.e2e.conftest import NO_LIMITS, Stack
from tests.e2e.private_postgres import PrivatePostgres, private_postgres
from tests.e2e.processes import start_simulator
from tests.scratch_db import fetch_rows

TASKS = "/api/v3/contents/generations/tasks"
CREATE = {"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": "fox"}]}
CREATORS = 8
CRASHES = 2


async def test_a_crashed_database_loses_no_task_and_no_money(tmp_path: Path) -> None:
    simulator = start_simulator(
        master_key=MASTER_KEY, log=tmp_path / "simulator.log", queued_seconds=1, running_seconds=1
    )
    # The account's queue and read budget out of the way: the creates pile up fast here.
    budget = {"max_queued": 100_000, "get_qps": 1000}
    httpx.patch(f"{simulator.url}/_sim/config", json=budget).raise_for_status()
    with private_postgres() as database:
        stack = Stack(simulator=simulator, database_url=database.url, tmp=tmp_path)
        gateway = stack.start_gateway(
            GATEWAY_DATABASE_TIMEOUT_SECONDS="2",
            GATEWAY_UPSTREAM_TIMEOUT_SECONDS="5",  # a create with no outcome: reconciled at 15 s
            GATEWAY_POLL_INTERVAL_SECONDS="0.5",
            GATEWAY_UPSTREAM_POLL_QPS="200",
            **NO_LIMITS,
        )
        try:
            key = stack.new_key(gateway, "crash")
            answered, codes = await _create_through_crashes(gateway.url, key, database)
            assert codes[200] == len(answered) > 100
            assert set(codes) <= {200, 503}, codes  # a database away is a 503, never a 500
            tasks = await _settled(database)
            billed = httpx.get(f"{simulator.url}/_sim/tasks").json()
        finally:
            log = gateway.stop()
            simulator.stop()
    assert MASTER_KEY not in log  # every traceback of the outage logged without it
    by_id = {row["id"]: row for row in tasks}
    assert {by_id[task_id]["status"] for task_id in answered} == {"succeeded"}
    owners = Counter(row["upstream_id"] for row in tasks if row["upstream_id"])
    assert {task["id"]: owners[task["id"]] for task in billed} == {t["id"]: 1 for t in billed}
    settled = {row["upstream_id"]: row["settled"] for row in tasks if row["upstream_id"]}
    assert {t["id"]: settled[t["id"]] for t in billed} == {
        t["id"]: t["billed_tokens"] for t in billed
    }
    # Each task reserved once, and every reservation was settled or released.
    assert {(row["reserves"], row["ends"]) for row in tasks} == {(1, 1)}


async def _create_through_crashes(
    url: str, key: str, database: PrivatePostgres
) -> tuple[list[str], Counter[int]]:
    """Creates from `CREATORS` clients at once while the database crashes `CRASHES` times."""
    answered: list[str] = []
    codes: Counter[int] = Counter()
    done = asyncio.Event()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def creator() -> None:
            while not done.is_set():
                answer = await client.post(TASKS, json=CREATE)
                codes[answer.status_code] += 1
                if answer.status_code == 200:
                    answered.append(answer.json()["id"])
                else:
                    await asyncio.sleep(0.05)

        creators = [asyncio.create_task(creator()) for _ in range(CREATORS)]
        for _ in range(CRASHES):
            await asyncio.sleep(2)
            await asyncio.to_thread(database.crash)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(database.start)
        await asyncio.sleep(1)
        done.set()
        await asyncio.gather(*creators)
    return answered, codes


async def _settled(database: PrivatePostgres, timeout: float = 90) -> list[dict[str, object]]:
    """Every task with its ledger rows, once none is open any more."""
    query = """
        SELECT t.id, t.status, t.upstream_id,
               count(*) FILTER (WHERE l.kind = 'reserve') AS reserves,
               count(*) FILTER (WHERE l.kind IN ('settle', 'release')) AS ends,
               coalesce(sum(l.tokens) FILTER (WHERE l.kind = 'settle'), 0) AS settled
        FROM tasks t LEFT JOIN ledger l ON l.task_id = t.id GROUP BY t.id"""
    deadline = time.monotonic() + timeout
    while True:
        rows = [dict(row) for row in await fetch_rows(database.url, query)]
        open_ones = [row for row in rows if row["status"] not in ("succeeded", "rejected")]
        if not open_ones:
            return rows
        assert time.monotonic() < deadline, Counter(row["status"] for row in open_ones)
        await asyncio.sleep(1)
