"""Exact video billing through HTTP: the price matrix, reservations the upstream cannot exceed,
overage, quotes, plans and charges, against the simulator's own usage tables."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest

from app.lifespan import poller_for
from app.simulator.state import SimConfig, SimulatorState
from tests.conftest import MASTER_KEY, Gateway
from tests.helpers import TASKS, database_rows

V20 = "dreamina-seedance-2-0-260128"
V15 = "seedance-1-5-pro-251215"
QUOTE = "/gateway/v1/quote"
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


@pytest.fixture
def sim_config() -> SimConfig:
    """Tasks take about a second and a half, each its own time: clients poll while they move."""
    return SimConfig(api_key=MASTER_KEY, queued_seconds=0.5, running_seconds=1.0, timing_jitter=0.3)


def video(url: str, seconds: float | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"url": url}
    if seconds is not None:
        ref["duration"] = seconds
    return {"type": "video_url", "video_url": ref, "role": "reference_video"}


def create(model: str, *extra_content: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": model, "content": [{"type": "text", "text": "fox"}, *extra_content], **fields}


async def finish(client: httpx.AsyncClient, task_ids: list[str], timeout: float = 30) -> None:
    """Poll each task until it has ended (as a client does while tasks move)."""
    deadline = time.monotonic() + timeout
    waiting = set(task_ids)
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} tasks still open"
        answers = await asyncio.gather(*(client.get(f"{TASKS}/{t}") for t in waiting))
        waiting = {
            t for t, a in zip(waiting, answers, strict=True) if a.json()["status"] not in TERMINAL
        }
        if waiting:
            await asyncio.sleep(0.2)


async def detail(gateway: Gateway, task_id: str, admin_headers: dict[str, str]) -> dict[str, Any]:
    answer = await gateway.client.get(f"/admin/v1/tasks/{task_id}", headers=admin_headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def rows(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in found["ledger"]}


def billed(sim_state: SimulatorState) -> dict[str, int]:
    return {t["id"]: t["billed_tokens"] for t in sim_state.billing(time.time())}


async def admin_call(
    gateway: Gateway, headers: dict[str, str], method: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """An admin request that must succeed; its JSON answer."""
    answer = await gateway.client.request(method, path, json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def cost(tokens: int, micros_per_million: int) -> int:
    return (tokens * micros_per_million + 500_000) // 1_000_000


# The test's own reading of the price rule (not the gateway's code): of the rows matching every
# named dimension, the most specific, then the newest.
def expected_price(prices: list[dict[str, Any]], dims: dict[str, str]) -> dict[str, Any]:
    names = ("resolution", "video_input", "audio", "draft")
    matching = [p for p in prices if all(p[n] in ("*", dims[n]) for n in names)]
    return max(matching, key=lambda p: (sum(p[n] != "*" for n in names), p["effective_from"]))


def grid() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """Each model × resolution × (fixed or model-chosen shape) × audio × draft × video input."""
    models = {
        "seedance-1-0-lite-t2v-250428": (("480p", "720p", "1080p"), [{"duration": 12}]),
        "seedance-1-0-lite-i2v-250428": (("720p",), [{"duration": 2}]),
        "seedance-1-0-pro-250528": (("480p", "1080p"), [{"duration": 6}, {"frames": 121}]),
        "seedance-1-0-pro-fast-251015": (("720p",), [{"frames": 29}]),
        V15: (("480p", "720p", "1080p"), [{"duration": 4}, {"duration": -1}]),
        V20: (("480p", "720p", "1080p", "4k"), [{"duration": 5}, {"duration": -1}]),
        "dreamina-seedance-2-0-fast-260128": (("480p", "720p"), [{"duration": 4}]),
        "dreamina-seedance-2-0-mini-260615": (("720p",), [{"duration": 15}]),
        "dreamina-seedance-2-5-260628": (("720p", "1080p"), [{"duration": 6}]),
    }
    cases = []
    for model, (resolutions, lengths) in models.items():
        audio = [{}] if model.startswith("seedance-1-0") else [{}, {"generate_audio": False}]
        draft = [{"draft": True}] if model in (V15, "dreamina-seedance-2-5-260628") else []
        videos: list[list[dict[str, Any]]] = [[]]
        if "dreamina" in model:  # 14 s really, declared exactly; 3 + 9 s, not declared
            exact = [video("https://media.test/a-14s.mp4", 14)]
            unsaid = [video("https://media.test/b-3s.mp4"), video("https://media.test/c-9s.mp4")]
            videos += [exact, unsaid]
        for resolution in resolutions:
            for length in lengths:
                for extra in [*audio, *draft]:
                    if extra.get("draft") and resolution != "480p":
                        continue
                    for clips in videos:
                        fields = {"resolution": resolution, "ratio": "16:9", **length, **extra}
                        cases.append((model, fields, clips))
        cases.append((model, {"ratio": "adaptive"}, []))
    return cases


async def test_every_model_settles_what_the_simulator_bills_at_the_matching_price(
    gateway: Gateway, sim_state: SimulatorState, admin_headers
) -> None:
    client = await gateway.user_client("alice")
    cases = grid()
    assert len(cases) > 100
    made: list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = []
    for start in range(0, len(cases), 60):  # the account queues 120 at most
        batch = cases[start : start + 60]
        for model, fields, clips in batch:
            content = [*clips]
            if fields.get("ratio") == "adaptive":
                content.append({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
            answer = await client.post(TASKS, json=create(model, *content, **fields))
            assert answer.status_code == 200, (model, fields, answer.text)
            made.append((answer.json()["id"], model, fields, clips))
        await finish(client, [task_id for task_id, *_ in made[start:]])

    upstream = billed(sim_state)
    price_lists: dict[str, list[dict[str, Any]]] = {}
    for task_id, model, fields, clips in made:
        found = await detail(gateway, task_id, admin_headers)
        ledger = rows(found)
        settled, reserved = ledger["settle"], ledger["reserve"]
        assert settled["tokens"] == upstream[found["upstream_id"]], (model, fields, clips)
        assert settled["tokens"] <= reserved["tokens"], (model, fields, clips)
        if model not in price_lists:
            listed = await gateway.client.get(
                "/admin/v1/prices", params={"model": model}, headers=admin_headers
            )
            price_lists[model] = [p for p in listed.json() if p["service_tier"] == "default"]
        dims = {
            "resolution": fields.get("resolution") or found["resolution"],
            "video_input": "yes" if clips else "no",
            "audio": "off"
            if model.startswith("seedance-1-0") or fields.get("generate_audio") is False
            else "on",
            "draft": "yes" if fields.get("draft") else "no",
        }
        price = expected_price(price_lists[model], dims)
        assert settled["price_id"] == price["id"] == found["price_id"], (model, fields, clips)
        assert settled["cost_micros"] == cost(settled["tokens"], price["micros_per_million_tokens"])


async def test_specific_prices_win_and_a_quote_says_which(gateway: Gateway, admin_headers) -> None:
    client = await gateway.user_client("alice")
    plain = (await client.post(QUOTE, json=create(V20, resolution="720p"))).json()
    hd = (await client.post(QUOTE, json=create(V20, resolution="1080p"))).json()
    both = (
        await client.post(
            QUOTE, json=create(V20, video("https://m.test/x.mp4", 5), resolution="1080p")
        )
    ).json()
    silent = (await client.post(QUOTE, json=create(V15, generate_audio=False))).json()
    loud = (await client.post(QUOTE, json=create(V15))).json()
    assert plain["breakdown"]["price_per_million_tokens"] == "7"
    assert hd["breakdown"]["price_per_million_tokens"] == "7.6"
    assert both["breakdown"]["price_per_million_tokens"] == "4.6"
    assert (silent["breakdown"]["price_per_million_tokens"], silent["breakdown"]["audio"]) == (
        "1.2",
        "off",
    )
    assert loud["breakdown"]["price_per_million_tokens"] == "2.4"
    assert plain["breakdown"]["price_approximate"] is True  # seeded from public figures
    # A row of their own for 720p + video input beats the model's row for video input alone.
    added = await gateway.client.post(
        "/admin/v1/prices",
        headers=admin_headers,
        json={
            "model": V20,
            "resolution": "720p",
            "video_input": "yes",
            "price_per_million_tokens": "3",
        },
    )
    assert added.status_code == 201, added.text
    mine = (await client.post(QUOTE, json=create(V20, video("https://m.test/x.mp4", 5)))).json()
    assert (mine["price_id"], mine["breakdown"]["price_per_million_tokens"]) == (
        added.json()["id"],
        "3",
    )


async def test_a_quote_is_the_create_s_reservation_and_writes_nothing(
    gateway: Gateway, sim_state: SimulatorState, admin_headers
) -> None:
    client = await gateway.user_client("alice")
    clip = video("https://m.test/clip.mp4", 10.5)
    request = create(V20, clip, resolution="1080p", ratio="16:9", duration=5)
    await client.post(QUOTE, json=request)  # the key's first use is recorded (last_used_at)
    before = await database_rows(gateway.app)
    quoted = await client.post(QUOTE, json=request)
    assert quoted.status_code == 200, quoted.text
    assert await database_rows(gateway.app) == before and sim_state.calls["create"] == 0
    quote = quoted.json()
    # 1080p 16:9 is 1920×1080; 5 s out (121 frames) + 11 s in (264): W×H×385/1024.
    breakdown = quote["breakdown"]
    assert (breakdown["input_video_seconds"], breakdown["output_frames"]) == (11, 121)
    assert quote["estimated_tokens"] == 1920 * 1080 * (121 + 264) // 1024
    short = create(V20, video("https://m.test/clip.mp4", 2), resolution="1080p", duration=8)
    minimum = (await client.post(QUOTE, json=short)).json()["breakdown"]
    assert minimum["input_frames"] == 192  # 2.0's minimum: the input bills as long as the output
    task_id = (await client.post(TASKS, json=request)).json()["id"]
    reserve = rows(await detail(gateway, task_id, admin_headers))["reserve"]
    assert reserve["tokens"] == quote["estimated_tokens"]
    assert reserve["price_id"] == quote["price_id"]
    assert Decimal(quote["estimated_cost"]) == Decimal(reserve["cost_micros"]) / 1_000_000

    bad = [
        {"model": V20},
        create("no-such-model"),
        create(V20, duration=99),
        create("seedance-1-0-pro-250528", video("https://m.test/x.mp4")),  # no video input
        create(V20, video("https://m.test/x.mp4", 10), video("https://m.test/y.mp4", 6)),  # 16 s
        create(V20, video("https://m.test/x.mp4", "ten")),
        create(V15, draft=True, resolution="720p"),
    ]
    for wrong in bad:
        before = await database_rows(gateway.app)
        as_quote, as_create = (
            await client.post(QUOTE, json=wrong),
            await client.post(TASKS, json=wrong),
        )
        assert as_quote.status_code == as_create.status_code and 400 <= as_quote.status_code < 500
        assert as_quote.json()["error"]["code"] == as_create.json()["error"]["code"], wrong
        assert await database_rows(gateway.app) == before
    assert sim_state.calls["create"] == 1


async def test_an_understated_input_video_is_an_overage_counted_against_the_budget_at_once(
    gateway: Gateway, admin_headers
) -> None:
    user = await gateway.create_user("alice")
    client = gateway.as_user(await gateway.create_key(user["id"]))
    budget = {"period": "daily", "limit_tokens": 500_000}
    assert (
        await gateway.client.put(
            f"/admin/v1/users/{user['id']}/budget", headers=admin_headers, json=budget
        )
    ).status_code == 200
    # Declared 3 s, but the file lasts 14 s: reserved 900×(121+120) (2.0's minimum counts the
    # input as long as the 5 s output), billed 900×(24·19+1).
    lying = create(
        V20, video("https://media.test/clip-14s.mp4", 3), resolution="720p", ratio="16:9"
    )
    task_id = (await client.post(TASKS, json=lying)).json()["id"]
    await finish(client, [task_id])
    ledger = rows(await detail(gateway, task_id, admin_headers))
    assert (ledger["reserve"]["tokens"], ledger["settle"]["tokens"]) == (216_900, 411_300)

    # Counted at once: 411,300 + the next reservation of 216,900 exceeds 500,000 (had only the
    # reservation counted, 2 × 216,900 would fit).
    refused = await client.post(TASKS, json=lying)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "QuotaExceeded.Budget"
    report = await gateway.client.get(
        "/admin/v1/usage", params={"group_by": "task"}, headers=admin_headers
    )
    (row,) = report.json()["rows"]
    assert row["overage_tokens"] == 411_300 - 216_900
    metrics = (await gateway.client.get("/metrics")).text
    assert f'sgw_ledger_overage_tokens_total{{model="{V20}"}} 194400.0' in metrics


async def test_plans_charge_users_their_own_prices_fixed_at_create(
    gateway: Gateway, admin_headers
) -> None:
    admin = {"headers": admin_headers}
    user = await gateway.create_user("alice")
    client = gateway.as_user(await gateway.create_key(user["id"]))
    call = partial(admin_call, gateway, admin_headers)
    markup = await call("POST", "/admin/v1/plans", {"name": "retail", "multiplier": "1.5"})
    flat = await call("POST", "/admin/v1/plans", {"name": "flat", "multiplier": "1"})
    own = {"model": V20, "plan_id": flat["id"], "currency": "EUR"}
    await call("POST", "/admin/v1/prices", {**own, "price_per_million_tokens": "9"})
    request = create(V20, resolution="720p", ratio="16:9", duration=5)  # 108,900 at 7 USD/M

    plan = f"/admin/v1/users/{user['id']}/plan"
    await call("PUT", plan, {"plan_id": markup["id"]})
    first = (await client.post(TASKS, json=request)).json()["id"]
    await call("PUT", plan, {"plan_id": flat["id"]})
    second = (await client.post(TASKS, json=request)).json()["id"]
    await gateway.client.post(
        "/admin/v1/prices", json={"model": V20, "price_per_million_tokens": "20"}, **admin
    )  # a cost change after both creates
    await finish(client, [first, second])

    one, two = [rows(await detail(gateway, t, admin_headers))["settle"] for t in (first, second)]
    assert (one["cost_micros"], one["currency"]) == (cost(108_900, 7_000_000), "USD")
    assert (one["charge_micros"], one["charge_currency"]) == (1_143_450, "USD")  # 762,300 × 1.5
    assert (two["charge_micros"], two["charge_currency"]) == (cost(108_900, 9_000_000), "EUR")
    report = await gateway.client.get("/admin/v1/usage", params={"group_by": "user"}, **admin)
    by_currency = {r["charge_currency"]: r for r in report.json()["rows"]}
    assert by_currency["USD"]["margin_micros"] == one["charge_micros"] - one["cost_micros"]
    assert by_currency["USD"]["name"] == "alice"
    assert by_currency["EUR"]["margin_micros"] is None  # cost in USD, charge in EUR
    csv = await gateway.client.get(
        "/admin/v1/usage", params={"group_by": "price", "format": "csv"}, **admin
    )
    assert "charge" in csv.text.splitlines()[0] and V20 in csv.text


async def test_a_charge_budget_admits_exactly_what_fits_across_two_replicas(
    make_gateway, sim_config, sim_state: SimulatorState, admin_headers
) -> None:
    sim_config.queued_seconds = 60  # all stay open: their reservations count
    replicas = [await make_gateway(), await make_gateway()]
    user = await replicas[0].create_user("alice")
    key = await replicas[0].create_key(user["id"])
    call = partial(admin_call, replicas[0], admin_headers)
    plan = await call("POST", "/admin/v1/plans", {"name": "x2", "multiplier": 2})
    await call("PUT", f"/admin/v1/users/{user['id']}/plan", {"plan_id": plan["id"]})
    charge = 2 * cost(108_900, 7_000_000)
    limit = {"period": "monthly", "limit_charge_micros": 4 * charge}
    await call("PUT", f"/admin/v1/users/{user['id']}/budget", limit)
    clients = [replica.as_user(key) for replica in replicas]
    request = create(V20, resolution="720p", ratio="16:9", duration=5)
    answers = await asyncio.gather(*(clients[i % 2].post(TASKS, json=request) for i in range(16)))
    assert sorted(a.status_code for a in answers) == [200] * 4 + [429] * 12
    assert sim_state.calls["create"] == 4
    usage = (await clients[0].get("/gateway/v1/usage")).json()
    (budget,) = usage["budgets"]
    assert (budget["charged_micros"], budget["remaining_charge_micros"]) == (4 * charge, 0)


async def test_the_reconciliation_report_flags_usage_that_changed_after_settlement(
    make_gateway, sim_config, admin_headers
) -> None:
    sim_config.usage_revision_seconds = 1.0
    gateway = await make_gateway(usage_reread_seconds=1.5)
    client = await gateway.user_client("alice")
    corrected = {"model": V20, "content": [{"type": "text", "text": "fox [sim:usage-revised]"}]}
    revised = (await client.post(TASKS, json={**corrected, "duration": 5})).json()["id"]
    steady = (await client.post(TASKS, json=create(V20, duration=5))).json()["id"]
    await finish(client, [revised, steady])
    poller = poller_for(gateway.app.state.resources)
    report: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await poller.run_once()
        answer = await gateway.client.get("/admin/v1/usage/reconciliation", headers=admin_headers)
        report = answer.json()
        if report["models"] and report["models"][0]["not_reread_tasks"] == 0:
            break
        await asyncio.sleep(0.3)
    (model,) = report["models"]
    assert (model["settled_tasks"], model["settled_tokens"]) == (2, 2 * 108_900)
    assert model["upstream_tokens"] == 2 * 108_900 + 10_890 and model["changed_tasks"] == 1
    (changed,) = report["changed"]
    assert (changed["task_id"], changed["upstream_tokens"]) == (revised, 119_790)
    bad = await gateway.client.get(
        "/admin/v1/usage/reconciliation", params={"from": "yesterday"}, headers=admin_headers
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
