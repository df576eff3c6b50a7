"""Browser tokens: minted with a key, used like it on the task API, never more than it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from typing import Any

import httpx
import jwt

from app.keys.tokens import AUDIENCE, ISSUER, secret_id
from tests.conftest import ADMIN_TOKEN, Gateway
from tests.helpers import MODEL, TASKS, body, database_rows

SECRET = "test-browser-token-secret-0123456789abcdef"
OTHER_MODEL = "seedance-1-0-lite-t2v-250428"


async def minted(client: httpx.AsyncClient, **request: Any) -> str:
    answer = await client.post("/gateway/v1/tokens", json=request or None)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def as_token(gateway: Gateway, token: str) -> httpx.AsyncClient:
    return gateway.as_user(token)


def forged(secret: str, **claims: Any) -> str:
    """A token shaped like the gateway's, signed with `secret`."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "jti": "tok_forged", "iat": now, "exp": now + 600}
    payload.update(claims)
    kid = secret_id(secret.encode())
    return jwt.encode(payload, secret, algorithm="HS256", headers={"kid": kid})


async def key_id_of(gateway: Gateway, user_id: str) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    keys = (await gateway.client.get(f"/admin/v1/users/{user_id}/keys", headers=admin)).json()
    return str(keys[0]["id"])


async def test_a_token_acts_for_its_key_and_sees_only_its_own_tasks(make_gateway) -> None:
    gateway: Gateway = await make_gateway(browser_token_secrets=[SECRET])
    backend = await gateway.user_client("alice")
    answer = await backend.post("/gateway/v1/tokens", json={"ttl_seconds": 600, "label": "tab"})
    assert answer.status_code == 201
    minted_at = time.time()
    expires = answer.json()["expires_at"]
    token = answer.json()["token"]
    browser = as_token(gateway, token)

    by_key = (await backend.post(TASKS, json=body("by the backend"))).json()["id"]
    by_token = (await browser.post(TASKS, json=body("by the page"))).json()["id"]

    assert (await browser.get(f"{TASKS}/{by_token}")).json()["status"] == "succeeded"
    assert (await browser.get(f"{TASKS}/{by_key}")).status_code == 404
    assert [t["id"] for t in (await browser.get(TASKS)).json()["items"]] == [by_token]
    assert {t["id"] for t in (await backend.get(TASKS)).json()["items"]} == {by_key, by_token}
    assert (await browser.delete(f"{TASKS}/{by_key}")).status_code == 404
    assert (await browser.delete(f"{TASKS}/{by_token}")).status_code == 200
    lifetime = datetime.fromisoformat(expires).timestamp() - minted_at
    assert 598 <= lifetime <= 601


async def test_a_token_cannot_mint_read_usage_or_reach_the_admin_api(make_gateway) -> None:
    gateway: Gateway = await make_gateway(browser_token_secrets=[SECRET])
    browser = as_token(gateway, await minted(await gateway.user_client("alice")))
    before = await database_rows(gateway.app)

    again = await browser.post("/gateway/v1/tokens", json={})
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "AccessDenied"
    assert (await browser.get("/gateway/v1/usage")).status_code == 403
    assert (await browser.get("/admin/v1/users")).status_code == 401
    assert await database_rows(gateway.app) == before


async def test_expired_tampered_foreign_and_unsigned_tokens_are_refused(make_gateway) -> None:
    gateway: Gateway = await make_gateway(browser_token_secrets=[SECRET])
    user = await gateway.create_user("alice")
    backend = gateway.as_user(await gateway.create_key(user["id"]))
    key_id = await key_id_of(gateway, user["id"])
    good = await minted(backend)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["max_tasks"] = None
    claims["exp"] += 86_400
    widened = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = jwt.encode({**claims, "sub": key_id}, key=None, algorithm="none")
    now = int(time.time())
    refused = {
        "expired": forged(SECRET, sub=key_id, iat=now - 1000, exp=now - 60),
        "tampered": f"{header}.{widened}.{signature}",
        "foreign": forged("another-gateway-secret-0123456789abcdef", sub=key_id),
        "unsigned": unsigned,
        "wrong audience": forged(SECRET, sub=key_id, aud="somebody-else"),
        "unknown key": forged(SECRET, sub="key_doesnotexist"),
    }
    before = await database_rows(gateway.app)
    for name, token in refused.items():
        browser = as_token(gateway, token)
        answer = await browser.post(TASKS, json=body())
        assert answer.status_code == 401, name
        assert answer.json()["error"]["code"] == "AuthenticationError", name
        assert (await browser.get(TASKS)).status_code == 401, name
    assert await database_rows(gateway.app) == before
    assert (await as_token(gateway, good).get(TASKS)).status_code == 200


async def test_a_token_never_does_more_than_its_key(make_gateway) -> None:
    gateway: Gateway = await make_gateway(browser_token_secrets=[SECRET])
    backend = await gateway.user_client("alice", allowed_models=[MODEL])
    before = await database_rows(gateway.app)
    asks = {
        "a model the key may not use": ({"models": [OTHER_MODEL]}, 403),
        "an unknown model": ({"models": ["no-such-model"]}, 400),
        "too long a life": ({"ttl_seconds": 3601}, 400),
        "a field it does not know": ({"admin": True}, 400),
        "no tasks at all": ({"max_tasks": 0}, 400),
    }
    for name, (request, status) in asks.items():
        answer = await backend.post("/gateway/v1/tokens", json=request)
        assert answer.status_code == status, name
        assert "error" in answer.json(), name
    assert await database_rows(gateway.app) == before

    narrow = as_token(gateway, await minted(await gateway.user_client("bob"), models=[MODEL]))
    refused = await narrow.post(TASKS, json={**body(), "model": OTHER_MODEL})
    assert refused.status_code == 404  # as for a key that may not use the model
    assert (await narrow.post(TASKS, json=body())).status_code == 200


async def test_a_token_makes_at_most_its_allowance_of_tasks(make_gateway) -> None:
    gateway: Gateway = await make_gateway(browser_token_secrets=[SECRET])
    browser = as_token(gateway, await minted(await gateway.user_client("alice"), max_tasks=3))
    answers = await asyncio.gather(*(browser.post(TASKS, json=body(f"fox {i}")) for i in range(8)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * 3 + [403] * 5
    refusal = next(a for a in answers if a.status_code == 403).json()["error"]
    assert refusal["code"] == "TokenTaskLimitExceeded"
    assert (await browser.get(TASKS)).json()["total"] == 3


async def test_revoking_the_key_or_disabling_the_user_stops_its_tokens_within_a_second(
    make_gateway, admin_headers
) -> None:
    cached = await make_gateway(browser_token_secrets=[SECRET], auth_cache_seconds=1.0)
    admin = await make_gateway(browser_token_secrets=[SECRET])  # another replica
    for change in ("revoke", "disable"):
        user = await admin.create_user(f"user-{change}")
        backend = admin.as_user(await admin.create_key(user["id"]))
        browser = as_token(cached, await minted(backend))
        assert (await browser.get(TASKS)).status_code == 200
        if change == "revoke":
            key_id = await key_id_of(admin, user["id"])
            await admin.client.delete(f"/admin/v1/keys/{key_id}", headers=admin_headers)
        else:
            await admin.client.patch(
                f"/admin/v1/users/{user['id']}", json={"disabled": True}, headers=admin_headers
            )
        await asyncio.sleep(1.05)
        assert (await browser.get(TASKS)).status_code == 401, change


async def test_a_new_signing_secret_leaves_live_tokens_working_until_the_old_one_goes(
    make_gateway,
) -> None:
    old, new = SECRET, "the-next-browser-token-secret-0123456789"
    before = await make_gateway(browser_token_secrets=[old])
    backend_key = await before.create_key((await before.create_user("alice"))["id"])
    issued_before = await minted(before.as_user(backend_key))

    rotating = await make_gateway(browser_token_secrets=[new, old])
    issued_after = await minted(rotating.as_user(backend_key))
    assert jwt.get_unverified_header(issued_after)["kid"] == secret_id(new.encode())
    for token in (issued_before, issued_after):
        assert (await as_token(rotating, token).get(TASKS)).status_code == 200

    rotated = await make_gateway(browser_token_secrets=[new])
    assert (await as_token(rotated, issued_before).get(TASKS)).status_code == 401
    assert (await as_token(rotated, issued_after).get(TASKS)).status_code == 200


async def test_a_tokens_requests_count_against_its_keys_limits(make_gateway) -> None:
    gateway: Gateway = await make_gateway(
        browser_token_secrets=[SECRET], create_rate_limit="2/minute"
    )
    backend = await gateway.user_client("alice")
    browser = as_token(gateway, await minted(backend))
    assert (await backend.post(TASKS, json=body())).status_code == 200
    assert (await browser.post(TASKS, json=body())).status_code == 200
    third = await browser.post(TASKS, json=body())
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "RateLimitExceeded.KeyCreate"


async def test_without_any_signing_secret_tokens_are_off(make_gateway) -> None:
    admin = await make_gateway()
    key = await admin.create_key((await admin.create_user("alice"))["id"])
    without = await make_gateway(admin_token=None)  # a replica with neither secret nor admin
    refused = await without.as_user(key).post("/gateway/v1/tokens", json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "BrowserTokensDisabled"


async def test_the_admin_token_signs_when_no_secret_is_set(make_gateway) -> None:
    gateway: Gateway = await make_gateway()
    browser = as_token(gateway, await minted(await gateway.user_client("alice")))
    assert (await browser.post(TASKS, json=body())).status_code == 200
