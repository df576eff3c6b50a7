"""CORS: pages on the configured origins may call the API; no other origin gets CORS headers."""

from __future__ import annotations

from tests.conftest import Gateway
from tests.helpers import TASKS, body

ORIGIN = "https://app.example.com"


async def test_a_preflight_from_a_listed_origin_is_answered_without_credentials(
    make_gateway,
) -> None:
    gateway: Gateway = await make_gateway(cors_origins=[ORIGIN])
    answer = await gateway.client.options(
        TASKS,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= set(allowed.split(", "))
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answer.headers


async def test_answers_to_a_listed_origin_expose_the_headers_clients_need(make_gateway) -> None:
    gateway: Gateway = await make_gateway(cors_origins=[ORIGIN])
    client = await gateway.user_client("alice")
    created = await client.post(TASKS, json=body(), headers={"Origin": ORIGIN})
    assert created.status_code == 200
    assert created.headers["access-control-allow-origin"] == ORIGIN
    exposed = set(created.headers["access-control-expose-headers"].lower().split(", "))
    assert {"x-request-id", "retry-after", "x-ratelimit-remaining", "content-range"} <= exposed
    refused = await gateway.client.get(TASKS, headers={"Origin": ORIGIN})  # no key: 401
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read why


async def test_other_origins_get_no_cors_headers(make_gateway) -> None:
    for settings in ({"cors_origins": [ORIGIN]}, {}):
        gateway: Gateway = await make_gateway(**settings)
        client = await gateway.user_client(f"alice-{len(settings)}")
        for origin in ("https://evil.example.com", "https://app.example.com.evil.net", "null"):
            listed = await client.get(TASKS, headers={"Origin": origin})
            assert listed.status_code == 200
            assert not any(h.startswith("access-control-") for h in listed.headers), origin
            preflight = await gateway.client.options(
                TASKS, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )
            assert "access-control-allow-origin" not in preflight.headers, origin
            assert preflight.status_code in (400, 405), origin
