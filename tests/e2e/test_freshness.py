"""Freshness within the account's budget: 120 open tasks, each polled by a client every second,
while the simulator moves them at moments of their own. The simulator's timeline is the oracle
for how stale each answer was, and its per-second call counts for the budget."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import TERMINAL, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.serial]
TASKS = "/api/v3/contents/generations/tasks"
OPEN_TASKS = 120
RANK = {"queued": 0, "running": 1}  # terminal states rank 2


async def create_all(client: httpx.AsyncClient) -> list[str]:
    slots = asyncio.Semaphore(16)

    async def create(n: int) -> str:
        body = {"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": f"{n}"}]}
        async with slots:
            answer = await client.post(TASKS, json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    return list(await asyncio.gather(*(create(n) for n in range(OPEN_TASKS))))


async def poll_until_done(client: httpx.AsyncClient, task_id: str) -> list[tuple[float, str]]:
    """(time sent, status answered) for every poll, one a second, until the task ends."""
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        sent = time.time()
        answer = await client.get(f"{TASKS}/{task_id}")
        assert answer.status_code == 200, answer.text
        seen.append((sent, answer.json()["status"]))
        if seen[-1][1] in TERMINAL:
            return seen
        await asyncio.sleep(1.0)
    raise AssertionError(f"task {task_id} still open after 90 s")


def staleness(sent: float, status: str, moved: dict[str, float]) -> float:
    """How long before `sent` the task had already left the answered `status` (0 if it had not)."""
    rank = RANK.get(status, 2)
    if rank == 2:
        return 0.0
    left_at = moved["started_at"] if rank == 0 else moved["finished_at"]
    return max(0.0, sent - left_at)


async def test_open_tasks_stay_fresh_within_the_account_budget(stack: Stack) -> None:
    gateway = stack.start_gateway(
        GATEWAY_REFRESH_STALE_SECONDS="3",
        GATEWAY_CREATE_RATE_LIMIT="100000/minute",
        GATEWAY_READ_RATE_LIMIT="1000000/minute",
        GATEWAY_MAX_TASKS_IN_FLIGHT_PER_KEY="1000",
        GATEWAY_MAX_TASKS_IN_FLIGHT_PER_USER="1000",
        GATEWAY_MAX_TASKS_IN_FLIGHT_GLOBAL="1000",
    )  # the default poll interval
    key = stack.new_key(gateway, "fresh")
    stack.sim("POST", "/_sim/reset")
    timings = {"queued_seconds": 8, "running_seconds": 8, "timing_jitter": 0.5, "max_queued": 200}
    with stack.timings(**timings):
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=OPEN_TASKS)
        async with httpx.AsyncClient(
            base_url=gateway.url, headers=headers, limits=limits, timeout=30
        ) as client:
            task_ids = await create_all(client)
            polls = await asyncio.gather(*(poll_until_done(client, t) for t in task_ids))
        # Read under the same timings: the simulator derives each task's moments from them.
        timeline = {task["id"]: task for task in stack.sim("GET", "/_sim/tasks")}
    connection = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT id, upstream_id FROM tasks WHERE id = ANY($1)", task_ids
        )
    finally:
        await connection.close()
    upstream_of = {row["id"]: row["upstream_id"] for row in rows}
    worst = max(
        staleness(sent, status, timeline[upstream_of[task_id]])
        for task_id, seen in zip(task_ids, polls, strict=True)
        for sent, status in seen
    )
    print(f"polls: {sum(map(len, polls))}, worst staleness {worst:.2f} s")
    assert worst <= 3.0, f"a client saw a status {worst:.2f} s out of date"
    # Every client saw its task while it stood still and while it moved.
    assert all([s for _, s in seen][:1] == ["queued"] for seen in polls)
    assert sum("running" in {s for _, s in seen} for seen in polls) >= OPEN_TASKS * 0.9
    stats = stack.sim("GET", "/_sim/stats")
    print(f"upstream calls: {stats['calls']}, peak in one second: {stats['peak_per_second']}")
    assert stats["peak_per_second"].get("get", 0) <= 18, stats
    assert stats["peak_per_second"]["list"] <= 1, stats
    assert "get_refused" not in stats["calls"] and "list_refused" not in stats["calls"]
    # The list does the bulk of the work: far fewer retrieves than tasks times state changes.
    assert stats["calls"].get("get", 0) < OPEN_TASKS, stats
