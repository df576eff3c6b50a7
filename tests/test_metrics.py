"""`/metrics` after a known sequence of requests: every counter equals what was done."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.simulator.state import SimulatorState
from tests.conftest import Gateway
from tests.helpers import MODEL, TASKS, body

CREATE = {"route": TASKS, "method": "POST"}
RETRIEVE = {"route": TASKS + "/{task_id}", "method": "GET"}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: Any) -> float:
    found = [v for n, have, v in samples(text) if n == name and labels.items() <= have.items()]
    return sum(found)


async def test_counters_equal_what_was_done(make_gateway, sim_state: SimulatorState) -> None:
    gateway: Gateway = await make_gateway(create_rate_limit="4/minute")
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    client = gateway.as_user(key)
    ids = [(await client.post(TASKS, json=body(f"fox {n}"))).json()["id"] for n in range(3)]
    held = (await client.post(TASKS, json=body("waits [sim:hold]"))).json()["id"]
    assert (await client.post(TASKS, json=body())).status_code == 429
    for task_id in ids:
        assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    assert (await client.get(f"{TASKS}/cgt-unknown")).status_code == 404
    assert (await gateway.as_user("sgw-" + "x" * 43).get(f"{TASKS}/{held}")).status_code == 401

    text = (await gateway.client.get("/metrics")).text
    requests = "sgw_requests_total"
    assert value(text, requests, **CREATE, status="200") == 4
    assert value(text, requests, **CREATE, status="429", code="RateLimitExceeded.KeyCreate") == 1
    assert value(text, "sgw_limit_refusals_total", code="RateLimitExceeded.KeyCreate") == 1
    assert value(text, requests, **RETRIEVE, status="200") == 3
    assert value(text, requests, **RETRIEVE, status="404", code="ResourceNotFound") == 1
    assert value(text, requests, **RETRIEVE, status="401", code="AuthenticationError") == 1
    assert value(text, "sgw_request_duration_seconds_count", **CREATE) == 5
    assert value(text, "sgw_upstream_calls_total", call="create", status="200") == 4
    assert value(text, "sgw_upstream_calls_total", call="retrieve", status="200") == 3

    billed = sum(task["billed_tokens"] for task in sim_state.billing(now=1e12))
    assert value(text, "sgw_tasks_finished_total", status="succeeded") == 3
    assert value(text, "sgw_ledger_settled_tokens_total", model=MODEL) == billed
    assert value(text, "sgw_ledger_settled_cost_micros_total") > 0
    assert value(text, "sgw_tasks_open", status="queued") == 1  # the held one
    assert value(text, "sgw_open_reservations") == 1
    assert value(text, "sgw_redis_fallback") == 0
    assert key not in text and key[:12] not in text and "fox" not in text


async def test_a_metrics_token_guards_the_endpoint(make_gateway) -> None:
    gateway: Gateway = await make_gateway(metrics_token="metrics-scraper-token-0123456789")
    assert (await gateway.client.get("/metrics")).status_code == 401
    wrong = {"Authorization": "Bearer metrics-scraper-token-0000000000"}
    assert (await gateway.client.get("/metrics", headers=wrong)).status_code == 401
    right = {"Authorization": "Bearer metrics-scraper-token-0123456789"}
    answer = await gateway.client.get("/metrics", headers=right)
    assert answer.status_code == 200
    assert "sgw_requests_total" in answer.text
