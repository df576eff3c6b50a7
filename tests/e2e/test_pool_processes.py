"""The account pool with real processes: three simulator processes as three accounts, each with
its own limits and models, behind two gateway replicas sharing PostgreSQL and Redis, one of
them SIGKILLed mid-run. The simulators enforce their limits with 429s and count every call, so
they say whether any limit was crossed and whether any call reached the wrong account."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, MASTER_KEY
from tests.e2e.processes import Process, clean_env, free_port, issue_key, start, start_simulator
from tests.scratch_db import fetch_rows, scratch_postgres

pytestmark = pytest.mark.e2e
TASKS = "/api/v3/contents/generations/tasks"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V10 = "seedance-1-0-pro-250528"
V20 = "dreamina-seedance-2-0-260128"
KEYS = {
    "default": MASTER_KEY,
    "b": "sim-b-" + os.urandom(12).hex(),
    "c": "sim-c-" + os.urandom(12).hex(),
}
# Each account's limits, as its simulator enforces them and as the gateway is told them. b
# serves only 1.0 pro; c only 2.0, under its Volcengine name; default (the settings') all.
LIMITS: dict[str, dict[str, Any]] = {
    "default": {"max_queued": 6, "creates_per_minute": 40, "get_qps": 20, "list_qps": 1},
    "b": {"max_queued": 4, "creates_per_minute": 9, "get_qps": 4, "list_qps": 1, "models": V10},
    "c": {"max_queued": 8, "creates_per_minute": 60, "get_qps": 6, "list_qps": 2},
}
# What the gateway answers when no account serving the model has room (queue or rate).
ROOMLESS = ("RateLimitExceeded.UpstreamAccounts", "ServiceUnavailable.NoUpstreamAccount")
SERVED = {"default": None, "b": {V10: V10}, "c": {V20: "doubao-seedance-2-0-260128"}}


@dataclass
class Pool:
    sims: dict[str, Process]
    database_url: str
    tmp: Path
    gateways: list[Process] = field(default_factory=list)

    def start_gateway(self) -> Process:
        port = free_port()
        env = clean_env(
            GATEWAY_UPSTREAM_API_KEY=MASTER_KEY,
            GATEWAY_UPSTREAM_BASE_URL=f"{self.sims['default'].url}/api/v3",
            GATEWAY_DATABASE_URL=self.database_url,
            GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
            GATEWAY_ACCOUNT_KEYS_SECRET="pool-e2e-secret-" + str(os.getpid()),
            GATEWAY_REDIS_URL="redis://127.0.0.1:6379/0",
            GATEWAY_REDIS_KEY_PREFIX=f"sgw-pool-{os.getpid()}-{id(self)}",
            GATEWAY_REFRESH_STALE_SECONDS="0",  # every client poll asks for a refresh
            GATEWAY_POLL_INTERVAL_SECONDS="0.5",
            GATEWAY_UPSTREAM_TIMEOUT_SECONDS="5",
            GATEWAY_LOG_LEVEL="DEBUG",
            # A create no account has room for waits in the gateway's queue, sent as room
            # appears by whichever replica's poller runs the cycle.
            GATEWAY_CREATE_QUEUE_SIZE="50",
        )
        log = self.tmp / f"pool-gateway-{len(self.gateways)}.log"
        process = start(["serve", "--port", str(port)], env=env, port=port, log=log)
        self.gateways.append(process)
        return process

    def stats(self, name: str) -> dict[str, Any]:
        return dict(httpx.get(self.sims[name].url + "/_sim/stats").json())


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    sims = {
        name: start_simulator(
            master_key=key, log=tmp_path / f"sim-{name}.log", queued_seconds=2, running_seconds=3
        )
        for name, key in KEYS.items()
    }
    for name, sim in sims.items():
        knobs = {**LIMITS[name], "delete_qps": 20, "timing_jitter": 0.3}
        if name == "c":
            knobs["models"] = SERVED["c"][V20]
        httpx.patch(sim.url + "/_sim/config", json=knobs).raise_for_status()
    async with scratch_postgres(f"sgw_e2e_pool_{os.getpid()}") as database_url:
        made = Pool(sims=sims, database_url=database_url, tmp=tmp_path)
        try:
            yield made
        finally:
            logs = [process.stop() for process in made.gateways]
            for sim in sims.values():
                sim.stop()
    for log in logs:  # no key of any account in any log line, even at DEBUG
        assert "DEBUG" in log and not any(key in log for key in KEYS.values())


def configure_accounts(pool: Pool, gateway: Process) -> None:
    for name in KEYS:
        limits = {
            "max_queued": LIMITS[name]["max_queued"],
            "creates_per_minute": LIMITS[name]["creates_per_minute"],
            "retrieves_per_second": LIMITS[name]["get_qps"],
            "lists_per_second": LIMITS[name]["list_qps"],
        }
        if name == "default":
            answer = httpx.patch(
                f"{gateway.url}/admin/v1/accounts/default", headers=ADMIN, json=limits
            )
        else:
            answer = httpx.post(
                f"{gateway.url}/admin/v1/accounts",
                headers=ADMIN,
                json={
                    "id": name,
                    "base_url": f"{pool.sims[name].url}/api/v3",
                    "api_key": KEYS[name],
                    "models": SERVED[name],
                    **limits,
                },
            )
        assert answer.status_code in (200, 201), answer.text
        assert KEYS[name] not in answer.text


@dataclass
class Run:
    """What the clients saw."""

    task_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The gateway's own "no account has room" answers, retried after Retry-After as SDKs do.
    throttled: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)


async def client_loop(
    urls: list[str], key: str, model: str, run: Run, *, tasks: int, seed: int
) -> None:
    """Create `tasks` tasks one after another, each polled every 0.5 s until it ends; a
    replica that stops answering is left for the next (its in-flight create is its own)."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=15) as client:
        for n in range(tasks):
            body = {"model": model, "content": [{"type": "text", "text": f"pool {seed} {n}"}]}
            try:
                created = await client.post(urls[0] + TASKS, json=body)
            except httpx.TransportError:
                urls.pop(0)  # this replica died: the task it was sending is reconciled there
                continue
            code = created.json().get("error", {}).get("code") if created.status_code >= 400 else ""
            if code in ROOMLESS:
                run.throttled[code] += 1
                await asyncio.sleep(float(created.headers["retry-after"]))
                continue
            if created.status_code != 200:
                run.errors.append(f"create {created.status_code} {created.text[:200]}")
                continue
            task_id = created.json()["id"]
            run.task_ids.append(task_id)
            while True:
                await asyncio.sleep(0.5 + rng.random() * 0.1)
                try:
                    seen = await client.get(f"{urls[0]}{TASKS}/{task_id}")
                except httpx.TransportError:
                    urls.pop(0)
                    continue
                if seen.status_code != 200:
                    run.errors.append(f"retrieve {seen.status_code} {seen.text[:200]}")
                    break
                status = seen.json()["status"]
                if status in ("succeeded", "failed", "expired", "cancelled"):
                    run.statuses[status] += 1
                    break


async def test_three_accounts_two_replicas_one_killed(pool: Pool) -> None:
    first = pool.start_gateway()
    configure_accounts(pool, first)
    second = pool.start_gateway()
    keys = [issue_key(first.url, admin_token=ADMIN_TOKEN, user_name=f"team-{i}") for i in range(4)]
    run = Run()
    clients = [
        client_loop(
            [(first, second)[i % 2].url, second.url],
            keys[i % 4],
            (V10, V20)[i % 2],
            run,
            tasks=3,
            seed=i,
        )
        for i in range(12)
    ]

    async def kill_first() -> None:
        await asyncio.sleep(8)
        first.popen.kill()  # SIGKILL: no shutdown, whatever it was doing is left as it was
        first.popen.wait()

    started = time.monotonic()
    await asyncio.gather(kill_first(), *clients)
    print(f"clients done in {time.monotonic() - started:.1f} s: {dict(run.statuses)}")
    print(f"throttled by the gateway (no account with room): {dict(run.throttled)}")
    assert not run.throttled  # with the queue on, a create waits rather than being refused

    # The survivor's poller settles what the killed replica left open, reconciling any create
    # it was sending on that create's own account.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        open_rows = await fetch_rows(
            pool.database_url,
            "SELECT id FROM tasks WHERE status IN ('submitting','unknown','queued','running')",
        )
        if not open_rows:
            break
        await asyncio.sleep(0.5)
    assert not open_rows, open_rows

    assert run.errors == []  # no client saw an error another account could have served
    assert len(run.task_ids) >= 30 and run.statuses["succeeded"] == len(run.task_ids) - sum(
        run.statuses[s] for s in ("failed", "expired", "cancelled")
    )
    rows = await fetch_rows(
        pool.database_url, "SELECT id, model, account_id, upstream_id, status, sent_at FROM tasks"
    )
    holders = {
        name: {t["id"] for t in httpx.get(sim.url + "/_sim/tasks").json()}
        for name, sim in pool.sims.items()
    }
    placed: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["upstream_id"] is None:
            continue  # never created upstream (the killed replica's unsent create)
        account = row["account_id"] or "default"
        assert row["upstream_id"] in holders[account], dict(row)  # where the gateway says
        placed[(account, row["model"])] += 1
    waited = sum(1 for row in rows if row["sent_at"] is not None)
    print(f"placed: {dict(placed)}; {waited} waited in the gateway's queue")
    assert placed[("b", V20)] == 0 and placed[("c", V10)] == 0  # model sets held
    assert all(placed[(name, model)] > 0 for name, model in (("b", V10), ("c", V20)))

    # Exactly once: one reserve per task, and one settle or release per ended one.
    ledger = await fetch_rows(
        pool.database_url, "SELECT task_id, kind, count(*) AS n FROM ledger GROUP BY task_id, kind"
    )
    assert all(entry["n"] == 1 for entry in ledger), [dict(e) for e in ledger if e["n"] > 1]
    ended = {e["task_id"] for e in ledger if e["kind"] in ("settle", "release")}
    assert ended == {row["id"] for row in rows}

    for name in pool.sims:
        stats = pool.stats(name)
        calls, peaks = stats["calls"], stats["peak_per_second"]
        print(f"{name}: calls {calls}, peaks {peaks}, peak open {stats['peak_open']}")
        assert calls.get("unknown_task", 0) == 0, name  # every call reached the task's account
        for refused in ("get_refused", "list_refused", "create_rpm_refused"):
            assert calls.get(refused, 0) == 0, (name, refused, calls)
        assert stats["peak_open"] <= LIMITS[name]["max_queued"]
        assert peaks.get("get", 0) <= LIMITS[name]["get_qps"]
        assert peaks.get("list", 0) <= LIMITS[name]["list_qps"]
        assert peaks.get("create_per_minute", 0) <= LIMITS[name]["creates_per_minute"]
