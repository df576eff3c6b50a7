"""The gateway's create queue (opt-in): when every account is full a create waits, its client
holding a `queued` task id at once; the poller sends waiting creates fairly between users as
room appears. The queue is bounded, a wait times out, and a waiting task can be cancelled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.lifespan import poller_for
from app.simulator.state import SimConfig, SimulatorState
from tests.conftest import Gateway
from tests.helpers import TASKS, body, database_rows

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


async def queue_gateway(
    make_gateway: Any, admin_headers: dict[str, str], **settings: Any
) -> Gateway:
    gateway: Gateway = await make_gateway(**settings)
    full = await gateway.client.patch(  # the account's queue, as the gateway knows it
        "/admin/v1/accounts/default", headers=admin_headers, json={"max_queued": 2}
    )
    assert full.status_code == 200, full.text
    await gateway.app.state.resources.upstream.refresh(force=True)
    return gateway


async def ledger_kinds(gateway: Gateway, task_id: str) -> list[str]:
    rows = (await database_rows(gateway.app))["ledger"]
    return sorted(row[2] for row in rows if task_id in row)


async def test_waiting_creates_go_out_fairly_as_room_appears(
    make_gateway, admin_headers, sim_config: SimConfig, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds, sim_config.running_seconds, sim_config.max_queued = 0.4, 0.4, 2
    gateway = await queue_gateway(make_gateway, admin_headers, create_queue_size=10)
    alice, bob = await gateway.user_client("alice"), await gateway.user_client("bob")
    ids = {}
    for name, client, count in (("alice", alice, 4), ("bob", bob, 2)):
        for n in range(count):
            answer = await client.post(TASKS, json=body(f"{name} {n}"))
            assert answer.status_code == 200, answer.text
            ids[f"{name}{n}"] = answer.json()["id"]
    assert sim_state.calls["create"] == 2  # alice0 and alice1; the other four wait
    waiting = await alice.get(f"{TASKS}/{ids['alice3']}")
    assert waiting.json()["status"] == "queued"  # what its client sees while it waits

    poller = poller_for(gateway.app.state.resources)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await poller.run_once()
        statuses = {
            name: (await (alice if name[0] == "a" else bob).get(f"{TASKS}/{task_id}")).json()[
                "status"
            ]
            for name, task_id in ids.items()
        }
        if set(statuses.values()) <= TERMINAL:
            break
        await asyncio.sleep(0.2)
    assert set(statuses.values()) == {"succeeded"}, statuses
    # Round-robin by user: bob's first waiting create goes out before alice's second one,
    # although alice's was made earlier.
    sent = []
    for name, task_id in ids.items():
        detail = await gateway.client.get(f"/admin/v1/tasks/{task_id}", headers=admin_headers)
        upstream = sim_state.find(detail.json()["upstream_id"])
        sent.append((upstream.created_at, name))
    order = [name for _, name in sorted(sent)]
    assert order == ["alice0", "alice1", "alice2", "bob0", "alice3", "bob1"], order
    assert sim_state.peak_open <= 2 and sim_state.calls["create_quota_refused"] == 0
    for task_id in ids.values():
        assert await ledger_kinds(gateway, task_id) == ["reserve", "settle"]


async def test_the_queue_is_bounded_a_wait_times_out_and_a_waiting_task_can_be_cancelled(
    make_gateway, admin_headers, sim_config: SimConfig, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60.0  # the first two hold the account for the whole test
    gateway = await queue_gateway(
        make_gateway, admin_headers, create_queue_size=2, create_queue_timeout_seconds=1.0
    )
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {n}"))).json()["id"] for n in range(4)]
    before = await database_rows(gateway.app)
    refused = await client.post(TASKS, json=body("one too many"))
    assert refused.status_code == 503  # the account is full and so is the queue
    assert refused.json()["error"]["code"] == "ServiceUnavailable.NoUpstreamAccount"
    assert await database_rows(gateway.app) == before  # nothing written

    cancelled = await client.delete(f"{TASKS}/{ids[2]}")
    assert cancelled.status_code == 200 and cancelled.json() == {}
    assert (await client.get(f"{TASKS}/{ids[2]}")).json()["status"] == "cancelled"
    assert await ledger_kinds(gateway, ids[2]) == ["release", "reserve"]

    await asyncio.sleep(1.1)
    await poller_for(gateway.app.state.resources).run_once()
    timed_out = (await client.get(f"{TASKS}/{ids[3]}")).json()
    assert timed_out["status"] == "failed" and timed_out["error"]["code"] == "QueueTimeout"
    assert await ledger_kinds(gateway, ids[3]) == ["release", "reserve"]
    assert sim_state.calls["create"] == 2  # neither waiting create was ever sent
