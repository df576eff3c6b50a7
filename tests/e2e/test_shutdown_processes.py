"""Graceful shutdown of real gateway processes: on SIGTERM a replica stops accepting, finishes
the creates it is sending (never a task half-sent), gives back its poller's leases so another
replica takes the tasks at once, and exits within its grace period."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.scratch_db import fetch_rows

pytestmark = pytest.mark.e2e
TASKS = "/api/v3/contents/generations/tasks"
BODY = {"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": "fox"}]}


async def test_sigterm_finishes_the_creates_in_flight_and_refuses_new_ones(stack: Stack) -> None:
    gateway = stack.start_gateway(
        GATEWAY_POLLER_ENABLED="false", GATEWAY_SHUTDOWN_GRACE_SECONDS="15"
    )
    headers = {"Authorization": f"Bearer {stack.new_key(gateway, 'shutdown')}"}
    with stack.timings(latency_seconds=2.0):  # every create takes 2 s upstream
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            sending = [
                asyncio.create_task(client.post(gateway.url + TASKS, json=BODY)) for _ in range(4)
            ]
            await asyncio.sleep(0.7)  # the four are with the upstream now
            signalled = time.monotonic()
            gateway.popen.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            with pytest.raises(httpx.TransportError):  # no longer accepting
                await client.post(gateway.url + TASKS, json=BODY)
            answers = await asyncio.gather(*sending)
        exit_code = await asyncio.to_thread(gateway.popen.wait, 20)
    took = time.monotonic() - signalled
    assert [answer.status_code for answer in answers] == [200] * 4
    # 0, or uvicorn re-raising the SIGTERM it handled once it has shut down.
    assert exit_code in (0, -signal.SIGTERM) and took < 15, took
    ids = [answer.json()["id"] for answer in answers]
    rows = await fetch_rows(stack.database_url, "SELECT id, status, upstream_id FROM tasks")
    recorded = {row["id"]: row for row in rows if row["id"] in ids}
    assert {row["status"] for row in recorded.values()} == {"queued"}  # none left submitting
    assert all(row["upstream_id"] for row in recorded.values())
    log = gateway.log.read_text()
    assert "Waiting for connections to close" in log or "Shutting down" in log


async def test_a_stopping_poller_gives_its_leases_back(stack: Stack) -> None:
    stack.sim("PATCH", "/_sim/config", json={"list_qps": 0, "queued_seconds": 120})
    try:
        front = stack.start_gateway(GATEWAY_POLLER_ENABLED="false")
        headers = {"Authorization": f"Bearer {stack.new_key(front, 'leases')}"}
        ids = [
            httpx.post(front.url + TASKS, json=BODY, headers=headers).json()["id"] for _ in range(8)
        ]
        gateway = stack.start_gateway(  # its first cycle claims all eight
            GATEWAY_POLL_INTERVAL_SECONDS="0.5",
            GATEWAY_UPSTREAM_POLL_QPS="0.5",  # one retrieve every 2 s: the cycle takes long
        )
        await asyncio.sleep(3)  # the list is refused: the cycle retrieves them one by one
        quoted = ", ".join(f"'{task_id}'" for task_id in ids)
        query = f"SELECT id, next_check_at - now() AS due_in FROM tasks WHERE id IN ({quoted})"
        leased = [
            r
            for r in await fetch_rows(stack.database_url, query)
            if r["due_in"].total_seconds() > 20
        ]
        assert len(leased) >= 4  # held for the cycle's lease (60 s)
        gateway.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway.popen.wait, 20) in (0, -signal.SIGTERM)
        due = await fetch_rows(stack.database_url, query)
        assert max(row["due_in"].total_seconds() for row in due) < 5  # due again at once
        assert "gave back" in gateway.log.read_text()
    finally:
        stack.sim("PATCH", "/_sim/config", json={"list_qps": 1, "queued_seconds": 1.0})
