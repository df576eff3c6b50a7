"""Usage reports and the self-service view agree with the ledger they read."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import select

from app.lifespan import poller_for
from app.usage.models import LedgerEntry
from tests.conftest import Gateway
from tests.helpers import TASKS, body


async def _activity(gateway: Gateway) -> None:
    """Two users, three keys, successes, a failure and an open task."""
    alice = await gateway.user_client("alice")
    bob = await gateway.user_client("bob")
    for prompt, client in [
        ("a --dur 5", alice),
        ("b --dur 7", alice),
        ("[sim:fail] c", alice),
        ("d --rs 720p", bob),
        ("e --dur 3", bob),
    ]:
        assert (await client.post(TASKS, json=body(prompt))).status_code == 200
    await poller_for(gateway.app.state.resources).run_once()


async def _ledger_totals(gateway: Gateway) -> tuple[int, int]:
    async with gateway.app.state.resources.sessionmaker() as session:
        tokens, cost = (
            await session.exec(
                select(func.sum(LedgerEntry.tokens), func.sum(LedgerEntry.cost_micros)).where(
                    LedgerEntry.kind == "settle"
                )
            )
        ).one()
    return int(tokens), int(cost)


async def test_report_totals_equal_the_ledger_for_every_grouping(
    gateway: Gateway, admin_headers
) -> None:
    await _activity(gateway)
    tokens, cost = await _ledger_totals(gateway)
    assert tokens > 0 and cost > 0
    for group_by in ("user", "key", "model", "day"):
        report = (
            await gateway.client.get(
                "/admin/v1/usage", params={"group_by": group_by}, headers=admin_headers
            )
        ).json()
        rows = report["rows"]
        assert sum(r["tokens"] for r in rows) == tokens, group_by
        assert sum(r["cost_micros"] for r in rows) == cost, group_by
        assert sum(r["tasks"] for r in rows) == 5
        assert sum(r["settled_tasks"] for r in rows) == 4
        assert sum(r["released_tasks"] for r in rows) == 1
    by_user = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "user"}, headers=admin_headers
        )
    ).json()["rows"]
    assert sorted(r["tasks"] for r in by_user) == [2, 3]
    (day,) = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "day"}, headers=admin_headers
        )
    ).json()["rows"]
    assert day["group"] == datetime.now(UTC).strftime("%Y-%m-%d")


async def test_csv_parses_and_matches_json(gateway: Gateway, admin_headers) -> None:
    await _activity(gateway)
    params = {"group_by": "model"}
    as_json = (
        await gateway.client.get("/admin/v1/usage", params=params, headers=admin_headers)
    ).json()["rows"]
    response = await gateway.client.get(
        "/admin/v1/usage", params={**params, "format": "csv"}, headers=admin_headers
    )
    assert response.headers["content-type"].startswith("text/csv")
    as_csv = list(csv.DictReader(io.StringIO(response.text)))
    assert len(as_csv) == len(as_json)
    for row, expected in zip(as_csv, as_json, strict=True):
        assert row["model"] == expected["group"]
        assert int(row["cost_micros"]) == expected["cost_micros"]
        assert row["cost"] == expected["cost"]
        assert int(row["tokens"]) == expected["tokens"]


async def test_report_range_excludes_other_periods(gateway: Gateway, admin_headers) -> None:
    await _activity(gateway)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = await gateway.client.get(
        "/admin/v1/usage", params={"from": tomorrow}, headers=admin_headers
    )
    assert later.json()["rows"] == []


async def test_open_reservations_are_reported_separately(
    make_gateway, sim_config, admin_headers
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    await client.post(TASKS, json=body(duration=6, ratio="16:9"))
    (row,) = (await gateway.client.get("/admin/v1/usage", headers=admin_headers)).json()["rows"]
    assert (row["open_tasks"], row["reserved_micros"], row["cost_micros"]) == (1, 739_500, 0)


async def test_self_service_shows_own_usage_and_budget_room(
    gateway: Gateway, admin_headers
) -> None:
    await _activity(gateway)
    users = (await gateway.client.get("/admin/v1/users", headers=admin_headers)).json()
    alice = next(u for u in users if u["name"] == "alice")
    await gateway.client.put(
        f"/admin/v1/users/{alice['id']}/budget",
        headers=admin_headers,
        json={"period": "monthly", "limit": "100"},
    )
    client = gateway.as_user(await gateway.create_key(alice["id"]))
    mine = (await client.get("/gateway/v1/usage")).json()
    assert mine["user_id"] == alice["id"]
    assert sum(row["tasks"] for row in mine["usage"]) == 3  # only alice's
    (budget,) = mine["budgets"]
    assert budget["limit_micros"] == 100_000_000
    assert budget["remaining_micros"] == 100_000_000 - budget["spent_micros"]
    assert budget["spent_micros"] == sum(row["cost_micros"] for row in mine["usage"])
    assert (await gateway.client.get("/gateway/v1/usage")).status_code == 401


async def test_report_bounds_take_dates_and_naive_datetimes_as_utc(
    gateway: Gateway, admin_headers
) -> None:
    await _activity(gateway)
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    cases = [
        ({"from": today.isoformat()}, 5),
        ({"to": today.isoformat()}, 0),
        ({"from": f"{today}T00:00:00", "to": tomorrow.isoformat()}, 5),
        ({"from": f"{tomorrow}T00:00:00+00:00"}, 0),
        ({"from": f"{today}T23:59:59-05:00"}, 0),  # that is tomorrow in UTC
    ]
    for params, tasks in cases:
        answer = await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "model", **params}, headers=admin_headers
        )
        assert answer.status_code == 200, (params, answer.text)
        assert sum(row["tasks"] for row in answer.json()["rows"]) == tasks, params
    for param, value in [("from", "yesterday"), ("to", "2026-13-01"), ("from", "1" * 5000)]:
        answer = await gateway.client.get(
            "/admin/v1/usage", params={param: value}, headers=admin_headers
        )
        assert answer.status_code == 400, (param, value, answer.text)
        assert answer.json()["error"]["param"] == param


async def test_reports_name_users_and_keys(gateway: Gateway, admin_headers) -> None:
    await _activity(gateway)
    by_user = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "user"}, headers=admin_headers
        )
    ).json()["rows"]
    assert sorted(row["name"] for row in by_user) == ["alice", "bob"]
    assert all(row["group"].startswith("usr_") for row in by_user)
    by_key = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "key"}, headers=admin_headers
        )
    ).json()["rows"]
    assert sorted(row["user_name"] for row in by_key) == ["alice", "bob"]
    assert all(row["name"].startswith("sgw-") for row in by_key)  # unnamed keys: their prefix
    table = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "key", "format": "csv"}, headers=admin_headers
        )
    ).text
    header, *lines = list(csv.reader(io.StringIO(table)))
    assert header[:4] == ["key", "name", "user_name", "currency"]
    assert sorted(line[2] for line in lines) == ["alice", "bob"]
