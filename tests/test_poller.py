"""The poller: settles what nobody polls, reconciles unknown creates, expires, backs off."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col, select

from app.db import utcnow
from app.lifespan import poller_for
from app.simulator.state import SimulatorState
from app.tasks.models import Task
from app.usage.models import LedgerEntry
from tests.conftest import Gateway
from tests.helpers import TASKS, body


async def rows(gateway: Gateway, model: type, *where) -> list:
    async with gateway.app.state.resources.sessionmaker() as session:
        return list((await session.exec(select(model).where(*where))).all())


async def set_task(gateway: Gateway, task_id: str, **values) -> None:
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(update(Task).where(col(Task.id) == task_id).values(**values))
        await session.commit()


async def test_tasks_nobody_retrieves_settle_within_two_cycles(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(5)]
    poller = poller_for(gateway.app.state.resources)
    for _ in range(2):
        await poller.run_once()
    settles = await rows(gateway, LedgerEntry, LedgerEntry.kind == "settle")
    assert sorted(entry.task_id for entry in settles) == sorted(ids)
    # One list call showed all five, finished with their usage: no retrieve was needed, and
    # settled tasks are not looked at again.
    assert (sim_state.calls["list"], sim_state.calls["get"]) == (1, 0)
    assert await poller.run_once() == 0


async def test_background_loop_runs_inside_the_app(make_gateway) -> None:
    gateway = await make_gateway(poller_enabled=True, poll_interval_seconds=0.2)
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    for _ in range(50):
        if await rows(
            gateway, LedgerEntry, LedgerEntry.task_id == task_id, LedgerEntry.kind == "settle"
        ):
            break
        await asyncio.sleep(0.1)
    (task,) = await rows(gateway, Task, Task.id == task_id)
    assert task.status == "succeeded"


async def test_unknown_create_that_landed_is_adopted_and_settled(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body("[sim:error-after-create] fox"))
    assert response.status_code == 502
    (task,) = await rows(gateway, Task)
    assert task.status == "unknown" and task.upstream_id is None
    await poller_for(gateway.app.state.resources).run_once()
    (task,) = await rows(gateway, Task)
    assert task.upstream_id in sim_state.tasks
    assert task.status == "succeeded"
    assert [e.kind for e in await rows(gateway, LedgerEntry)] == ["reserve", "settle"]


async def test_unknown_create_that_never_landed_is_released_after_a_while(
    gateway: Gateway, sim_config
) -> None:
    sim_config.create_error_rate = 1.0
    client = await gateway.user_client("alice")
    assert (await client.post(TASKS, json=body())).status_code == 502
    (task,) = await rows(gateway, Task)
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    (task,) = await rows(gateway, Task)
    assert task.status == "unknown" and task.check_failures == 1  # too early to give up
    await set_task(
        gateway, task.id, created_at=utcnow() - timedelta(minutes=11), next_check_at=utcnow()
    )
    await poller.run_once()
    (task,) = await rows(gateway, Task)
    assert task.status == "rejected"
    assert [e.kind for e in await rows(gateway, LedgerEntry)] == ["reserve", "release"]


async def test_task_left_submitting_by_a_dead_process_is_recovered(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    # As if the process died after recording the task, before storing the upstream's answer.
    await set_task(gateway, task_id, status="submitting", upstream_id=None, next_check_at=utcnow())
    await poller_for(gateway.app.state.resources).run_once()
    (task,) = await rows(gateway, Task)
    assert task.status == "succeeded" and task.upstream_id in sim_state.tasks
    assert sim_state.calls["create"] == 1


async def test_task_gone_upstream_past_expiry_is_expired_and_released(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 3600
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(execution_expires_after=3600))).json()["id"]
    (upstream_task,) = sim_state.tasks.values()
    upstream_task.deleted = True
    await set_task(
        gateway, task_id, created_at=utcnow() - timedelta(hours=2), next_check_at=utcnow()
    )
    await poller_for(gateway.app.state.resources).run_once()
    (task,) = await rows(gateway, Task)
    assert task.status == "expired"
    assert [e.kind for e in await rows(gateway, LedgerEntry)] == ["reserve", "release"]


async def test_failing_refreshes_back_off(make_gateway, sim_config) -> None:
    sim_config.queued_seconds = 3600
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    sim_config.rate_limit_rate = 1.0
    poller = poller_for(gateway.app.state.resources)
    delays = []
    for _ in range(3):
        await set_task(gateway, task_id, next_check_at=utcnow())
        before = utcnow()
        await poller.run_once()
        (task,) = await rows(gateway, Task)
        delays.append((task.next_check_at - before).total_seconds())
    assert task.check_failures == 3
    assert delays[0] < delays[1] < delays[2]


async def test_two_pollers_never_claim_the_same_task(
    make_pg_gateway, sim_state: SimulatorState, sim_config
) -> None:
    sim_config.list_qps = 0  # the list is refused: the pollers retrieve task by task
    replicas = [await make_pg_gateway(), await make_pg_gateway()]
    client = await replicas[0].user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(30)]
    pollers = [poller_for(replica.app.state.resources) for replica in replicas]
    checked = await asyncio.gather(*(poller.run_once() for poller in pollers))
    assert sum(checked) == 30
    assert sim_state.calls["get"] == 30
    settles = await rows(replicas[0], LedgerEntry, LedgerEntry.kind == "settle")
    assert sorted(e.task_id for e in settles) == sorted(ids)


class TimedTransport(httpx.ASGITransport):
    """The simulator's transport, noting when each task retrieve was sent."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app=app)
        self.retrieves: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith(TASKS + "/"):
            self.retrieves.append(time.monotonic())
        return await super().handle_async_request(request)


async def test_replicas_share_one_upstream_poll_budget(
    make_pg_gateway, simulator, sim_config
) -> None:
    sim_config.list_qps = 0  # the list is refused: the pollers retrieve task by task
    upstream = TimedTransport(simulator)
    settings = {"upstream_poll_qps": 10, "poll_batch_size": 10}
    replicas = [await make_pg_gateway(transport=upstream, **settings) for _ in range(2)]
    client = await replicas[0].user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(30)]
    pollers = [poller_for(replica.app.state.resources) for replica in replicas]
    checked = [0, 0]

    async def keep_polling(index: int) -> None:
        deadline = time.monotonic() + 30
        while len(upstream.retrieves) < 30 and time.monotonic() < deadline:
            checked[index] += await pollers[index].run_once()
            await asyncio.sleep(0.01)

    await asyncio.gather(keep_polling(0), keep_polling(1))
    settles = await rows(replicas[0], LedgerEntry, LedgerEntry.kind == "settle")
    assert sorted(e.task_id for e in settles) == sorted(ids)
    assert sum(checked) == 30 and len(upstream.retrieves) == 30
    # 30 retrieves under one 10/s budget take at least 2.9 s; two pollers pacing themselves at
    # 10/s each took about 1.5 s. (A slow machine only stretches the span.)
    span = max(upstream.retrieves) - min(upstream.retrieves)
    assert span >= 2.7, span


async def test_ambiguous_unknown_creates_adopt_only_their_own_upstream_task(
    make_gateway, simulator: FastAPI, sim_state: SimulatorState, sim_config
) -> None:
    """Two users create at the same moment, same model and prompt; the upstream answers 500
    after creating each task. Each gets its own task, never the other's, and a task made on the
    account outside the gateway is adopted by nobody."""
    sim_config.queued_seconds, sim_config.running_seconds = 1.0, 0.5
    gateway = await make_gateway()
    users = {name: await gateway.user_client(name) for name in ("alice", "bob")}

    async def create(name: str) -> int:
        answer = await users[name].post(
            TASKS, json=body("[sim:error-after-create] fox", safety_identifier=name)
        )
        return answer.status_code

    assert await asyncio.gather(*(create(n) for n in ["alice", "bob"] * 3)) == [502] * 6
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator), base_url="http://upstream.test"
    ) as account:
        outside = await account.post(
            "/api/v3/contents/generations/tasks",
            json=body("fox", safety_identifier="outsider"),
            headers={"Authorization": f"Bearer {gateway.settings.upstream_key()}"},
        )
    assert outside.status_code == 200
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()  # while queued no seed is echoed: those wait, none is given up
    assert "rejected" not in {t.status for t in await rows(gateway, Task)}
    await asyncio.sleep(1.6)
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(update(Task).values(next_check_at=utcnow()))
        await session.commit()
    await poller.run_once()
    tasks = await rows(gateway, Task)
    assert {t.status for t in tasks} == {"succeeded"}
    assert len({t.upstream_id for t in tasks}) == 6
    assert outside.json()["id"] not in {t.upstream_id for t in tasks}
    names = {t.user_id: set() for t in tasks}
    for task in tasks:
        names[task.user_id].add(sim_state.tasks[task.upstream_id].body["safety_identifier"])
    assert sorted(sorted(found) for found in names.values()) == [["alice"], ["bob"]]


async def test_failed_creates_free_their_in_flight_places_within_seconds(
    make_gateway, sim_config
) -> None:
    """Upstream 500s with nothing created: the unknown creates hold the key's places only until
    the upstream's list shows that nothing landed."""
    sim_config.create_error_rate = 1.0
    gateway = await make_gateway(max_tasks_in_flight_per_key=5)
    client = await gateway.user_client("alice")
    assert [(await client.post(TASKS, json=body())).status_code for _ in range(6)] == [502] * 5 + [
        429
    ]
    sim_config.create_error_rate = 0.0
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    assert {t.status for t in await rows(gateway, Task)} == {"unknown"}  # too early to tell
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(Task).values(created_at=utcnow() - timedelta(seconds=21), next_check_at=utcnow())
        )
        await session.commit()
    await poller.run_once()
    assert {t.status for t in await rows(gateway, Task)} == {"rejected"}
    assert (await client.post(TASKS, json=body())).status_code == 200


async def unknown_behind_newer_tasks(
    gateway: Gateway, simulator: FastAPI, sim_state: SimulatorState, monkeypatch
) -> Task:
    """An unknown create whose upstream twin the account lists after 100 newer tasks: a scan
    of pages of 100 reaches it on the list's second page."""
    monkeypatch.setattr("app.tasks.reconcile.PAGE_SIZE", 100)
    client = await gateway.user_client("alice")
    assert (await client.post(TASKS, json=body("[sim:error-after-create] fox"))).status_code == 502
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator), base_url="http://upstream.test"
    ) as account:
        for n in range(100):  # made on the account outside the gateway, all newer
            await account.post(
                "/api/v3/contents/generations/tasks",
                json=body(f"other {n}"),
                headers={"Authorization": f"Bearer {gateway.settings.upstream_key()}"},
            )
    (task,) = await rows(gateway, Task)
    await set_task(gateway, task.id, created_at=utcnow() - timedelta(seconds=25))
    for twin in sim_state.tasks.values():  # as old as the gateway's record, the others newer
        twin.created_at -= 25 if twin.body["content"][0]["text"].endswith("] fox") else 0
    await set_task(gateway, task.id, next_check_at=utcnow())
    return task


def adopted_its_own_twin(task: Task, sim_state: SimulatorState) -> bool:
    twin = sim_state.tasks[task.upstream_id]
    return task.status == "succeeded" and twin.body["content"][0]["text"].endswith("] fox")


async def test_unknown_create_beyond_the_list_scan_waits_instead_of_being_rejected(
    gateway: Gateway, simulator: FastAPI, sim_state: SimulatorState, monkeypatch
) -> None:
    """Busy accounts list hundreds of newer tasks first: a create whose twin lies past what one
    scan can read is never concluded lost; a deeper scan finds and adopts it."""
    task = await unknown_behind_newer_tasks(gateway, simulator, sim_state, monkeypatch)
    poller = poller_for(gateway.app.state.resources)
    monkeypatch.setattr("app.tasks.reconcile.MAX_PAGES", 1)
    await poller.run_once()
    (task,) = await rows(gateway, Task)
    assert task.status == "unknown"  # not seen, but not looked far enough back either
    monkeypatch.setattr("app.tasks.reconcile.MAX_PAGES", 2)
    await set_task(gateway, task.id, next_check_at=utcnow())
    await poller.run_once()
    (task,) = await rows(gateway, Task)
    assert adopted_its_own_twin(task, sim_state)


class LateFirstList(httpx.ASGITransport):
    """The simulator's transport, with the first list call held up on its way for 0.6 s (a
    slow network, a busy machine)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app=app)
        self.lists = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == TASKS:
            self.lists += 1
            if self.lists == 1:
                await asyncio.sleep(0.6)
        return await super().handle_async_request(request)


async def test_a_list_call_that_arrives_late_does_not_bring_the_next_within_its_second(
    make_gateway, simulator: FastAPI, sim_state: SimulatorState, monkeypatch
) -> None:
    """The account takes one list call a second. The poller spaces each from the answer to the
    one before, not from when that one was sent: a call that reached the upstream late still
    leaves it a whole second before the next, and the two-page scan completes."""
    gateway = await make_gateway(transport=LateFirstList(simulator))
    task = await unknown_behind_newer_tasks(gateway, simulator, sim_state, monkeypatch)
    monkeypatch.setattr("app.tasks.reconcile.MAX_PAGES", 2)
    await poller_for(gateway.app.state.resources).run_once()
    assert sim_state.calls["list"] == 2 and not sim_state.calls["list_refused"]
    (task,) = await rows(gateway, Task)
    assert adopted_its_own_twin(task, sim_state)


async def test_a_replica_taking_over_from_a_stopped_one_keeps_the_list_budget(
    make_pg_gateway, sim_state: SimulatorState, sim_config
) -> None:
    """The first replica is stopped (cancelled) right after its list call, before its gap ran
    out; the second one takes the turn at once but must not list within the same second."""
    sim_config.queued_seconds = 3600
    replicas = [await make_pg_gateway(), await make_pg_gateway()]
    client = await replicas[0].user_client("alice")
    await client.post(TASKS, json=body("fox"))
    first, second = (poller_for(replica.app.state.resources) for replica in replicas)

    cycle = asyncio.create_task(first.run_once())
    deadline = time.monotonic() + 10
    while sim_state.calls["list"] < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    cycle.cancel()  # in its drain: the turn is given up before the gap after its list ran out
    with contextlib.suppress(asyncio.CancelledError):
        await cycle

    assert await second.run_once() == 1  # the task, shown by the list
    assert sim_state.calls["list"] == 2
    assert sim_state.calls["list_refused"] == 0
