"""The audit log: admin changes through the API and the CLI, with before and after, and none
for an action that failed; never a key or its hash."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import Gateway
from tests.test_cli import run


async def test_admin_api_changes_are_recorded_with_before_and_after(
    gateway: Gateway, admin_headers
) -> None:
    admin = gateway.client
    user = (
        await admin.post("/admin/v1/users", json={"name": "alice"}, headers=admin_headers)
    ).json()
    user_id = user["id"]
    await admin.patch(f"/admin/v1/users/{user_id}", json={"disabled": True}, headers=admin_headers)
    created = await admin.post(f"/admin/v1/users/{user_id}/keys", json={}, headers=admin_headers)
    key, key_id = created.json()["key"], created.json()["id"]
    await admin.delete(f"/admin/v1/keys/{key_id}", headers=admin_headers)
    budget = {"period": "monthly", "limit_tokens": 1000}
    await admin.put(f"/admin/v1/users/{user_id}/budget", json=budget, headers=admin_headers)
    await admin.delete(f"/admin/v1/users/{user_id}/budget", headers=admin_headers)
    taken = await admin.post("/admin/v1/users", json={"name": "alice"}, headers=admin_headers)
    assert taken.status_code == 409  # failed: nothing recorded for it

    answer = await admin.get("/admin/v1/audit", headers=admin_headers)
    entries = list(reversed(answer.json()))
    assert [(e["action"], e["entity"]) for e in entries] == [
        ("create", "user"),
        ("update", "user"),
        ("create", "key"),
        ("update", "key"),
        ("create", "budget"),
        ("delete", "budget"),
    ]
    assert all(e["actor"] == "admin" and e["address"] for e in entries)
    created_user, disabled, _, revoked, _, deleted = entries
    assert created_user["before"] is None and created_user["after"]["name"] == "alice"
    assert disabled["before"]["disabled"] is False and disabled["after"]["disabled"] is True
    assert revoked["entity_id"] == key_id
    assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"]
    assert deleted["before"]["limit_tokens"] == 1000 and deleted["after"] is None
    text = json.dumps(answer.json())
    assert key not in text and "key_hash" not in text

    of_user = await admin.get(
        "/admin/v1/audit", params={"entity": "user", "entity_id": user_id}, headers=admin_headers
    )
    assert [e["action"] for e in of_user.json()] == ["update", "create"]
    user_key = {"Authorization": f"Bearer {key}"}
    assert (await admin.get("/admin/v1/audit", headers=user_key)).status_code == 401


async def test_a_new_price_is_recorded_by_its_id_whatever_its_model_name(
    gateway: Gateway, admin_headers
) -> None:
    # 128 characters, most outside the BMP: longer, in any encoding, than the entry's id column.
    model = "\U0001f3fb\u0110" * 64
    body = {"model": model, "service_tier": "flex", "micros_per_million_tokens": 5}
    created = await gateway.client.post("/admin/v1/prices", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text

    price_id = created.json()["id"]
    found = await gateway.client.get(
        "/admin/v1/audit",
        params={"entity": "price", "entity_id": price_id},
        headers=admin_headers,
    )
    [entry] = found.json()
    assert entry["action"] == "create" and entry["after"]["model"] == model
    assert entry["after"]["id"] == price_id


def test_cli_changes_are_recorded_as_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    assert run("migrate", db=db).returncode == 0
    user = json.loads(run("users", "create", "team-a", db=db).stdout)
    run("keys", "create", "--user", user["id"], db=db)
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT actor, action, entity, after FROM audit_log").fetchall()
    assert [(action, entity) for _, action, entity, _ in rows] == [
        ("create", "user"),
        ("create", "key"),
    ]
    assert all(actor.startswith("cli:") for actor, *_ in rows)
    assert "key_hash" not in rows[1][3]
