"""A pool of upstream accounts: three simulators, each its own account with its own key and
limits. Creates spread by the policy, later calls stay on their account, failover only when
the account certainly did not create the task, and a refused key leaves rotation and returns."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import httpx
import pytest

from app.lifespan import poller_for
from app.simulator.app import create_simulator_app
from app.simulator.state import SimConfig, SimulatorState
from tests.conftest import ADMIN_TOKEN, MASTER_KEY, Gateway
from tests.helpers import TASKS, body, database_rows
from tests.test_console import signed_in
from tests.test_metrics import value

KEY_B = "sim-b-" + os.urandom(12).hex()
KEY_C = "sim-c-" + os.urandom(12).hex()
V20 = "dreamina-seedance-2-0-260128"


class HostRouter(httpx.AsyncBaseTransport):
    """Sends each request to the simulator app of its host, as DNS would."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


class Sims:
    """Three simulated accounts: a (the settings'), b and c."""

    def __init__(self) -> None:
        slow = {"queued_seconds": 60.0, "running_seconds": 1.0}
        self.config = {
            "a": SimConfig(api_key=MASTER_KEY, **slow),
            "b": SimConfig(api_key=KEY_B, max_queued=6, **slow),
            "c": SimConfig(api_key=KEY_C, **slow),
        }
        self.apps = {name: create_simulator_app(config) for name, config in self.config.items()}

    def state(self, name: str) -> SimulatorState:
        state: SimulatorState = self.apps[name].state.sim
        return state

    def holder(self, upstream_id: str) -> str:
        """Which account holds an upstream task."""
        (name,) = [n for n in self.apps if self.state(n).find(upstream_id) is not None]
        return name


@pytest.fixture
def sims() -> Sims:
    return Sims()


async def pool_gateway(make_gateway: Any, sims: Sims, admin_headers: dict[str, str]) -> Gateway:
    gateway: Gateway = await make_gateway(
        transport=HostRouter({f"{name}.test": app for name, app in sims.apps.items()}),
        upstream_base_url="http://a.test/api/v3",
        account_keys_secret="accounts-" + os.urandom(12).hex(),
    )
    for name, key, extra in (
        ("b", KEY_B, {"weight": 2, "max_queued": 6}),
        ("c", KEY_C, {"models": {V20: "doubao-seedance-2-0-260128"}}),
    ):
        added = await gateway.client.post(
            "/admin/v1/accounts",
            headers=admin_headers,
            json={"id": name, "base_url": f"http://{name}.test/api/v3", "api_key": key, **extra},
        )
        assert added.status_code == 201, added.text
    await gateway.app.state.resources.upstream.refresh(force=True)
    return gateway


async def detail(gateway: Gateway, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    return dict((await gateway.client.get(f"/admin/v1/tasks/{task_id}", headers=headers)).json())


async def test_creates_spread_by_weight_and_every_later_call_stays_on_its_account(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    client = await gateway.user_client("alice")
    ids = [(await client.post(TASKS, json=body(f"fox {i}"))).json()["id"] for i in range(9)]
    placed: Counter[str] = Counter()
    for task_id in ids:
        found = await detail(gateway, task_id, admin_headers)
        holder = sims.holder(found["upstream_id"])
        assert found["account_id"] == {"a": "default"}.get(holder, holder)
        placed[holder] += 1
    # 1.0 pro is not c's: a (weight 1) and b (weight 2) share by open tasks per weight.
    assert placed == {"a": 3, "b": 6}
    gets = {name: sims.state(name).calls["get"] for name in sims.apps}
    await asyncio.gather(*(client.get(f"{TASKS}/{task_id}") for task_id in ids))
    after = {name: sims.state(name).calls["get"] - gets[name] for name in sims.apps}
    assert after == {"a": 3, "b": 6, "c": 0}
    # The poller lists each account's open tasks on that account only.
    await poller_for(gateway.app.state.resources).run_once()
    assert sims.state("c").calls["list"] == 0 and sims.state("b").calls["list"] >= 1
    # c takes 2.0 under its own (Volcengine) name; the client sees the gateway's.
    task_id = (await client.post(TASKS, json=body(model=V20))).json()["id"]
    upstream_id = (await detail(gateway, task_id, admin_headers))["upstream_id"]
    assert sims.state("c").find(upstream_id).body["model"] == "doubao-seedance-2-0-260128"
    assert (await client.get(f"{TASKS}/{task_id}")).json()["model"] == V20
    report = await gateway.client.get(
        "/admin/v1/usage", params={"group_by": "account"}, headers=admin_headers
    )
    tasks = {row["group"]: row["tasks"] for row in report.json()["rows"]}
    assert tasks == {"default": 3, "b": 6, "c": 1}
    metrics = (await gateway.client.get("/metrics")).text
    assert value(metrics, "sgw_account_open_tasks", account="b") == 6
    assert value(metrics, "sgw_account_open_tasks", account="c") == 1
    assert value(metrics, "sgw_account_in_rotation", account="c", state="active") == 1
    assert value(metrics, "sgw_upstream_calls_total", account="b", call="create") == 6
    assert value(metrics, "sgw_upstream_calls_total", account="c", call="retrieve") == 1
    # The console shows each account's load and calls; a task page, the account it ran on.
    console, _ = await signed_in(gateway, ADMIN_TOKEN)
    page = (await console.get("/console/accounts")).text
    b_row = page[page.index('id="account-b"') :].split("</tr>")[0]
    assert '<td class="open">6 / 6</td>' in b_row and "create 6<br>" in b_row
    task_page = (await console.get(f"/console/tasks/{task_id}")).text
    assert '<code id="task-account">c</code>' in task_page
    user_page = await (await gateway.user_client("bob")).get(f"{TASKS}/{task_id}")
    assert user_page.status_code == 404  # another user's task
    own = (await client.get(f"{TASKS}/{task_id}")).json()
    assert "account" not in repr(own) and "doubao" not in repr(own)  # not shown to its user


async def test_a_full_account_hands_the_create_on_and_a_draining_one_takes_none(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    client = await gateway.user_client("alice")
    sims.config["b"].max_queued = 1  # b refuses (429) beyond one; the gateway thinks 6
    answers = [await client.post(TASKS, json=body(f"fox {i}")) for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert sims.state("b").calls["create"] >= 2  # a 429 came back, and was handed on
    assert sum(len(sims.state(n).tasks) for n in sims.apps) == 6
    drain = await gateway.client.patch(
        "/admin/v1/accounts/b", headers=admin_headers, json={"state": "draining"}
    )
    assert drain.status_code == 200 and drain.json()["state"] == "draining"
    await gateway.app.state.resources.upstream.refresh(force=True)
    before = len(sims.state("b").tasks)
    for i in range(4):
        assert (await client.post(TASKS, json=body(f"more {i}"))).status_code == 200
    assert len(sims.state("b").tasks) == before


async def test_a_create_its_key_rate_refuses_takes_no_account_create(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    for account in ("default", "b"):
        patched = await gateway.client.patch(
            f"/admin/v1/accounts/{account}", headers=admin_headers, json={"creates_per_minute": 1}
        )
        assert patched.status_code == 200, patched.text
    await gateway.app.state.resources.upstream.refresh(force=True)
    user = await gateway.create_user("alice")
    alice = gateway.as_user(await gateway.create_key(user["id"]))
    limited = await gateway.client.patch(
        f"/admin/v1/users/{user['id']}",
        headers=admin_headers,
        json={"create_rate_limit": "1/minute"},
    )
    assert limited.status_code == 200, limited.text
    bob = await gateway.user_client("bob")

    async def code(client: httpx.AsyncClient) -> str:
        answer = await client.post(TASKS, json=body())
        return "ok" if answer.status_code == 200 else str(answer.json()["error"]["code"])

    assert await code(alice) == "ok"
    assert await code(alice) == "RateLimitExceeded.KeyCreate"
    assert await code(bob) == "ok"  # the create the refused one did not take
    assert await code(bob) == "RateLimitExceeded.UpstreamAccounts"


async def test_a_refused_key_leaves_rotation_at_once_and_returns_when_it_works(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    client = await gateway.user_client("alice")
    sims.config["b"].api_key = "revoked-" + os.urandom(8).hex()
    answers = [await client.post(TASKS, json=body(f"fox {i}")) for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 6  # no client saw b's refusal
    assert sims.state("b").calls["unauthorized"] == 1  # tried once, then out of rotation
    listed = (await gateway.client.get("/admin/v1/accounts", headers=admin_headers)).json()
    b = next(account for account in listed if account["id"] == "b")
    assert b["healthy"] is False and "refused" in b["health_detail"]
    assert all("api_key" not in account and "key_ciphertext" not in account for account in listed)

    sims.config["b"].api_key = KEY_B  # the account works again: the poller's probe sees it
    await poller_for(gateway.app.state.resources).run_once()
    listed = (await gateway.client.get("/admin/v1/accounts", headers=admin_headers)).json()
    assert next(account for account in listed if account["id"] == "b")["healthy"] is True


async def test_an_ambiguous_create_is_never_sent_to_another_account(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    client = await gateway.user_client("alice")
    for name in ("a", "b"):
        sims.config[name].create_error_rate = 1.0  # 500: the create may have landed
    answer = await client.post(TASKS, json=body("fox"))
    assert answer.status_code == 502 and answer.headers["x-should-retry"] == "false"
    creates = {name: sims.state(name).calls["create"] for name in sims.apps}
    assert sum(creates.values()) == 1 and creates["c"] == 0


async def test_master_keys_are_stored_encrypted_and_never_shown(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    rows = await database_rows(gateway.app)
    text = repr(rows)
    assert KEY_B not in text and KEY_C not in text and MASTER_KEY not in text
    stored = {row[0]: row for row in rows["upstream_accounts"]}
    assert stored["default"][2] is None  # the settings' key stays in the settings
    assert stored["b"][2].startswith("gAAAA")  # a Fernet token
    rotated = await gateway.client.put(
        "/admin/v1/accounts/b/key", headers=admin_headers, json={"api_key": "new-" + KEY_B}
    )
    assert rotated.status_code == 200 and "new-" + KEY_B not in rotated.text
    audit = await gateway.client.get("/admin/v1/audit?entity=account", headers=admin_headers)
    assert {entry["entity_id"] for entry in audit.json()} >= {"b", "c"}
    assert "gAAAA" not in audit.text and "key_ciphertext" not in audit.text
    missing = await gateway.client.post(
        "/admin/v1/accounts",
        headers=admin_headers,
        json={"id": "b", "base_url": "http://b.test/api/v3", "api_key": KEY_B},
    )
    assert missing.status_code == 409


async def test_an_account_base_url_must_name_a_real_host(
    make_gateway, sims: Sims, admin_headers
) -> None:
    """`http://a]` passes httpx (which percent-encodes the host) but not urllib: refused with
    a 400, writing nothing, as every URL without a usable host or port."""
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    before = await database_rows(gateway.app)
    for base_url in ("http://a]", "http://[", "http://a%5D/", "http://-a/", "http://h:99999/"):
        refused = await gateway.client.post(
            "/admin/v1/accounts",
            headers=admin_headers,
            json={"id": "d", "base_url": base_url, "api_key": KEY_B},
        )
        assert refused.status_code == 400, (base_url, refused.text)
        assert refused.json()["error"]["param"] == "base_url"
    assert await database_rows(gateway.app) == before
    listed = await gateway.client.get("/admin/v1/accounts", headers=admin_headers)
    assert {account["id"] for account in listed.json()} == {"default", "b", "c"}


async def test_an_account_that_keeps_failing_leaves_rotation_with_an_alert_and_returns(
    make_gateway, sims: Sims, admin_headers
) -> None:
    gateway = await pool_gateway(make_gateway, sims, admin_headers)
    client = await gateway.user_client("alice")
    await gateway.client.patch(  # a is a standby: b takes every create while in rotation
        "/admin/v1/accounts/default", headers=admin_headers, json={"weight": 0}
    )
    await gateway.app.state.resources.upstream.refresh(force=True)
    sims.config["b"].create_error_rate = 1.0  # 500s: each create may have landed, none moves
    answers = [(await client.post(TASKS, json=body(f"fox {i}"))).status_code for i in range(7)]
    # Five 502s in a row on b (none moved: each may have landed), then b is out and the
    # standby takes the creates.
    assert answers == [502] * 5 + [200] * 2
    assert sims.state("b").calls["create"] == 5
    listed = (await gateway.client.get("/admin/v1/accounts", headers=admin_headers)).json()
    b = next(account for account in listed if account["id"] == "b")
    assert b["healthy"] is False and "5 calls in a row failed" in b["health_detail"]
    alerts = [row for row in (await database_rows(gateway.app))["alerts"] if row[2] == "account"]
    assert len(alerts) == 1 and "b keeps failing" in alerts[0][3]

    sims.config["b"].create_error_rate = 0.0
    await poller_for(gateway.app.state.resources).run_once()  # its probe: a list call answers
    await gateway.app.state.resources.upstream.refresh(force=True)
    before = sims.state("b").calls["create"]
    assert (await client.post(TASKS, json=body("back"))).status_code == 200
    assert sims.state("b").calls["create"] == before + 1
