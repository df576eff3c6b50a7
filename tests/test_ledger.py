"""The usage ledger: exactly-once settle, releases, prices at reserve time, budgets that hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import delete as sa_delete
from sqlalchemy import select as sa_select
from sqlmodel import select

from app.lifespan import poller_for
from app.simulator.state import SimulatorState
from app.usage.models import LedgerEntry, Price
from tests.conftest import Gateway
from tests.helpers import MODEL, TASKS, body

# 1.0 pro, 1080p 16:9, 6 s: 295 800 tokens at the seeded USD 2.5 per million.
TOKENS = 295_800
COST_MICROS = 739_500


async def ledger(gateway: Gateway, task_id: str | None = None) -> list[LedgerEntry]:
    async with gateway.app.state.resources.sessionmaker() as session:
        query = select(LedgerEntry).order_by(LedgerEntry.id)
        if task_id is not None:
            query = query.where(LedgerEntry.task_id == task_id)
        return list((await session.exec(query)).all())


def kinds(entries: list[LedgerEntry]) -> list[str]:
    return [entry.kind for entry in entries]


async def test_create_reserves_the_estimate_at_the_current_price(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    (reserve,) = await ledger(gateway, task_id)
    assert (reserve.kind, reserve.tokens, reserve.cost_micros) == ("reserve", TOKENS, COST_MICROS)
    assert reserve.currency == "USD" and reserve.price_id is not None


async def test_success_settles_the_upstream_usage_once(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body("fox --dur 6", ratio="4:3"))).json()["id"]
    for _ in range(3):
        task = (await client.get(f"{TASKS}/{task_id}")).json()
    entries = await ledger(gateway, task_id)
    assert kinds(entries) == ["reserve", "settle"]
    settle = entries[1]
    assert settle.tokens == task["usage"]["completion_tokens"]
    assert settle.total_tokens == task["usage"]["total_tokens"]
    assert settle.cost_micros == (settle.tokens * 2_500_000 + 500_000) // 1_000_000


@pytest.mark.parametrize(
    ("prompt", "status"),
    [
        ("[sim:fail] fox", "failed"),
        ("[sim:expire] fox", "expired"),
    ],
)
async def test_unsuccessful_tasks_release_at_no_cost(
    gateway: Gateway, prompt: str, status: str
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(prompt))).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == status
    entries = await ledger(gateway, task_id)
    assert kinds(entries) == ["reserve", "release"]
    assert entries[1].cost_micros == 0 and entries[1].tokens == 0


async def test_cancelled_and_upstream_rejected_tasks_release(make_gateway, sim_config) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    queued = (await client.post(TASKS, json=body())).json()["id"]
    await client.delete(f"{TASKS}/{queued}")
    assert kinds(await ledger(gateway, queued)) == ["reserve", "release"]
    await client.post(TASKS, json=body("[sim:reject] fox"))
    rejected = [e for e in await ledger(gateway) if e.task_id != queued]
    assert kinds(rejected) == ["reserve", "release"]


async def test_concurrent_retrieves_on_two_replicas_and_the_poller_settle_once(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds, sim_config.running_seconds = 0.0, 0.3
    replicas = [await make_gateway(), await make_gateway()]
    user = await replicas[0].create_user("alice")
    key = await replicas[0].create_key(user["id"])
    clients = [replica.as_user(key) for replica in replicas]
    task_id = (await clients[0].post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    await asyncio.sleep(0.35)  # it has just succeeded upstream; nobody has seen it yet
    poller = poller_for(replicas[1].app.state.resources)

    async def retrieve(i: int) -> Any:
        return (await clients[i % 2].get(f"{TASKS}/{task_id}")).json()

    results = await asyncio.gather(*(retrieve(i) for i in range(100)), poller.run_once())
    assert {task["status"] for task in results[:100]} == {"succeeded"}
    entries = await ledger(replicas[0], task_id)
    assert kinds(entries) == ["reserve", "settle"]
    assert entries[1].tokens == TOKENS


async def test_price_change_after_create_keeps_the_old_price(
    make_gateway, sim_config, admin_headers
) -> None:
    sim_config.queued_seconds = 0.2
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    raised = await gateway.client.post(
        "/admin/v1/prices",
        headers=admin_headers,
        json={"model": MODEL, "price_per_million_tokens": "9.99"},
    )
    assert raised.status_code == 201
    await asyncio.sleep(0.25)
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    settle = (await ledger(gateway, task_id))[1]
    assert settle.cost_micros == COST_MICROS
    newer = (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    assert (await ledger(gateway, newer))[0].cost_micros == (
        TOKENS * 9_990_000 + 500_000
    ) // 1_000_000


async def test_budget_admits_exactly_what_fits_under_concurrency(
    make_gateway, sim_config, sim_state: SimulatorState, admin_headers
) -> None:
    sim_config.queued_seconds = 60  # all stay open: their reservations count
    replicas = [await make_gateway(), await make_gateway()]
    user = await replicas[0].create_user("alice")
    key = await replicas[0].create_key(user["id"])
    budget = await replicas[0].client.put(
        f"/admin/v1/users/{user['id']}/budget",
        headers=admin_headers,
        json={"period": "monthly", "limit_micros": 5 * COST_MICROS},
    )
    assert budget.status_code == 200, budget.text
    clients = [replica.as_user(key) for replica in replicas]
    responses = await asyncio.gather(
        *(clients[i % 2].post(TASKS, json=body(duration=6, ratio="16:9")) for i in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 15
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"QuotaExceeded.Budget"}
    assert all(
        r.headers["x-should-retry"] == "false" and int(r.headers["retry-after"]) > 0
        for r in refused
    )
    assert sim_state.calls["create"] == 5
    assert len([e for e in await ledger(replicas[0]) if e.kind == "reserve"]) == 5


async def test_released_reservations_free_the_budget(
    make_gateway, sim_config, admin_headers
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway()
    user = await gateway.create_user("alice")
    client = gateway.as_user(await gateway.create_key(user["id"]))
    await gateway.client.put(
        f"/admin/v1/users/{user['id']}/budget",
        headers=admin_headers,
        json={"period": "daily", "limit_tokens": TOKENS},
    )
    first = (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    assert (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).status_code == 429
    await client.delete(f"{TASKS}/{first}")  # cancelled: its reservation is released
    assert (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).status_code == 200


async def test_key_budget_limits_only_that_key(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("alice")
    tight_key = await gateway.create_key(user["id"])
    free_key = await gateway.create_key(user["id"])
    keys = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()
    tight_id = next(k["id"] for k in keys if tight_key.startswith(k["prefix"]))
    await gateway.client.put(
        f"/admin/v1/keys/{tight_id}/budget",
        headers=admin_headers,
        json={"period": "total", "limit": "0.5"},
    )
    tight, free = gateway.as_user(tight_key), gateway.as_user(free_key)
    assert (await tight.post(TASKS, json=body(duration=6, ratio="16:9"))).status_code == 429
    assert (await free.post(TASKS, json=body(duration=6, ratio="16:9"))).status_code == 200


async def test_unpriced_model_runs_and_is_flagged(
    gateway: Gateway, admin_headers, caplog: pytest.LogCaptureFixture
) -> None:
    lite = "seedance-1-0-lite-t2v-250428"
    engine = gateway.app.state.resources.engine
    async with engine.begin() as connection:
        seeded = (
            (
                await connection.execute(
                    sa_select(Price.__table__).where(Price.__table__.c.model == lite)
                )
            )
            .mappings()
            .all()
        )
        await connection.execute(sa_delete(Price).where(Price.model == lite))
    try:
        client = await gateway.user_client("alice")
        task_id = (await client.post(TASKS, json=body(model=lite))).json()["id"]
        await client.get(f"{TASKS}/{task_id}")
        reserve, settle = await ledger(gateway, task_id)
        assert reserve.price_id is None and settle.cost_micros == 0 and settle.tokens > 0
        assert any("has no price" in r.getMessage() for r in caplog.records)
        report = (
            await gateway.client.get(
                "/admin/v1/usage", params={"group_by": "model"}, headers=admin_headers
            )
        ).json()
        (row,) = report["rows"]
        assert (row["group"], row["unpriced_tasks"], row["cost_micros"]) == (lite, 1, 0)
    finally:
        async with engine.begin() as connection:
            await connection.execute(Price.__table__.insert(), [dict(row) for row in seeded])
