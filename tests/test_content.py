"""The content endpoint: a task's video and last frame, streamed to its owner with byte ranges."""

from __future__ import annotations

import asyncio

import pytest

from app.simulator.media import media_bytes
from app.simulator.state import SimulatorState
from tests.conftest import Gateway
from tests.helpers import TASKS, body

VIDEO = media_bytes("videos")


def content(task_id: str) -> str:
    return f"{TASKS}/{task_id}/content"


def downloads(sim_state: SimulatorState) -> int:
    return sum(n for name, n in sim_state.calls.items() if name.startswith("download"))


async def test_the_owner_gets_the_video_whole_and_in_ranges(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]

    whole = await client.get(content(task_id))
    assert whole.status_code == 200
    assert whole.content == VIDEO
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(VIDEO))
    assert whole.headers["accept-ranges"] == "bytes"
    etag = whole.headers["etag"]

    size = len(VIDEO)
    ranges = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-64": (size - 64, size - 1),
        f"bytes=10-{size + 500}": (10, size - 1),
    }
    for header, (first, last) in ranges.items():
        part = await client.get(content(task_id), headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert part.content == VIDEO[first : last + 1], header
        assert part.headers["content-length"] == str(last - first + 1), header

    same = await client.get(content(task_id), headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert sim_state.calls["download_with_credentials"] == 0  # the master key stays home


async def test_bad_ranges_are_416_and_fetch_nothing(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    before = downloads(sim_state)
    for header in ("bytes=abc", "bytes=9-1", "bytes=0-1,5-6", "items=0-1", "bytes=-", "bytes"):
        answer = await client.get(content(task_id), headers={"Range": header})
        assert answer.status_code == 416, header
        assert answer.json()["error"]["code"] == "InvalidRange", header
    assert downloads(sim_state) == before

    beyond = await client.get(content(task_id), headers={"Range": f"bytes={len(VIDEO)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(VIDEO)}"
    assert beyond.json()["error"]["type"] == "RangeNotSatisfiable"


async def test_the_last_frame_only_when_the_task_returns_one(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    with_frame = (await client.post(TASKS, json=body(return_last_frame=True))).json()["id"]
    without = (await client.post(TASKS, json=body())).json()["id"]
    frame = await client.get(content(with_frame), params={"variant": "last_frame"})
    assert frame.status_code == 200
    assert frame.headers["content-type"] == "image/jpeg"
    assert frame.content == media_bytes("frames")
    missing = await client.get(content(without), params={"variant": "last_frame"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ContentNotFound"
    unknown = await client.get(content(without), params={"variant": "poster"})
    assert unknown.status_code == 400


async def test_others_unfinished_and_failed_tasks_answer_as_the_task_endpoints_do(
    gateway: Gateway, sim_state: SimulatorState, sim_config
) -> None:
    alice = await gateway.user_client("alice")
    bob = await gateway.user_client("bob")
    finished = (await alice.post(TASKS, json=body())).json()["id"]
    sim_config.failure_rate = 1.0
    failed = (await alice.post(TASKS, json=body("fails"))).json()["id"]
    sim_config.failure_rate = 0.0
    queued = (await alice.post(TASKS, json=body("waits [sim:hold]"))).json()["id"]
    before = downloads(sim_state)

    others = await bob.get(content(finished))
    assert others.status_code == 404
    assert others.json()["error"] == (await bob.get(f"{TASKS}/{finished}")).json()["error"] | {
        "message": others.json()["error"]["message"]  # ends with its own request id
    }
    assert (await bob.get(content("cgt-nope"))).status_code == 404
    waiting = await alice.get(content(queued))
    assert waiting.status_code == 409
    assert waiting.json()["error"]["code"] == "ContentNotReady"
    assert (await alice.get(content(failed))).json()["error"]["code"] == "ContentNotFound"
    assert downloads(sim_state) == before


async def test_an_expired_upstream_link_is_410(
    gateway: Gateway, sim_state: SimulatorState, sim_config
) -> None:
    sim_config.url_ttl_seconds = 0.0
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    await asyncio.sleep(1.05)  # the link's expiry (whole seconds) is behind us
    expired = await client.get(content(task_id))
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "ContentExpired"
    assert sim_state.calls["download_refused"] == 1


@pytest.mark.parametrize("settings", [{"browser_token_secrets": ["s" * 40]}])
async def test_a_browser_token_fetches_its_own_tasks_video_only(make_gateway, settings) -> None:
    gateway: Gateway = await make_gateway(**settings)
    backend = await gateway.user_client("alice")
    token = (await backend.post("/gateway/v1/tokens", json={})).json()["token"]
    browser = gateway.as_user(token)
    mine = (await browser.post(TASKS, json=body())).json()["id"]
    backends = (await backend.post(TASKS, json=body())).json()["id"]
    assert (await browser.get(content(mine))).content == VIDEO
    assert (await browser.get(content(backends))).status_code == 404
