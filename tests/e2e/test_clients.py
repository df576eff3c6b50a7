"""The official Ark SDK and the seed's samples against a real gateway process.

Only the base URL and the key differ from how they call Seedance itself.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import requests
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import (
    ArkAuthenticationError,
    ArkBadRequestError,
    ArkConflictError,
    ArkNotFoundError,
)

from tests.e2e.conftest import Stack, follow
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e
MODEL = "seedance-1-0-pro-250528"


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Process:
    return stack.start_gateway(GATEWAY_UPSTREAM_TIMEOUT_SECONDS="2")


@pytest.fixture(scope="module")
def sdk(stack: Stack, gateway: Process) -> Ark:
    return Ark(base_url=f"{gateway.url}/api/v3", api_key=stack.new_key(gateway, "sdk-user"))


def test_sdk_creates_gets_lists_and_deletes(sdk: Ark, stack: Stack) -> None:
    created = sdk.content_generation.tasks.create(
        model=MODEL, content=[{"type": "text", "text": "a red fox --dur 6"}], ratio="16:9"
    )
    assert created.id.startswith("cgt-")
    seen = follow(lambda: sdk.content_generation.tasks.get(task_id=created.id).status)
    assert seen == ["queued", "running", "succeeded"]
    task = sdk.content_generation.tasks.get(task_id=created.id)
    assert task.id == created.id
    assert task.usage.completion_tokens == 295_800
    listed = sdk.content_generation.tasks.list(page_size=10, status="succeeded")
    assert created.id in [item.id for item in listed.items]
    sdk.content_generation.tasks.delete(task_id=created.id)
    with pytest.raises(ArkNotFoundError):
        sdk.content_generation.tasks.get(task_id=created.id)


def test_sdk_sees_the_right_exception_classes(sdk: Ark, stack: Stack, gateway: Process) -> None:
    with pytest.raises(ArkBadRequestError) as bad:
        sdk.content_generation.tasks.create(
            model=MODEL, content=[{"type": "text", "text": "x"}], duration=99
        )
    assert bad.value.code == "InvalidParameter" and bad.value.param == "duration"
    with pytest.raises(ArkNotFoundError):
        sdk.content_generation.tasks.get(task_id="cgt-20260101000000-doesnotexist00000000")
    with pytest.raises(ArkAuthenticationError):
        Ark(base_url=f"{gateway.url}/api/v3", api_key="sgw-wrong").content_generation.tasks.list()

    with stack.timings(queued_seconds=0.3, running_seconds=60):
        running = sdk.content_generation.tasks.create(
            model=MODEL, content=[{"type": "text", "text": "slow fox"}]
        )
        while sdk.content_generation.tasks.get(task_id=running.id).status == "queued":
            time.sleep(0.1)
        with pytest.raises(ArkConflictError):
            sdk.content_generation.tasks.delete(task_id=running.id)


def test_seed_requests_sample_runs_with_only_url_and_key_changed(
    stack: Stack, gateway: Process
) -> None:
    api_key = stack.new_key(gateway, "seed-user")
    # --- the seed's python sample, URL and key replaced ---
    url = f"{gateway.url}/api/v3/contents/generations/tasks"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    payload = {
        "model": "seedance-1-0-pro-250528",
        "content": [
            {"type": "text", "text": "图片中的女士,开着跑车冲出展台,撞碎展厅玻璃。"},
            {"type": "image_url", "image_url": {"url": "https://*******.jpeg|png...."}},
        ],
        "ratio": "adaptive",
        "duration": 6,
        "watermark": False,
    }
    response = requests.post(url, headers=headers, json=payload, timeout=30)
    # --- end of sample ---
    assert response.status_code == 200
    task_id = response.json()["id"]

    def retrieve() -> dict[str, Any]:
        answer = requests.get(f"{url}/{task_id}", headers=headers, timeout=30)
        assert answer.status_code == 200
        return dict(answer.json())

    assert follow(lambda: retrieve()["status"]) == ["queued", "running", "succeeded"]
    task = retrieve()
    assert task["duration"] == 6
    assert task["content"]["video_url"]


def test_upstream_hang_becomes_504_without_sdk_retry(
    stack: Stack, gateway: Process, sdk: Ark
) -> None:
    stack.sim("PATCH", "/_sim/config", json={"hang_seconds": 4})  # the knob stays: tests use 4
    creates_before = stack.sim("GET", "/_sim/stats")["calls"].get("create", 0)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        sdk.content_generation.tasks.create(
            model=MODEL, content=[{"type": "text", "text": "[sim:hang] fox"}]
        )
    assert getattr(raised.value, "status_code", None) == 504
    assert time.monotonic() - started < 4  # the gateway's 2 s timeout answered, once
    # x-should-retry: false stopped the SDK from sending the create again.
    assert stack.sim("GET", "/_sim/stats")["calls"]["create"] == creates_before + 1


def test_sdk_rate_limit_from_upstream_is_relayed(stack: Stack, gateway: Process) -> None:
    key = stack.new_key(gateway, "limited-user")
    with stack.timings(rate_limit_rate=1.0):
        response = httpx.post(
            f"{gateway.url}/api/v3/contents/generations/tasks",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": MODEL, "content": [{"type": "text", "text": "x"}]},
        )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
