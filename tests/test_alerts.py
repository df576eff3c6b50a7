"""Alerts: a budget crossing its thresholds, and the upstream refusing the master key, reach
the webhook once per period, retried until the receiver takes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from app.alerts import Alert
from app.db import utcnow
from app.lifespan import poller_for
from tests.conftest import Gateway, gateway_settings
from tests.helpers import TASKS, body
from tests.test_callbacks import HOOK, Receiver


async def test_budget_thresholds_alert_once_each_per_period(make_gateway, admin_headers) -> None:
    receiver = Receiver()
    gateway: Gateway = await make_gateway(callbacks=receiver.transport(), alert_webhook_url=HOOK)
    user = await gateway.create_user("alice")
    client = gateway.as_user(await gateway.create_key(user["id"]))
    first = (await client.post(TASKS, json=body())).json()["id"]
    await client.get(f"{TASKS}/{first}")
    usage = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "user"}, headers=admin_headers
        )
    ).json()
    per_task = usage["rows"][0]["tokens"]  # what one task costs, settled
    budget = {"period": "monthly", "limit_tokens": per_task * 4, "alert_percents": [50, 75]}
    answer = await gateway.client.put(
        f"/admin/v1/users/{user['id']}/budget", json=budget, headers=admin_headers
    )
    assert answer.json()["alert_percents"] == [50, 75]
    poller = poller_for(gateway.app.state.resources)

    receiver.answer = 503  # the first delivery fails: it is retried later
    for _ in range(2):  # 2 and 3 of 4 tasks: past 50% and then 75%
        await client.post(TASKS, json=body())
    await poller.run_once()
    assert receiver.received and all(hook["text"] for hook in receiver.received)
    receiver.received.clear()
    receiver.answer = 200
    await _make_due(gateway)
    await poller.run_once()
    await client.post(TASKS, json=body())  # 4 of 4: no new threshold
    await poller.run_once()
    texts = sorted(hook["text"] for hook in receiver.received)
    assert len(texts) == 2
    assert "passed 50%" in texts[0] and "passed 75%" in texts[1]
    assert all(f"user:{user['id']}" in text for text in texts)


async def test_the_master_key_refused_alerts_at_most_hourly(make_gateway, sim_config) -> None:
    receiver = Receiver()
    gateway: Gateway = await make_gateway(callbacks=receiver.transport(), alert_webhook_url=HOOK)
    client = await gateway.user_client("alice")
    sim_config.api_key = "the-upstream-rotated-it"
    for _ in range(3):
        assert (await client.post(TASKS, json=body())).status_code == 502
    await poller_for(gateway.app.state.resources).run_once()
    (alert,) = receiver.received
    assert "refused the gateway's master key" in alert["text"]
    assert "the-upstream-rotated-it" not in alert["text"]


async def _make_due(gateway: Gateway) -> None:
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(update(Alert).values(next_attempt_at=utcnow()))
        await session.commit()


def test_the_webhook_must_be_an_http_url() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_ALERT_WEBHOOK_URL"):
        gateway_settings("sqlite+aiosqlite://", alert_webhook_url="file:///etc/passwd")
