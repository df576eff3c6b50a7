"""Limits across real gateway processes sharing the real Redis, seen by plain HTTP and the SDK."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import ArkRateLimitError

from tests.e2e.conftest import Stack
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e
TASKS = "/api/v3/contents/generations/tasks"
BODY = {"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": "fox"}]}


def limited_gateway(stack: Stack, prefix: str) -> Process:
    return stack.start_gateway(
        GATEWAY_REDIS_URL="redis://127.0.0.1:6379/0",
        GATEWAY_REDIS_KEY_PREFIX=prefix,
        GATEWAY_CREATE_RATE_LIMIT="30/minute",
        GATEWAY_MAX_TASKS_IN_FLIGHT_PER_KEY="1000",
        GATEWAY_MAX_TASKS_IN_FLIGHT_PER_USER="1000",
        GATEWAY_MAX_TASKS_IN_FLIGHT_GLOBAL="1000",
    )


@pytest.fixture(scope="module")
def pair(stack: Stack) -> tuple[Process, Process]:
    prefix = f"sgw-e2e-{os.getpid()}-{time.monotonic_ns()}"
    return limited_gateway(stack, prefix), limited_gateway(stack, prefix)


async def test_two_processes_share_one_create_limit(stack: Stack, pair) -> None:
    first, second = pair
    greedy = {"Authorization": f"Bearer {stack.new_key(first, 'greedy')}"}
    other = {"Authorization": f"Bearer {stack.new_key(first, 'polite')}"}
    creates_before = stack.sim("GET", "/_sim/stats")["calls"].get("create", 0)
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(pair[i % 2].url + TASKS, json=BODY, headers=greedy) for i in range(200))
        )
        polite = await client.post(second.url + TASKS, json=BODY, headers=other)
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 30 and codes.count(429) == 170
    refused = [a for a in answers if a.status_code == 429]
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert {a.json()["error"]["code"] for a in refused} == {"RateLimitExceeded.KeyCreate"}
    assert polite.status_code == 200  # a second key is unaffected
    assert stack.sim("GET", "/_sim/stats")["calls"]["create"] == creates_before + 31


def test_sdk_sees_a_gateway_429_as_rate_limit_error(stack: Stack, pair) -> None:
    first, _ = pair
    sdk = Ark(
        base_url=f"{first.url}/api/v3", api_key=stack.new_key(first, "sdk-limited"), max_retries=0
    )
    for _ in range(30):
        sdk.content_generation.tasks.create(model=BODY["model"], content=BODY["content"])
    with pytest.raises(ArkRateLimitError) as refused:
        sdk.content_generation.tasks.create(model=BODY["model"], content=BODY["content"])
    assert refused.value.code == "RateLimitExceeded.KeyCreate"
