"""Observing open tasks through the upstream list: moves, settles and tiers without retrieves."""

from __future__ import annotations

import asyncio
import time

from sqlmodel import select

from app.lifespan import poller_for
from app.simulator.state import SimulatorState
from app.tasks.models import Task
from app.usage.models import LedgerEntry
from tests.conftest import Gateway
from tests.helpers import TASKS, body


async def statuses(client, ids: list[str]) -> list[str]:
    return [(await client.get(f"{TASKS}/{task_id}")).json()["status"] for task_id in ids]


async def test_open_tasks_move_and_settle_through_the_list_alone(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    # Client retrieves never refresh here: whatever moves, the poller's list call moved it.
    gateway = await make_gateway(refresh_stale_seconds=3600)
    sim_config.queued_seconds, sim_config.running_seconds = 1.0, 1.0
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(3)]
    poller = poller_for(gateway.app.state.resources)
    seen = []
    for _ in range(3):  # a cycle lasts at least one list slot (1.25 s): a state each
        assert await poller.run_once() == 3
        seen.append(set(await statuses(client, ids)))
    assert seen == [{"queued"}, {"running"}, {"succeeded"}]
    assert (sim_state.calls["list"], sim_state.calls["get"]) == (3, 0)
    billed = {task["id"]: task["billed_tokens"] for task in sim_state.billing(time.time())}
    async with gateway.app.state.resources.sessionmaker() as session:
        tasks = (await session.exec(select(Task))).all()
        settles = (
            await session.exec(select(LedgerEntry).where(LedgerEntry.kind == "settle"))
        ).all()
    tokens = {entry.task_id: entry.tokens for entry in settles}
    assert {task.id: tokens[task.id] for task in tasks} == {
        task.id: billed[task.upstream_id] for task in tasks
    }


async def test_each_service_tier_is_listed_on_its_own(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    ids = [
        (await client.post(TASKS, json=body(service_tier=tier))).json()["id"]
        for tier in ("default", "flex")
    ]
    await poller_for(gateway.app.state.resources).run_once()
    async with gateway.app.state.resources.sessionmaker() as session:
        tasks = (await session.exec(select(Task))).all()
    assert sorted(task.id for task in tasks if task.status == "succeeded") == sorted(ids)
    assert (sim_state.calls["list"], sim_state.calls["get"]) == (2, 0)


async def test_more_open_tasks_than_one_list_call_shows(
    make_gateway, sim_state: SimulatorState
) -> None:
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    slots = asyncio.Semaphore(8)

    async def create(n: int) -> None:
        async with slots:
            assert (await client.post(TASKS, json=body(f"fox {n}"))).status_code == 200

    await asyncio.gather(*(create(n) for n in range(160)))
    assert await poller_for(gateway.app.state.resources).run_once() == 160
    assert (sim_state.calls["list"], sim_state.calls["get"]) == (2, 0)  # 150 ids, then 10


async def test_a_task_the_list_does_not_show_is_retrieved(
    gateway: Gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    client = await gateway.user_client("alice")
    _shown, hidden = [(await client.post(TASKS, json=body())).json()["id"] for _ in range(2)]
    async with gateway.app.state.resources.sessionmaker() as session:
        upstream_id = (await session.get(Task, hidden)).upstream_id
    sim_state.tasks[upstream_id].deleted = True  # gone upstream: the list no longer shows it
    assert await poller_for(gateway.app.state.resources).run_once() == 2  # 1 shown + 1 claimed
    assert (sim_state.calls["list"], sim_state.calls["get"]) == (1, 1)
    async with gateway.app.state.resources.sessionmaker() as session:
        task = await session.get(Task, hidden)
    assert task.status == "queued" and task.check_failures == 1  # 404: backs off, expires later
