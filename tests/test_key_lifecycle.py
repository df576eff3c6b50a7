"""A key's life after issue, through HTTP: rotation with a grace period (on two replicas),
expiry set and changed, a per-key network allow-list, and keys a user manages itself."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.keys.service import hash_key
from tests.conftest import ADMIN_TOKEN, Gateway
from tests.helpers import TASKS, body, database_rows

KEYS = "/gateway/v1/keys"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def new_user(gateway: Gateway, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
    user = await gateway.create_user(name)
    if fields:
        changed = await gateway.client.patch(
            f"/admin/v1/users/{user['id']}", json=fields, headers=ADMIN
        )
        assert changed.status_code == 200, changed.text
    return user, await gateway.create_key(user["id"])


async def status(gateway: Gateway, key: str) -> int:
    return (await gateway.as_user(key).get(f"{TASKS}?page_size=1")).status_code


async def test_a_rotated_key_keeps_its_id_limits_and_tasks_and_the_old_one_stops_after_grace(
    make_gateway,
) -> None:
    first: Gateway = await make_gateway()
    second: Gateway = await make_gateway()  # another replica on the same database
    user, old = await new_user(first, "rotating")
    (listed,) = (await first.client.get(f"/admin/v1/users/{user['id']}/keys", headers=ADMIN)).json()
    limited = await first.client.patch(
        f"/admin/v1/keys/{listed['id']}", json={"create_rate_limit": "7/minute"}, headers=ADMIN
    )
    assert limited.status_code == 200
    task_id = (await first.as_user(old).post(TASKS, json=body())).json()["id"]

    rotated = await first.client.post(
        f"/admin/v1/keys/{listed['id']}/rotate", json={"grace_seconds": 2}, headers=ADMIN
    )
    assert rotated.status_code == 200, rotated.text
    shown = rotated.json()
    new = shown["key"]
    assert new != old and shown["id"] == listed["id"] and shown["prefix"] == new[:12]
    assert shown["previous_prefix"] == old[:12] and shown["create_rate_limit"] == "7/minute"
    for replica in (first, second):  # both secrets work during the grace period
        assert await status(replica, old) == 200 and await status(replica, new) == 200
    # The task made with the former secret is the same key's: the new one sees it.
    assert (await second.as_user(new).get(f"{TASKS}/{task_id}")).status_code == 200
    rows = await database_rows(first.app)
    assert old not in repr(rows) and new not in repr(rows)  # hashes only
    audit = repr(rows["audit_log"])  # the rotation is audited, its hashes are not
    assert "previous_valid_until" in audit
    assert hash_key(old) not in audit and hash_key(new) not in audit

    ends = datetime.fromisoformat(shown["previous_valid_until"])
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()))
    stopped_by = time.monotonic() + 1.0  # the auth cache's TTL
    while time.monotonic() < stopped_by and {await status(r, old) for r in (first, second)} != {
        401
    }:
        await asyncio.sleep(0.05)
    assert [await status(r, old) for r in (first, second)] == [401, 401]
    assert [await status(r, new) for r in (first, second)] == [200, 200]

    now = await first.client.post(  # no grace: the former secret stops at once
        f"/admin/v1/keys/{listed['id']}/rotate", json={}, headers=ADMIN
    )
    await asyncio.sleep(1.05)
    assert await status(first, new) == 401 and await status(first, now.json()["key"]) == 200
    gone = await first.client.post(
        "/admin/v1/keys/key_unknown/rotate", json={"grace_seconds": 5}, headers=ADMIN
    )
    assert gone.status_code == 404


async def test_expiry_is_set_changed_listed_and_enforced(gateway: Gateway) -> None:
    user, key = await new_user(gateway, "expiring")
    (listed,) = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=ADMIN)
    ).json()
    path = f"/admin/v1/keys/{listed['id']}"
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    assert (
        await gateway.client.patch(path, json={"expires_at": soon}, headers=ADMIN)
    ).status_code == 200
    expiring = await gateway.client.get("/admin/v1/keys/expiring?within_days=1", headers=ADMIN)
    assert [k["id"] for k in expiring.json()] == [listed["id"]]
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    refused = await gateway.client.patch(path, json={"expires_at": past}, headers=ADMIN)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "expires_at"
    await asyncio.sleep(3.1)
    assert await status(gateway, key) == 401
    assert (
        await gateway.client.patch(path, json={"expires_at": None}, headers=ADMIN)
    ).status_code == 200
    await asyncio.sleep(1.05)
    assert await status(gateway, key) == 200  # never expires now
    expiring = await gateway.client.get("/admin/v1/keys/expiring?within_days=3650", headers=ADMIN)
    assert expiring.json() == []


async def test_a_key_used_outside_its_networks_is_a_failed_authentication(make_gateway) -> None:
    gateway: Gateway = await make_gateway(
        trusted_proxies=["127.0.0.1/32"], auth_failure_limit="3/minute"
    )
    user, key = await new_user(gateway, "fenced")
    (listed,) = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=ADMIN)
    ).json()
    fenced = await gateway.client.patch(
        f"/admin/v1/keys/{listed['id']}",
        json={"allowed_networks": ["10.9.0.0/16"]},
        headers=ADMIN,
    )
    assert fenced.status_code == 200 and fenced.json()["allowed_networks"] == ["10.9.0.0/16"]
    client = gateway.as_user(key)
    inside = {"X-Forwarded-For": "10.9.4.2"}  # through the trusted proxy (the test peer)
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert (await client.get(f"{TASKS}?page_size=1", headers=inside)).status_code == 200
    assert (await client.post(TASKS, json=body(), headers=outside)).status_code == 401
    rows = await database_rows(gateway.app)
    assert not rows["tasks"]  # nothing written for the refused create
    for _ in range(2):
        assert (await client.get(TASKS, headers=outside)).status_code == 401
    # Three failures from that address: now it is throttled, even with another credential.
    throttled = await gateway.as_user("sgw-" + "x" * 43).get(TASKS, headers=outside)
    assert throttled.status_code == 429
    assert (await client.get(f"{TASKS}?page_size=1", headers=inside)).status_code == 200
    bad = await gateway.client.patch(
        f"/admin/v1/keys/{listed['id']}",
        json={"allowed_networks": ["10.9.0.0/33"]},
        headers=ADMIN,
    )
    assert bad.status_code == 400


async def test_a_user_manages_its_own_keys_only_when_allowed_and_within_its_maximum(
    gateway: Gateway,
) -> None:
    _, closed_key = await new_user(gateway, "managed")
    closed = await gateway.as_user(closed_key).get(KEYS)
    assert closed.status_code == 403 and closed.json()["error"]["code"] == "AccessDenied"
    user, key = await new_user(gateway, "self", self_service_keys=True, max_keys=2)
    _, other_key = await new_user(gateway, "other", self_service_keys=True)
    client = gateway.as_user(key)
    (mine,) = (await client.get(KEYS)).json()
    assert mine["user_id"] == user["id"] and "key" not in mine and "key_hash" not in mine
    made = await client.post(KEYS, json={"name": "ci"})
    assert made.status_code == 201 and made.json()["name"] == "ci"
    entries = (await gateway.client.get("/admin/v1/audit?entity=key", headers=ADMIN)).json()
    assert entries[0]["actor"] == f"key:{mine['id']}" and entries[0]["action"] == "create"
    second_key = made.json()["key"]
    assert await status(gateway, second_key) == 200
    before = await database_rows(gateway.app)
    full = await client.post(KEYS, json={"name": "one too many"})
    assert full.status_code == 429 and full.json()["error"]["code"] == "QuotaExceeded.Keys"
    assert await database_rows(gateway.app) == before
    (others,) = (await gateway.as_user(other_key).get(KEYS)).json()
    assert (await client.delete(f"{KEYS}/{others['id']}")).status_code == 404  # not its own
    assert await status(gateway, other_key) == 200
    revoked = await client.delete(f"{KEYS}/{made.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    await asyncio.sleep(1.05)
    assert await status(gateway, second_key) == 401
    assert (await client.post(KEYS, json={})).status_code == 201  # a place is free again
    token = (await client.post("/gateway/v1/tokens", json={})).json()["token"]
    assert (await gateway.as_user(token).get(KEYS)).status_code == 403  # never a browser token
