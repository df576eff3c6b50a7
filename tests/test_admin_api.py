"""The admin API: users and keys, guarded by the admin token."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from tests.helpers import TASKS


async def test_user_lifecycle(gateway: Gateway, admin_headers) -> None:
    created = await gateway.client.post(
        "/admin/v1/users", headers=admin_headers, json={"name": "team-a", "allowed_models": ["m1"]}
    )
    assert created.status_code == 201
    user = created.json()
    assert user["name"] == "team-a" and user["allowed_models"] == ["m1"] and not user["disabled"]

    listed = (await gateway.client.get("/admin/v1/users", headers=admin_headers)).json()
    assert [u["id"] for u in listed] == [user["id"]]
    patched = await gateway.client.patch(
        f"/admin/v1/users/{user['id']}",
        headers=admin_headers,
        json={"disabled": True, "allowed_models": None},
    )
    assert patched.json()["disabled"] is True and patched.json()["allowed_models"] is None
    fetched = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}", headers=admin_headers)
    ).json()
    assert fetched == patched.json()


async def test_duplicate_user_is_409_and_unknown_user_is_404(
    gateway: Gateway, admin_headers
) -> None:
    await gateway.create_user("team-a")
    again = await gateway.client.post(
        "/admin/v1/users", json={"name": "team-a"}, headers=admin_headers
    )
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "Conflict"
    missing = await gateway.client.get("/admin/v1/users/usr_nobody", headers=admin_headers)
    assert missing.status_code == 404


async def test_key_is_shown_once_and_listed_without_secret(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("team-a")
    created = await gateway.client.post(
        f"/admin/v1/users/{user['id']}/keys", json={"name": "ci"}, headers=admin_headers
    )
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("sgw-") and key["key"].startswith(key["prefix"])
    listed = await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    (entry,) = listed.json()
    assert entry["id"] == key["id"] and entry["name"] == "ci"
    assert "key" not in entry and "key_hash" not in entry
    assert key["key"][len(key["prefix"]) :] not in listed.text


async def test_last_used_is_recorded(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("team-a")
    client = gateway.as_user(await gateway.create_key(user["id"]))
    await client.get(TASKS)
    (entry,) = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()
    assert entry["last_used_at"] is not None


@pytest.mark.parametrize(
    "payload",
    [
        {"name": ""},
        {"name": "x", "unknown": 1},
        {"allowed_models": ["m"]},
        {"name": 5},
    ],
)
async def test_bad_user_bodies_are_400(gateway: Gateway, admin_headers, payload) -> None:
    response = await gateway.client.post("/admin/v1/users", json=payload, headers=admin_headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter"


async def test_naive_or_past_expiry_is_400(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("team-a")
    for expires_at in ("2030-01-01T00:00:00", "2020-01-01T00:00:00Z"):
        response = await gateway.client.post(
            f"/admin/v1/users/{user['id']}/keys",
            json={"expires_at": expires_at},
            headers=admin_headers,
        )
        assert response.status_code == 400, expires_at


async def test_user_keys_and_missing_token_cannot_administer(gateway: Gateway) -> None:
    user_client = await gateway.user_client("team-a")
    for client in (user_client, gateway.client):
        response = await client.get("/admin/v1/users")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "Unauthorized"


async def test_admin_api_is_off_without_a_token(make_gateway) -> None:
    gateway = await make_gateway(admin_token=None)
    response = await gateway.client.get("/admin/v1/users", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401
    assert "disabled" in response.json()["error"]["message"]


async def test_unknown_route_and_method_use_the_envelope(gateway: Gateway) -> None:
    missing = await gateway.client.get("/api/v3/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFound"
    wrong = await gateway.client.put(TASKS)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "MethodNotAllowed"


async def test_health_and_readiness(gateway: Gateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    ready = (await gateway.client.get("/readyz")).json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"


async def test_the_admin_token_counts_only_as_a_bearer_token(gateway, admin_headers) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    for header in (token, f"Basic {token}", f"Bearer{token}"):
        answer = await gateway.client.get("/admin/v1/users", headers={"Authorization": header})
        assert answer.status_code == 401, header
    assert (await gateway.client.get("/admin/v1/users", headers=admin_headers)).status_code == 200
