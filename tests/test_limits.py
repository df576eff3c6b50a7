"""Request rates, in-flight caps and auth throttling: 429s in the Ark envelope, before upstream."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.limits.local_windows import LocalWindows
from app.limits.rates import parse_rate
from app.simulator.state import SimulatorState
from tests.conftest import Gateway
from tests.helpers import TASKS, body, database_rows


def assert_limit_429(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, "TooManyRequests")
    assert int(response.headers["retry-after"]) >= 1


async def test_create_rate_per_key_refuses_before_upstream(
    make_gateway, sim_state: SimulatorState
) -> None:
    gateway = await make_gateway(create_rate_limit="3/minute")
    first = await gateway.user_client("alice")
    second = await gateway.user_client("bob")
    answers = [await first.post(TASKS, json=body()) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_limit_429(answers[3], "RateLimitExceeded.KeyCreate")
    assert answers[3].headers["ratelimit-policy"] == '"create";q=3;w=60'
    assert answers[3].headers["x-ratelimit-remaining"] == "0"
    assert answers[0].headers["ratelimit"].startswith('"create";r=2;t=')
    assert sim_state.calls["create"] == 3
    assert (await second.post(TASKS, json=body())).status_code == 200  # another key: unaffected


async def test_reads_count_per_key_whatever_the_task_id(make_gateway) -> None:
    gateway = await make_gateway(read_rate_limit="100/minute")
    client = await gateway.user_client("alice")
    answers = [await client.get(f"{TASKS}/cgt-20260101000000-{i:020d}") for i in range(100)]
    assert {a.status_code for a in answers} == {404}
    assert_limit_429(await client.get(TASKS), "RateLimitExceeded.KeyRead")
    assert (await client.post(TASKS, json=body())).status_code == 200  # creates count apart


async def test_rejected_by_rate_limit_writes_nothing(make_gateway, sim_state) -> None:
    gateway = await make_gateway(create_rate_limit="1/minute")
    client = await gateway.user_client("alice")
    await client.post(TASKS, json=body())
    before = await database_rows(gateway.app)
    assert (await client.post(TASKS, json=body())).status_code == 429
    assert await database_rows(gateway.app) == before


async def test_a_refused_create_rate_outranks_every_other_answer(make_gateway, sim_state) -> None:
    # Whatever the body says, and before a replay is looked up: nothing is read or written.
    gateway = await make_gateway(create_rate_limit="1/minute")
    client = await gateway.user_client("alice")
    made = await client.post(TASKS, json=body(), headers={"Idempotency-Key": "once"})
    assert made.status_code == 200
    before = await database_rows(gateway.app)
    refused = [
        await client.post(
            TASKS, content=b'{"model": ', headers={"Content-Type": "application/json"}
        ),
        await client.post(TASKS, json=body(model="no-such-model")),
        await client.post(TASKS, json=body(), headers={"Idempotency-Key": "once"}),  # a replay
    ]
    for answer in refused:
        assert_limit_429(answer, "RateLimitExceeded.KeyCreate")
    assert await database_rows(gateway.app) == before
    assert sim_state.calls["create"] == 1


async def test_in_flight_cap_per_key_frees_when_a_task_ends(make_gateway, sim_config) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway(max_tasks_in_flight_per_key=3)
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body())).json()["id"] for _ in range(3)]
    assert_limit_429(await client.post(TASKS, json=body()), "ConcurrencyLimitExceeded.Key")
    await client.delete(f"{TASKS}/{ids[0]}")  # cancelled: no longer in flight
    assert (await client.post(TASKS, json=body())).status_code == 200


async def test_in_flight_cap_per_user_spans_its_keys(make_gateway, sim_config) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway(max_tasks_in_flight_per_user=2)
    user = await gateway.create_user("alice")
    keys = [gateway.as_user(await gateway.create_key(user["id"])) for _ in range(2)]
    assert (await keys[0].post(TASKS, json=body())).status_code == 200
    assert (await keys[1].post(TASKS, json=body())).status_code == 200
    assert_limit_429(await keys[1].post(TASKS, json=body()), "ConcurrencyLimitExceeded.User")


async def test_global_cap_bounds_open_upstream_tasks(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    replicas = [await make_gateway(max_tasks_in_flight_global=5) for _ in range(2)]
    clients = [await replicas[i % 2].user_client(f"user-{i}") for i in range(10)]
    answers = await asyncio.gather(
        *(client.post(TASKS, json=body()) for client in clients for _ in range(2))
    )
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 5 and codes.count(429) == 15
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "ConcurrencyLimitExceeded.Gateway"
    }
    assert sim_state.peak_open == 5 and sim_state.calls["create"] == 5


async def test_the_gateway_cap_counts_tasks_opened_and_ended_on_every_path(
    make_gateway, sim_config, admin_headers
) -> None:
    # Two replicas; one user with a budget (its creates take the user's lock first), one without.
    sim_config.queued_seconds = 60
    replicas = [await make_gateway(max_tasks_in_flight_global=4) for _ in range(2)]
    budgeted = await replicas[0].create_user("budgeted")
    budget = {"period": "monthly", "limit_tokens": 10**12}
    path = f"/admin/v1/users/{budgeted['id']}/budget"
    assert (await replicas[0].client.put(path, json=budget, headers=admin_headers)).is_success
    clients = [
        replicas[0].as_user(await replicas[0].create_key(budgeted["id"])),
        await replicas[1].user_client("plain"),
    ]

    async def create_each(times: int) -> list[tuple[httpx.AsyncClient, httpx.Response]]:
        sent = [client for client in clients for _ in range(times)]
        answers = await asyncio.gather(*(client.post(TASKS, json=body()) for client in sent))
        refused = [
            answer.json()["error"]["code"] for answer in answers if answer.status_code == 429
        ]
        assert set(refused) <= {"ConcurrencyLimitExceeded.Gateway"}
        return list(zip(sent, answers, strict=True))

    first = await create_each(4)
    made = [(client, answer.json()["id"]) for client, answer in first if answer.is_success]
    assert len(made) == 4
    for client, task_id in made[:2]:  # cancelled: two places free
        assert (await client.delete(f"{TASKS}/{task_id}")).is_success
    second = await create_each(2)
    assert [answer.status_code for _, answer in second].count(200) == 2
    assert (await clients[1].post(TASKS, json=body())).status_code == 429


async def test_overrides_per_user_and_key(make_gateway, admin_headers) -> None:
    gateway = await make_gateway(create_rate_limit="100/minute")
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    client = gateway.as_user(key)
    patched = await gateway.client.patch(
        f"/admin/v1/users/{user['id']}",
        headers=admin_headers,
        json={"create_rate_limit": "1/minute"},
    )
    assert patched.json()["create_rate_limit"] == "1/minute"
    assert (await client.post(TASKS, json=body())).status_code == 200
    assert_limit_429(await client.post(TASKS, json=body()), "RateLimitExceeded.KeyCreate")
    key_id = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()[0]["id"]
    await gateway.client.patch(
        f"/admin/v1/keys/{key_id}", headers=admin_headers, json={"create_rate_limit": "5/minute"}
    )  # the key's own wins
    assert (await client.post(TASKS, json=body())).status_code == 200
    bad = await gateway.client.patch(
        f"/admin/v1/keys/{key_id}", headers=admin_headers, json={"read_rate_limit": "lots"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "read_rate_limit"


def client_from(gateway: Gateway, address: str, key: str = "", **headers: str) -> httpx.AsyncClient:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app, client=(address, 5555)),
        base_url="http://gateway.test",
        headers={**auth, **headers},
    )


async def test_bad_keys_are_throttled_per_address(make_gateway) -> None:
    gateway = await make_gateway(auth_failure_limit="10/minute")
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    attacker = client_from(gateway, "198.51.100.9")
    guesses = [
        await attacker.get(TASKS, headers={"Authorization": f"Bearer sgw-guess{i}"})
        for i in range(12)
    ]
    assert [g.status_code for g in guesses] == [401] * 10 + [429] * 2
    assert_limit_429(guesses[-1], "RateLimitExceeded.AuthFailures")
    assert (await client_from(gateway, "198.51.100.10", key).get(TASKS)).status_code == 200
    # The throttled address is refused even with a good key until its window passes.
    assert (await client_from(gateway, "198.51.100.9", key).get(TASKS)).status_code == 429


@pytest.mark.parametrize(
    ("peer", "expect_throttled_client"),
    [
        ("10.0.0.5", "203.0.113.7"),  # a trusted proxy: its X-Forwarded-For names the client
        ("192.0.2.44", "192.0.2.44"),  # not trusted: the header is ignored, the peer is the client
    ],
)
async def test_forwarded_for_only_from_trusted_proxies(
    make_gateway, peer: str, expect_throttled_client: str
) -> None:
    gateway = await make_gateway(auth_failure_limit="2/minute", trusted_proxies=["10.0.0.0/8"])
    sender = client_from(gateway, peer, "sgw-bad", **{"X-Forwarded-For": "203.0.113.7"})
    for _ in range(2):
        await sender.get(TASKS)
    assert (await sender.get(TASKS)).status_code == 429
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    direct = client_from(gateway, expect_throttled_client, key)
    assert (await direct.get(TASKS)).status_code == 429
    other = client_from(gateway, "198.51.100.1", key)
    assert (await other.get(TASKS)).status_code == 200


async def test_success_carries_rate_headers(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    response = await client.get(TASKS)
    assert response.headers["ratelimit-policy"].startswith('"read";q=100000;w=60')
    assert int(response.headers["x-ratelimit-remaining"]) == 99_999


async def test_client_refreshes_share_one_upstream_budget(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway(upstream_refresh_rate="2/minute", refresh_stale_seconds=0)
    alice, bob = await gateway.user_client("alice"), await gateway.user_client("bob")
    ids = [(await client.post(TASKS, json=body())).json()["id"] for client in (alice, alice, bob)]
    answers = [
        await client.get(f"{TASKS}/{task_id}")
        for client, task_id in zip((alice, alice, bob), ids, strict=True)
    ]
    # The third retrieve, past the account's budget, answers from the stored copy.
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "queued")] * 3
    assert sim_state.calls["get"] == 2


def test_malformed_rate_settings_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="upstream_refresh_rate"):
        Settings(_env_file=None, upstream_refresh_rate="often")  # type: ignore[call-arg]


async def test_in_process_windows_forget_idle_limits_once_many_exist(monkeypatch) -> None:
    # One window per client address for the failed-key throttle: new addresses must not grow
    # the process for good. Idle windows go once SWEEP_AT exist; live ones stay.
    monkeypatch.setattr("app.limits.local_windows.SWEEP_AT", 50)
    second, minute = parse_rate("1/second")[0], parse_rate("5/minute")[0]
    windows = LocalWindows()
    windows.hit(minute, "live")
    for n in range(49):
        windows.hit(second, f"address-{n}")
    assert not windows.allows(second, "address-0")
    await asyncio.sleep(1.1)
    windows.hit(second, "one-more")
    assert windows.state(minute, "live").count == 1
    assert windows.allows(second, "address-0") and len(windows) == 2


async def test_in_process_windows_hold_only_the_hits_of_their_window() -> None:
    # A generous limit must not make the process keep every hit up to the limit: 1,000 a
    # second, hit 300 times, then once more after that second, holds one hit, not 301.
    per_second = parse_rate("1000/second")[0]
    windows = LocalWindows()
    for _ in range(300):
        windows.hit(per_second, "key")
    assert windows.held() == 300 and windows.state(per_second, "key").count == 300
    await asyncio.sleep(1.05)
    windows.hit(per_second, "key")
    assert windows.held() == 1 and windows.state(per_second, "key").count == 1
