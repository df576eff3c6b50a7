"""Rate limits in the real Redis: shared by replicas, and surviving a Redis that goes away."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import Gateway
from tests.helpers import TASKS, body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                return server
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("private redis-server did not start")


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, so stopping it disturbs nothing else."""
    port = _free_port()
    server = _start_redis(port)
    yield port, server
    server.kill()
    server.wait()


async def test_replicas_share_counts_in_redis(make_gateway) -> None:
    prefix = f"sgw-test-{os.getpid()}-{time.monotonic_ns()}"
    replicas = [
        await make_gateway(
            redis_url="redis://127.0.0.1:6379/0",
            redis_key_prefix=prefix,
            create_rate_limit="30/minute",
        )
        for _ in range(2)
    ]
    user = await replicas[0].create_user("alice")
    key = await replicas[0].create_key(user["id"])
    clients = [replica.as_user(key) for replica in replicas]
    answers = await asyncio.gather(*(clients[i % 2].post(TASKS, json=body()) for i in range(80)))
    assert sorted(a.status_code for a in answers) == [200] * 30 + [429] * 50
    ready = (await replicas[1].client.get("/readyz")).json()
    assert ready["checks"]["rate_limits"] == {"backend": "redis"}


async def test_redis_outage_falls_back_without_errors_and_caps_hold(
    make_gateway, sim_config, private_redis
) -> None:
    port, server = private_redis
    sim_config.queued_seconds = 60
    gateway: Gateway = await make_gateway(
        redis_url=f"redis://127.0.0.1:{port}/0",
        max_tasks_in_flight_per_key=3,
        create_rate_limit="1000/minute",
    )
    client = await gateway.user_client("alice")
    assert (await client.post(TASKS, json=body())).status_code == 200
    assert (await gateway.client.get("/readyz")).json()["checks"]["rate_limits"][
        "backend"
    ] == "redis"

    server.kill()
    server.wait()
    answers = [await client.post(TASKS, json=body()) for _ in range(3)]
    answers += [await client.get(TASKS) for _ in range(5)]
    assert all(a.status_code < 500 for a in answers), [a.status_code for a in answers]
    assert [a.status_code for a in answers[:3]] == [200, 200, 429]  # the in-flight cap holds
    assert answers[2].json()["error"]["code"] == "ConcurrencyLimitExceeded.Key"
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 200
    limits = ready.json()["checks"]["rate_limits"]
    assert limits["backend"] == "memory (redis unavailable)" and "redis_error" in limits

    restarted = _start_redis(port)
    try:
        await asyncio.sleep(5.1)  # the breaker's pause
        assert (await client.get(TASKS)).status_code == 200
        assert (await gateway.client.get("/readyz")).json()["checks"]["rate_limits"] == {
            "backend": "redis"
        }
    finally:
        restarted.kill()
        restarted.wait()


async def test_one_slow_redis_reply_does_not_trip_the_breaker(make_gateway, private_redis) -> None:
    port, _ = private_redis
    gateway: Gateway = await make_gateway(
        redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=0.5
    )
    client = await gateway.user_client("alice")
    assert (await client.get(TASKS)).status_code == 200
    admin = redis.Redis(port=port)
    # One call outlasts the timeout; the next one, sent after 0.5 s, waits 0.2 s and succeeds.
    admin.client_pause(700)
    slow = await client.get(TASKS)
    assert slow.status_code == 200
    readiness = (await gateway.client.get("/readyz")).json()["checks"]["rate_limits"]
    assert readiness["backend"] == "redis"

    admin.client_pause(3000)
    answers = [await client.get(TASKS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    readiness = (await gateway.client.get("/readyz")).json()["checks"]["rate_limits"]
    assert readiness["backend"] == "memory (redis unavailable)"
    assert "TimeoutError" in readiness["redis_error"]


async def test_a_redis_that_restarts_empty_hands_out_no_fresh_allowance(
    make_gateway, private_redis
) -> None:
    port, server = private_redis
    gateway: Gateway = await make_gateway(
        redis_url=f"redis://127.0.0.1:{port}/0", create_rate_limit="5/minute"
    )
    client = await gateway.user_client("alice")
    before = [(await client.post(TASKS, json=body())).status_code for _ in range(7)]
    assert before == [200] * 5 + [429] * 2
    server.kill()
    server.wait()
    during = [(await client.post(TASKS, json=body())).status_code for _ in range(5)]
    restarted = _start_redis(port)  # empty: it keeps nothing on disk
    try:
        await asyncio.sleep(5.1)  # the breaker's pause
        after = [(await client.post(TASKS, json=body())).status_code for _ in range(5)]
    finally:
        restarted.kill()
        restarted.wait()
    assert during == [429] * 5 and after == [429] * 5  # 5 in the minute, not 15


async def test_concurrent_bad_keys_get_only_the_allowed_number_of_401s(make_gateway) -> None:
    prefix = f"sgw-test-{os.getpid()}-{time.monotonic_ns()}"
    gateway: Gateway = await make_gateway(
        redis_url="redis://127.0.0.1:6379/0",
        redis_key_prefix=prefix,
        auth_failure_limit="20/minute",
    )
    bad = [gateway.as_user(f"sgw-wrong{i:040d}") for i in range(100)]
    answers = await asyncio.gather(*(client.get(TASKS) for client in bad))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 20 + [429] * 80


async def test_redis_holds_only_the_hits_within_each_window(make_gateway) -> None:
    # A generous limit must not grow Redis by an entry for every request it allowed while
    # traffic keeps the list alive: a window's list holds the hits of its window only. The
    # window is 2 s, so that every step below has 0.6 s or more to spare for slow requests.
    prefix = f"sgw-test-{os.getpid()}-{time.monotonic_ns()}"
    gateway = await make_gateway(
        redis_url="redis://127.0.0.1:6379/0",
        redis_key_prefix=prefix,
        read_rate_limit="1000/2 seconds",
    )
    client = await gateway.user_client("alice")
    burst = await asyncio.gather(*(client.get(TASKS) for _ in range(20)))
    burst_end = time.monotonic()
    assert [answer.status_code for answer in burst] == [200] * 20
    store = redis.Redis(port=6379)
    [window] = store.keys(f"{prefix}:window:*/read/*")
    assert store.llen(window) == 20
    held = []
    # The list never idles for its whole window, so it never expires.
    for wait in (burst_end + 1.0 - time.monotonic(), 1.4, 1.0):
        await asyncio.sleep(wait)
        answer = await client.get(TASKS)
        held.append((store.llen(window), answer.headers["x-ratelimit-remaining"]))
    # The burst is in the window, then leaves it at once (more hits than are popped one by
    # one: cut in one trim); then the hit before the last two is popped.
    assert held == [(21, "979"), (2, "998"), (2, "998")]
