"""The public task API through HTTP: create, retrieve, list, delete, as the upstream behaves."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from sqlalchemy import select, text, update
from sqlmodel import col

from app.db import utcnow
from app.lifespan import poller_for
from app.simulator.state import SimulatorState
from app.tasks.models import Task
from tests.conftest import Gateway
from tests.helpers import MODEL, TASKS, body, database_rows


async def test_create_returns_gateway_id_not_upstream_id(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 200
    task_id = response.json()["id"]
    assert re.fullmatch(r"cgt-\d{14}-[a-z0-9]{20}", task_id)
    assert task_id not in sim_state.tasks
    assert sim_state.calls["create"] == 1
    assert response.headers["x-request-id"]


async def test_task_is_recorded_with_upstream_id_and_cost_parameters(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body("fox --rs 720p --dur 7", ratio="4:3"))).json()[
        "id"
    ]
    async with gateway.app.state.resources.sessionmaker() as session:
        task = (await session.exec(select(Task).where(Task.id == task_id))).one()[0]
    assert task.upstream_id in sim_state.tasks
    assert (task.resolution, task.ratio, task.duration, task.status) == ("720p", "4:3", 7, "queued")


async def test_null_fields_are_absent_and_unknown_fields_pass_through(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    sdk_style = body(
        seed=None,
        resolution=None,
        ratio=None,
        duration=None,
        frames=None,
        callback_url=None,
        future_field={"x": 1},
    )
    response = await client.post(TASKS, json=sdk_style)
    assert response.status_code == 200, response.text
    (sent,) = [task.body for task in sim_state.tasks.values()]
    assert "resolution" not in sent
    # A seed left random is chosen by the gateway (it identifies the task if the create's
    # outcome is ever unknown), within the upstream's range.
    assert isinstance(sent["seed"], int) and 0 <= sent["seed"] < 2**31
    assert sent["future_field"] == {"x": 1}


async def test_retrieve_shows_upstream_object_with_gateway_id(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(duration=6, ratio="16:9"))).json()["id"]
    task = (await client.get(f"{TASKS}/{task_id}")).json()
    assert task["id"] == task_id
    assert task["status"] == "succeeded"
    assert task["model"] == MODEL
    # The seed's own example: 1.0 pro, 1080p 16:9, 6 s.
    assert task["usage"] == {"completion_tokens": 295800, "total_tokens": 295800}
    assert task["content"]["video_url"].startswith("http")
    assert isinstance(task["created_at"], int)


async def test_retrieve_within_staleness_window_does_not_call_upstream(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway(refresh_stale_seconds=0.5)
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "queued"
    assert sim_state.calls["get"] == 0  # the create's answer is itself fresh for the window
    await asyncio.sleep(0.6)
    for _ in range(3):
        assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "queued"
    assert sim_state.calls["get"] == 1  # the first retrieve refreshed; the next two were fresh


async def test_terminal_task_is_served_from_database(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    calls = sim_state.calls["get"]
    for _ in range(3):
        assert (await client.get(f"{TASKS}/{task_id}")).status_code == 200
    assert sim_state.calls["get"] == calls


async def test_failed_task_carries_upstream_error(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body("[sim:fail] a fox"))).json()["id"]
    task = (await client.get(f"{TASKS}/{task_id}")).json()
    assert task["status"] == "failed"
    assert task["error"]["code"] == "OutputVideoSensitiveContentDetected.PolicyViolation"


async def test_list_is_scoped_filtered_and_paged(gateway: Gateway) -> None:
    alice = await gateway.user_client("alice")
    bob = await gateway.user_client("bob")
    alice_ids = [(await alice.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(5)]
    await bob.post(TASKS, json=body("bob's"))
    await alice.post(TASKS, json=body("flex one", service_tier="flex"))

    listed = (await alice.get(TASKS, params={"page_size": 2, "page_num": 1})).json()
    assert listed["total"] == 5  # flex is hidden by default, as upstream; bob's never shown
    assert [item["id"] for item in listed["items"]] == alice_ids[::-1][:2]
    last_page = (await alice.get(TASKS, params={"page_size": 2, "page_num": 3})).json()
    assert [item["id"] for item in last_page["items"]] == alice_ids[:1]

    flex = (await alice.get(TASKS, params={"filter.service_tier": "flex"})).json()
    assert flex["total"] == 1
    picked = (
        await alice.get(f"{TASKS}?filter.task_ids={alice_ids[0]}&filter.task_ids={alice_ids[1]}")
    ).json()
    assert {item["id"] for item in picked["items"]} == set(alice_ids[:2])
    by_model = (await alice.get(TASKS, params={"filter.model": "other-model"})).json()
    assert by_model == {"total": 0, "items": []}


async def test_list_filters_by_status(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    ok_id = (await client.post(TASKS, json=body("fine"))).json()["id"]
    bad_id = (await client.post(TASKS, json=body("[sim:fail] bad"))).json()["id"]
    for task_id in (ok_id, bad_id):
        await client.get(f"{TASKS}/{task_id}")
    failed = (await client.get(TASKS, params={"filter.status": "failed"})).json()
    assert [item["id"] for item in failed["items"]] == [bad_id]


async def test_list_rejects_out_of_range_paging(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    response = await client.get(TASKS, params={"page_size": 501})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter"
    assert response.json()["error"]["param"] == "page_size"


async def test_delete_queued_task_cancels_upstream(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.queued_seconds = 60
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    response = await client.delete(f"{TASKS}/{task_id}")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["content-type"] == "application/json"
    assert sim_state.calls["delete"] == 1
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "cancelled"
    (upstream_task,) = sim_state.tasks.values()
    assert upstream_task.cancelled_at is not None


async def test_delete_running_task_is_409(
    make_gateway, sim_config, sim_state: SimulatorState
) -> None:
    sim_config.running_seconds = 60
    gateway = await make_gateway()
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    response = await client.delete(f"{TASKS}/{task_id}")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "Conflict"
    assert sim_state.calls["delete"] == 0
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "running"


async def test_delete_finished_task_hides_it(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    assert (await client.delete(f"{TASKS}/{task_id}")).json() == {}
    assert (await client.get(f"{TASKS}/{task_id}")).status_code == 404
    assert (await client.get(TASKS)).json()["total"] == 0
    assert (await client.delete(f"{TASKS}/{task_id}")).status_code == 404


async def test_idempotency_key_replays_the_same_task(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    headers = {"Idempotency-Key": "order-42"}
    first = (await client.post(TASKS, json=body(), headers=headers)).json()["id"]
    sdk_style = {**body(), "seed": None, "ratio": None}  # the same request, with nulls
    second = (await client.post(TASKS, json=sdk_style, headers=headers)).json()["id"]
    assert first == second
    assert sim_state.calls["create"] == 1


async def test_concurrent_creates_with_one_idempotency_key_make_one_task(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    """Creates racing with the same key: one records the task, the others replay it or hear
    that it is in progress (409), never a 500 from the unique index they run into."""
    client = await gateway.user_client("alice")
    headers = {"Idempotency-Key": "order-race"}
    answers = await asyncio.gather(
        *(client.post(TASKS, json=body(), headers=headers) for _ in range(12))
    )
    assert {answer.status_code for answer in answers} <= {200, 409}, [a.text for a in answers]
    conflicts = [answer.json()["error"]["code"] for answer in answers if answer.status_code == 409]
    assert set(conflicts) <= {"IdempotencyKeyInUse"}
    assert len({answer.json()["id"] for answer in answers if answer.status_code == 200}) == 1
    assert sim_state.calls["create"] == 1


async def test_idempotency_key_with_another_body_is_422_and_writes_nothing(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    headers = {"Idempotency-Key": "order-43"}
    assert (await client.post(TASKS, json=body("a fox"), headers=headers)).status_code == 200
    before = await database_rows(gateway.app)
    other = await client.post(TASKS, json=body("a cat"), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "IdempotencyKeyReused"
    assert other.headers["x-should-retry"] == "false"
    assert await database_rows(gateway.app) == before
    assert sim_state.calls["create"] == 1


async def test_idempotency_keys_expire_after_24_hours(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    headers = {"Idempotency-Key": "daily-report"}
    first = (await client.post(TASKS, json=body(), headers=headers)).json()["id"]
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(Task)
            .where(col(Task.id) == first)
            .values(created_at=utcnow() - timedelta(hours=24, seconds=1))
        )
        await session.commit()
    second = await client.post(TASKS, json=body("another day"), headers=headers)
    assert second.status_code == 200 and second.json()["id"] != first
    assert sim_state.calls["create"] == 2


async def test_idempotency_key_after_an_unknown_outcome_says_pending_then_returns_the_task(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    headers = {"Idempotency-Key": "order-44"}
    request = body("[sim:error-after-create] fox")
    assert (await client.post(TASKS, json=request, headers=headers)).status_code == 502
    retry = await client.post(TASKS, json=request, headers=headers)
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "IdempotencyKeyOutcomePending"
    assert "new key" not in retry.json()["error"]["message"]
    await poller_for(gateway.app.state.resources).run_once()  # adopts the upstream task
    later = await client.post(TASKS, json=request, headers=headers)
    assert later.status_code == 200
    assert (await client.get(f"{TASKS}/{later.json()['id']}")).json()["status"] == "succeeded"
    assert sim_state.calls["create"] == 1


async def test_draft_task_reference_is_translated_to_upstream_id(
    gateway: Gateway, sim_state: SimulatorState
) -> None:
    client = await gateway.user_client("alice")
    draft = (
        await client.post(TASKS, json=body(model="seedance-1-5-pro-251215", draft=True))
    ).json()["id"]
    final = await client.post(
        TASKS,
        json={
            "model": "seedance-1-5-pro-251215",
            "content": [{"type": "draft_task", "draft_task": {"id": draft}}],
        },
    )
    assert final.status_code == 200, final.text
    sent = [task.body for task in sim_state.tasks.values()][-1]
    upstream_draft_id = sent["content"][0]["draft_task"]["id"]
    assert upstream_draft_id != draft and upstream_draft_id in sim_state.tasks


async def test_client_request_id_is_echoed(gateway: Gateway) -> None:
    client = await gateway.user_client("alice")
    response = await client.get(
        TASKS, headers={"X-Client-Request-Id": "202611241445367MOlwToAb6FCoHLe1Z5Y"}
    )
    assert response.headers["x-client-request-id"] == "202611241445367MOlwToAb6FCoHLe1Z5Y"


async def test_finished_tasks_are_served_from_memory_for_a_second_and_only_to_their_owner(
    make_gateway, sim_state: SimulatorState
) -> None:
    first = await make_gateway(auth_cache_seconds=1.0)
    second = await make_gateway(auth_cache_seconds=1.0)
    alice_user = await first.create_user("alice")
    alice_key = await first.create_key(alice_user["id"])
    alice = [replica.as_user(alice_key) for replica in (first, second)]
    bob = second.as_user(await second.create_key((await second.create_user("bob"))["id"]))
    task_id = (await alice[0].post(TASKS, json=body())).json()["id"]
    assert (await alice[1].get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    # Deleted through the first replica; the second still answers from memory...
    assert (await alice[0].delete(f"{TASKS}/{task_id}")).status_code == 200
    assert (await alice[0].get(f"{TASKS}/{task_id}")).status_code == 404
    assert (await alice[1].get(f"{TASKS}/{task_id}")).status_code == 200
    assert (await bob.get(f"{TASKS}/{task_id}")).status_code == 404  # never to another user
    # ...shows as deleted within the second the cache promises.
    await asyncio.sleep(1.05)
    assert (await alice[1].get(f"{TASKS}/{task_id}")).status_code == 404
    assert sim_state.calls["get"] <= 1  # finished at once: at most the first refresh asked


async def test_a_delete_drops_the_cached_answer_at_once(make_gateway) -> None:
    gateway = await make_gateway(auth_cache_seconds=1.0)
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    assert (await client.get(f"{TASKS}/{task_id}")).status_code == 200
    assert (await client.delete(f"{TASKS}/{task_id}")).status_code == 200
    assert (await client.get(f"{TASKS}/{task_id}")).status_code == 404


async def test_the_id_stores_relaxed_commit_ends_with_its_transaction(make_pg_gateway) -> None:
    """Storing a create's upstream id does not wait for its WAL flush; every later statement
    on that connection, the next create's task and reservation among them, still does."""
    gateway = await make_pg_gateway()
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body())).json()["id"] for _ in range(3)]
    for task_id in ids:  # each stored: visible at once
        assert (await client.get(f"{TASKS}/{task_id}")).status_code == 200
    statements = gateway.app.state.resources.statements
    setting = text("SELECT current_setting('synchronous_commit')")
    assert await statements.scalar(setting, {}) == "on"
