"""The simulator speaks the upstream's protocol: key check, lifecycle, list, delete, faults."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.simulator.app import create_simulator_app
from app.simulator.state import SimConfig
from tests.helpers import TASKS, body

KEY = "sim-test-key"


@pytest.fixture
def config() -> SimConfig:
    return SimConfig(api_key=KEY, queued_seconds=0.2, running_seconds=0.2)


@pytest.fixture
def sim(config: SimConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_simulator_app(config)),
        base_url="http://sim.test",
        headers={"Authorization": f"Bearer {KEY}"},
    )


async def test_wrong_key_is_401_envelope(sim: httpx.AsyncClient) -> None:
    response = await sim.get(TASKS, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "AuthenticationError" and "Request id:" in error["message"]


async def test_task_moves_queued_running_succeeded(sim: httpx.AsyncClient) -> None:
    created = (await sim.post(TASKS, json=body(duration=6, ratio="16:9"))).json()
    assert created["id"].startswith("cgt-") and len(created["id"].split("-")[2]) == 5
    seen = []
    for _ in range(12):
        task = (await sim.get(f"{TASKS}/{created['id']}")).json()
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert seen == ["queued", "running", "succeeded"]
    assert task["usage"]["completion_tokens"] == 295_800


async def test_delete_by_state(sim: httpx.AsyncClient, config: SimConfig) -> None:
    queued = (await sim.post(TASKS, json=body())).json()["id"]
    assert (await sim.delete(f"{TASKS}/{queued}")).json() == {}
    assert (await sim.get(f"{TASKS}/{queued}")).json()["status"] == "cancelled"
    assert (await sim.delete(f"{TASKS}/{queued}")).status_code == 409
    config.queued_seconds = 0
    running = (await sim.post(TASKS, json=body())).json()["id"]
    assert (await sim.delete(f"{TASKS}/{running}")).status_code == 409
    config.running_seconds = 0
    done = (await sim.post(TASKS, json=body())).json()["id"]
    assert (await sim.delete(f"{TASKS}/{done}")).status_code == 200
    assert (await sim.get(f"{TASKS}/{done}")).status_code == 404


async def test_list_filters_and_pages(sim: httpx.AsyncClient, config: SimConfig) -> None:
    config.list_qps = 100  # three lists within a second here
    ids = [(await sim.post(TASKS, json=body())).json()["id"] for _ in range(3)]
    await sim.post(TASKS, json=body(service_tier="flex"))
    listed = (await sim.get(TASKS, params={"page_size": 2})).json()
    assert listed["total"] == 3 and len(listed["items"]) == 2
    picked = (
        await sim.get(TASKS, params=[("filter.task_ids", ids[0]), ("filter.task_ids", ids[2])])
    ).json()
    assert {item["id"] for item in picked["items"]} == {ids[0], ids[2]}
    assert (await sim.get(TASKS, params={"filter.service_tier": "flex"})).json()["total"] == 1


async def test_list_pages_are_bounded_as_upstream(
    sim: httpx.AsyncClient, config: SimConfig
) -> None:
    config.list_qps = 100  # five calls in a row
    for name, value in (("page_size", 501), ("page_size", 0), ("page_num", 501), ("page_num", "x")):
        refused = await sim.get(TASKS, params={name: value})
        assert refused.status_code == 400, (name, value)
        assert refused.json()["error"]["param"] == name
    assert (await sim.get(TASKS, params={"page_size": 500, "page_num": 500})).status_code == 200


async def test_the_accounts_calls_per_second_are_enforced(
    sim: httpx.AsyncClient, config: SimConfig
) -> None:
    task_id = (await sim.post(TASKS, json=body())).json()["id"]
    gets = [(await sim.get(f"{TASKS}/{task_id}")).status_code for _ in range(config.get_qps + 1)]
    assert gets == [200] * config.get_qps + [429]
    assert [(await sim.get(TASKS)).status_code for _ in range(2)] == [200, 429]
    refused = await sim.get(TASKS)
    assert refused.json()["error"]["code"] == "AccountRateLimitExceeded"
    assert refused.headers["retry-after"] == "1"
    calls = (await sim.get("/_sim/stats")).json()["calls"]
    assert (calls["get_refused"], calls["list_refused"]) == (1, 2)


async def test_queue_limit_answers_quota_exceeded(
    sim: httpx.AsyncClient, config: SimConfig
) -> None:
    config.max_queued = 2
    config.queued_seconds = 60
    for _ in range(2):
        assert (await sim.post(TASKS, json=body())).status_code == 200
    refused = await sim.post(TASKS, json=body())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "QuotaExceeded"
    stats = (await sim.get("/_sim/stats")).json()
    assert stats["peak_open"] == 2 and stats["calls"]["create"] == 3


async def test_config_knobs_change_at_run_time(sim: httpx.AsyncClient) -> None:
    knobs = (await sim.patch("/_sim/config", json={"rate_limit_rate": 1.0})).json()
    assert knobs["rate_limit_rate"] == 1.0 and "api_key" not in knobs
    assert (await sim.get(TASKS)).status_code == 429
