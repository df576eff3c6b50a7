"""Keys, isolation and rejected requests: 401/404 as upstream, nothing written, nothing sent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.simulator.state import SimulatorState
from tests.conftest import Gateway
from tests.helpers import TASKS, body, database_rows


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer sgw-not-a-real-key",
        "Basic dXNlcjpwYXNz",
        "sgw-no-scheme",
    ],
)
async def test_bad_keys_get_401_and_nothing_reaches_upstream(
    gateway: Gateway, sim_state: SimulatorState, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = await database_rows(gateway.app)
    response = await gateway.client.post(TASKS, json=body(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("AuthenticationError", "Unauthorized")
    assert error["message"].endswith(response.headers["x-request-id"])
    assert sum(sim_state.calls.values()) == 0
    assert await database_rows(gateway.app) == before


async def test_revoked_key_stops_working(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    client = gateway.as_user(key)
    assert (await client.get(TASKS)).status_code == 200
    (listed,) = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()
    revoked = await gateway.client.delete(f"/admin/v1/keys/{listed['id']}", headers=admin_headers)
    assert revoked.json()["revoked_at"] is not None
    assert (await client.get(TASKS)).status_code == 401


async def test_revocation_reaches_a_process_with_an_auth_cache_within_a_second(
    make_gateway, admin_headers
) -> None:
    cached = await make_gateway(auth_cache_seconds=1.0)
    admin = await make_gateway()  # a second process sharing the database
    user = await admin.create_user("alice")
    key = await admin.create_key(user["id"])
    client = cached.as_user(key)
    assert (await client.get(TASKS)).status_code == 200
    key_id = (
        await admin.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()[0]["id"]
    await admin.client.delete(f"/admin/v1/keys/{key_id}", headers=admin_headers)
    await asyncio.sleep(1.05)
    assert (await client.get(TASKS)).status_code == 401


async def test_expired_key_and_disabled_user_get_401(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("alice")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = gateway.as_user(await gateway.create_key(user["id"], expires_at=soon))
    assert (await expiring.get(TASKS)).status_code == 200
    await asyncio.sleep(1.1)
    assert (await expiring.get(TASKS)).status_code == 401

    other = gateway.as_user(await gateway.create_key(user["id"]))
    assert (await other.get(TASKS)).status_code == 200
    await gateway.client.patch(
        f"/admin/v1/users/{user['id']}", json={"disabled": True}, headers=admin_headers
    )
    assert (await other.get(TASKS)).status_code == 401


async def test_other_users_task_is_indistinguishable_from_unknown(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    alice = await gateway.user_client("alice")
    bob = await gateway.user_client("bob")
    task_id = (await alice.post(TASKS, json=body())).json()["id"]
    unknown_id = task_id[:-6] + "zzzzzz"
    await bob.get(TASKS)  # bob's first use is recorded; what follows must write nothing
    calls = dict(sim_state.calls)
    before = await database_rows(gateway.app)

    def shape(response, asked_id: str) -> tuple:
        error = response.json()["error"]
        message = error["message"].split(" Request id:")[0].replace(asked_id, "<id>")
        return response.status_code, error["code"], error["type"], error["param"], message

    for method in ("get", "delete"):
        theirs = await getattr(bob, method)(f"{TASKS}/{task_id}")
        random = await getattr(bob, method)(f"{TASKS}/{unknown_id}")
        assert theirs.status_code == 404
        assert shape(theirs, task_id) == shape(random, unknown_id)
    listed = (await bob.get(TASKS, params={"filter.task_ids": task_id})).json()
    assert listed == {"total": 0, "items": []}
    assert dict(sim_state.calls) == calls
    assert await database_rows(gateway.app) == before
    assert (await alice.get(f"{TASKS}/{task_id}")).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        (b"{not json", 400, "InvalidParameter", "body"),
        (b"[1, 2]", 400, "InvalidParameter", "body"),
        (b'{"content": [{"type": "text", "text": "x"}]}', 400, "MissingParameter", "model"),
        (b'{"model": "seedance-1-0-pro-250528"}', 400, "MissingParameter", "content"),
        (
            b'{"model": "seedance-1-0-pro-250528", "content": []}',
            400,
            "InvalidParameter",
            "content",
        ),
        (
            b'{"model": "seedance-1-0-pro-250528", "content": [{"type": "sound"}]}',
            400,
            "InvalidParameter",
            "content",
        ),
        (
            b'{"model": "seedance-1-0-pro-250528", "content": [{"type": "image_url"}]}',
            400,
            "InvalidParameter",
            "content",
        ),
        (
            b'{"model": "no-such-model", "content": [{"type": "text", "text": "x"}]}',
            404,
            "InvalidEndpointOrModel.NotFound",
            "model",
        ),
    ],
)
async def test_bad_bodies_are_rejected_before_anything_is_written(
    gateway: Gateway, sim_state: SimulatorState, payload: bytes, status: int, code: str, param: str
) -> None:
    client = await gateway.user_client("alice")
    before = await database_rows(gateway.app)
    response = await client.post(
        TASKS, content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] == param
    assert sum(sim_state.calls.values()) == 0
    assert await database_rows(gateway.app) == before


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"duration": 13}, "duration"),
        ({"duration": -1}, "duration"),  # 1.0 pro cannot let the model choose
        ({"duration": "5"}, "duration"),
        ({"resolution": "4k"}, "resolution"),
        ({"ratio": "2:1"}, "ratio"),
        ({"ratio": "adaptive"}, "ratio"),  # text-to-video on 1.0 pro
        ({"frames": 30}, "frames"),
        ({"seed": 2**32}, "seed"),
        ({"watermark": "yes"}, "watermark"),
        ({"execution_expires_after": 60}, "execution_expires_after"),
        ({"service_tier": "turbo"}, "service_tier"),
        ({"draft": True}, "draft"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"output_format": "mov"}, "output_format"),
    ],
)
async def test_out_of_range_parameters_name_the_parameter(
    gateway: Gateway, sim_state: SimulatorState, fields: dict, param: str
) -> None:
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "InvalidParameter",
        param,
        "BadRequest",
    )
    assert sum(sim_state.calls.values()) == 0


async def test_body_over_the_cap_is_413_before_parsing(
    make_gateway, sim_state: SimulatorState
) -> None:
    gateway = await make_gateway(max_body_bytes=1024)
    client = await gateway.user_client("alice")
    before = await database_rows(gateway.app)
    big = body("x" * 2000)
    response = await client.post(TASKS, json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "RequestEntityTooLarge"

    async def chunks():  # no Content-Length: the cap must hold while streaming too
        for _ in range(4):
            yield b" " * 512

    streamed = await client.post(
        TASKS, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert sum(sim_state.calls.values()) == 0
    assert await database_rows(gateway.app) == before


async def test_disallowed_model_looks_like_unknown_model(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice", allowed_models=["seedance-1-0-lite-t2v-250428"])
    before = await database_rows(gateway.app)
    response = await client.post(TASKS, json=body())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "InvalidEndpointOrModel.NotFound"
    assert sum(sim_state.calls.values()) == 0
    assert await database_rows(gateway.app) == before
    allowed = await client.post(TASKS, json=body(model="seedance-1-0-lite-t2v-250428"))
    assert allowed.status_code == 200


async def test_keys_are_stored_only_as_hashes(gateway: Gateway) -> None:
    user = await gateway.create_user("alice")
    plaintext = await gateway.create_key(user["id"])
    async with gateway.app.state.resources.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_keys"))).all()
    dump = repr(rows)
    assert plaintext not in dump
    assert plaintext[4:] not in dump
    assert plaintext[:12] in dump  # the display prefix only
