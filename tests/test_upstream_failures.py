"""How upstream failures reach the client, and what the gateway records for them."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from sqlmodel import select

from app.simulator.state import SimulatorState
from app.tasks.models import Task
from tests.conftest import Gateway
from tests.helpers import TASKS, body


async def _tasks(gateway: Gateway) -> list[Task]:
    async with gateway.app.state.resources.sessionmaker() as session:
        return list((await session.exec(select(Task))).all())


async def test_upstream_4xx_is_relayed_and_task_rejected(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body("[sim:reject] something"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InputTextSensitiveContentDetected"
    assert error["param"] == "content"
    (task,) = await _tasks(gateway)
    assert task.status == "rejected"
    assert (await client.get(TASKS)).json()["total"] == 0  # the client never got an id


async def test_upstream_429_is_relayed_with_retry_after(gateway: Gateway, sim_config) -> None:
    sim_config.rate_limit_rate = 1.0
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "TooManyRequests"


async def test_upstream_500_before_create_is_502_and_task_rejected(
    gateway: Gateway, sim_config
) -> None:
    sim_config.create_error_rate = 1.0
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "BadGateway"
    (task,) = await _tasks(gateway)
    # A 5xx can follow a create that landed: the outcome is unknown and retries are discouraged.
    assert task.status == "unknown"
    assert response.headers["x-should-retry"] == "false"


async def test_upstream_500_after_create_leaves_task_unknown(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body("[sim:error-after-create] fox"))
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert len(sim_state.tasks) == 1  # it did land upstream
    (task,) = await _tasks(gateway)
    assert task.status == "unknown"
    assert task.next_check_at is not None  # due for reconciliation


async def test_upstream_read_timeout_is_504_and_unknown(make_gateway) -> None:
    # In-process transports cannot time out; the real hang is in tests/e2e.
    def too_slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    gateway = await make_gateway(transport=httpx.MockTransport(too_slow))
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "GatewayTimeout"
    assert response.headers["x-should-retry"] == "false"
    (task,) = await _tasks(gateway)
    assert task.status == "unknown"


async def test_refused_master_key_is_502_and_logged_for_the_operator(
    make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(upstream_api_key="sim-wrong-master-key-1234")
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 502  # never a 401: the client's own key was fine
    assert response.json()["error"]["code"] == "UpstreamAuthenticationError"
    operator_lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("master key" in line for line in operator_lines)
    assert not any("sim-wrong-master-key-1234" in r.getMessage() for r in caplog.records)
    (task,) = await _tasks(gateway)
    assert task.status == "rejected"


async def test_unreachable_upstream_is_502_and_safe_to_retry(make_gateway) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gateway = await make_gateway(transport=httpx.MockTransport(refuse))
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 502
    assert "x-should-retry" not in response.headers  # nothing was sent: a retry is safe
    (task,) = await _tasks(gateway)
    assert task.status == "rejected"


async def test_retrieve_serves_last_known_state_when_upstream_fails(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "queued"
    sim_config.rate_limit_rate = 1.0
    response = await client.get(f"{TASKS}/{task_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"


class RefusesRetrieves(httpx.AsyncBaseTransport):
    """The simulator, except that retrieves of one task answer 429 (the account's RPM spent)."""

    def __init__(self, simulator: httpx.AsyncBaseTransport) -> None:
        self.simulator = simulator
        self.refuse = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse and request.method == "GET" and "/tasks/" in request.url.path:
            return httpx.Response(
                429,
                json={"error": {"code": "ModelAccountRpmRateLimitExceeded", "message": "slow"}},
            )
        return await self.simulator.handle_async_request(request)


async def test_delete_without_a_fresh_state_sends_nothing_upstream(
    make_gateway, simulator, sim_config, sim_state: SimulatorState
) -> None:
    """A task finished upstream while the gateway's copy still says queued: a DELETE sent then
    would delete a billed video that the gateway would book as cancelled."""
    sim_config.queued_seconds, sim_config.running_seconds = 0.2, 0.2
    upstream = RefusesRetrieves(httpx.ASGITransport(app=simulator))
    gateway = await make_gateway(transport=upstream)
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    await asyncio.sleep(0.6)  # succeeded upstream; nobody has looked
    upstream.refuse = True
    response = await client.delete(f"{TASKS}/{task_id}")
    assert response.status_code == 429
    assert sim_state.calls["delete"] == 0
    upstream.refuse = False
    task = (await client.get(f"{TASKS}/{task_id}")).json()
    assert task["status"] == "succeeded" and task["usage"]["completion_tokens"] > 0
