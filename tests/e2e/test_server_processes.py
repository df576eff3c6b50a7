"""What only a real server process shows: its workers' logging, slow and broken clients, huge
headers, and a database that goes away or hangs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import ArkAPIStatusError, ArkConflictError

from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import Stack, follow
from tests.e2e.processes import Process, free_port, start
from tests.e2e.toggle_proxy import ToggleProxy
from tests.scratch_db import fetch_rows, scratch_postgres

pytestmark = pytest.mark.e2e
TASKS = "/api/v3/contents/generations/tasks"
CREATE = b'{"model":"seedance-1-0-pro-250528","content":[{"type":"text","text":"fox"}]}'


def _raw(gateway: Process, data: bytes, *, then_wait: float = 5.0) -> bytes:
    """Send `data` on a fresh connection and return what comes back within `then_wait` s."""
    port = urlsplit(gateway.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=then_wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def _head(key: str, length: int) -> bytes:
    return (
        f"POST {TASKS} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_every_worker_logs_alike_and_redacts_secrets(stack: Stack) -> None:
    gateway = stack.start_gateway("--workers", "2")
    for _ in range(100):
        if gateway.log.read_text().count("Application startup complete") == 2:
            break
        time.sleep(0.1)
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(40):  # new connections, so both workers answer some
            assert client.get(f"/healthz?probe={ADMIN_TOKEN}", headers={"Connection": "close"})
    time.sleep(0.5)
    log = gateway.log.read_text()
    access = [line for line in log.splitlines() if "uvicorn.access" in line and "probe=" in line]
    assert len(access) == 40, log[-2000:]
    assert len({line.split("[")[1].split("]")[0] for line in access}) == 2  # both workers
    assert ADMIN_TOKEN not in log and all("probe=*** " in line for line in access)


def wait_for_workers(gateway: Process, count: int) -> None:
    """Until `count` worker processes have started (the first answers before the others)."""
    deadline = time.monotonic() + 30
    while gateway.log.read_text().count("Application startup complete") < count:
        assert time.monotonic() < deadline, "the workers did not all start"
        time.sleep(0.1)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_every_line_about_a_request_says_which_in_both_formats(
    stack: Stack, log_format: str
) -> None:
    gateway = stack.start_gateway("--workers", "2", GATEWAY_LOG_FORMAT=log_format)
    wait_for_workers(gateway, 2)  # both must be up to share the connections below
    key = stack.new_key(gateway, f"logged-{log_format}")
    bearer = {"Authorization": f"Bearer {key}", "Connection": "close"}
    answers = []
    with httpx.Client(base_url=gateway.url, headers=bearer) as client:
        for _ in range(20):  # new connections, so both workers answer some
            created = client.post(TASKS, content=CREATE, params={"probe": ADMIN_TOKEN})
            task_id = created.json()["id"]
            answers.append((created.headers["x-request-id"], task_id))
            retrieved = client.get(f"{TASKS}/{task_id}")
            answers.append((retrieved.headers["x-request-id"], task_id))
    time.sleep(0.5)
    log = gateway.log.read_text()
    assert ADMIN_TOKEN not in log and key not in log
    access = [line for line in log.splitlines() if "uvicorn.access" in line and TASKS in line]
    assert len(access) >= len(answers)
    user_id = None
    for request_id, task_id in answers:
        (line,) = [line for line in access if request_id in line]
        if log_format == "json":
            record = json.loads(line)
            context = {name: record[name] for name in ("request_id", "user_id", "task_id")}
            assert record["key_prefix"] == key[:12] and record["level"] == "INFO"
        else:
            found = re.search(
                r"\[request_id=(\S+) user_id=(\S+) key_prefix=(\S+) task_id=(\S+)\]$", line
            )
            assert found is not None, line
            names = ("request_id", "user_id", "task_id")
            context = dict(zip(names, found.group(1, 2, 4), strict=True))
            assert found.group(3) == key[:12]
        assert context["request_id"] == request_id and context["task_id"] == task_id
        user_id = user_id or context["user_id"]
        assert context["user_id"] == user_id and user_id.startswith("usr_")
    if log_format == "json":  # every line, not only the access log, is one JSON object
        assert all(json.loads(line) for line in log.splitlines() if line.startswith("{"))
        assert not [line for line in log.splitlines() if line and not line.startswith("{")]
    workers = (
        {line.split("[")[1].split("]")[0] for line in access}
        if log_format == "text"
        else {json.loads(line)["process"] for line in access}
    )
    assert len(workers) == 2


def test_metrics_add_up_every_workers_requests(stack: Stack) -> None:
    # About metrics, not the failed-auth throttle: its per-process count (no Redis here) would
    # refuse a worker that happened to take more than 20 of the 401s below.
    gateway = stack.start_gateway("--workers", "2", GATEWAY_AUTH_FAILURE_LIMIT="1000/minute")
    wait_for_workers(gateway, 2)
    usage = "/gateway/v1/usage"
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(30):  # new connections, so both workers answer some
            assert client.get(usage, headers={"Connection": "close"}).status_code == 401
        scrapes = [client.get("/metrics", headers={"Connection": "close"}).text for _ in range(6)]
    access = [line for line in gateway.log.read_text().splitlines() if usage in line]
    assert len({line.split("[")[1].split("]")[0] for line in access}) == 2  # both workers
    counted = re.compile(r'sgw_requests_total\{[^}]*route="/gateway/v1/usage"[^}]*\} (\S+)')
    for text in scrapes:  # whichever worker answers the scrape counts all 30
        found = counted.search(text)
        assert found is not None and float(found.group(1)) == 30.0


async def test_a_worker_process_serves_its_own_metrics(stack: Stack) -> None:
    # A database of its own: the module's other gateways run pollers that would settle first.
    async with scratch_postgres(f"sgw_e2e_worker_{os.getpid()}") as database_url:
        alone = Stack(simulator=stack.simulator, database_url=database_url, tmp=stack.tmp)
        try:
            _worker_settles_and_counts(alone)
        finally:
            for process in alone.gateways:
                process.stop()


def _worker_settles_and_counts(stack: Stack) -> None:
    gateway = stack.start_gateway(GATEWAY_POLLER_ENABLED="false")  # the worker settles tasks
    key = stack.new_key(gateway, "worker-metrics")
    port = free_port()
    token = "worker-metrics-token-0123456789"
    worker = start(
        ["worker", "--metrics-port", str(port)],
        env=stack.env(GATEWAY_POLL_INTERVAL_SECONDS="0.5", GATEWAY_METRICS_TOKEN=token),
        port=port,
        log=stack.tmp / "worker.log",
    )
    try:
        bearer = {"Authorization": f"Bearer {key}"}
        created = httpx.post(f"{gateway.url}{TASKS}", content=CREATE, headers=bearer).json()
        assert httpx.get(f"{worker.url}/metrics").status_code == 401
        finished = 0.0
        deadline = time.monotonic() + 30
        while finished < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            text = httpx.get(
                f"{worker.url}/metrics", headers={"Authorization": f"Bearer {token}"}
            ).text
            found = re.search(r'sgw_tasks_finished_total\{status="succeeded"\} (\S+)', text)
            finished = float(found.group(1)) if found else 0.0
        assert finished == 1.0, created
        assert re.search(r"sgw_poller_cycle_seconds_count \d+", text)
        assert 'sgw_upstream_calls_total{account="default",call="list",status="200"}' in text
    finally:
        worker.stop()


def test_slow_bodies_time_out_and_hold_no_database_connection(stack: Stack) -> None:
    gateway = stack.start_gateway(
        GATEWAY_BODY_READ_TIMEOUT_SECONDS="3", GATEWAY_DATABASE_POOL_SIZE="1"
    )
    key = stack.new_key(gateway, "slow-sender")
    port = urlsplit(gateway.url).port
    slow = []
    for _ in range(8):  # more slow senders than the pool (1 + 1 overflow) has connections
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_head(key, len(CREATE)) + CREATE[:10])
        slow.append(sock)
    started = time.monotonic()
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(5):
            assert client.get(TASKS).status_code == 200
    assert time.monotonic() - started < 2  # nobody waited for the slow senders' connections
    answers = []
    for sock in slow:
        sock.settimeout(6)
        answers.append(sock.recv(65536))
        sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0][:200]


def test_a_client_that_leaves_mid_body_is_one_quiet_line(stack: Stack) -> None:
    gateway = stack.start_gateway()
    key = stack.new_key(gateway, "leaver")
    port = urlsplit(gateway.url).port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(key, len(CREATE)) + CREATE[:20])
        time.sleep(0.3)
    time.sleep(0.5)
    log = gateway.log.read_text()
    assert "client went away during POST" in log
    assert "Traceback" not in log and " ERROR " not in log


def test_huge_and_broken_headers_are_refused_without_a_500(stack: Stack) -> None:
    gateway = stack.start_gateway()
    huge = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _raw(gateway, huge).startswith(b"HTTP/1.1 431")
    broken = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-A: a\rb\r\n\r\n"
    assert _raw(gateway, broken).startswith(b"HTTP/1.1 400")
    with httpx.Client(base_url=gateway.url) as client:  # and the process still serves
        assert client.get("/healthz").status_code == 200


def test_database_outages_answer_503_promptly_and_recover(stack: Stack) -> None:
    target = urlsplit(stack.database_url.replace("postgresql+asyncpg", "postgresql"))
    proxy = ToggleProxy(target.port or 5432)
    url = stack.database_url.replace(f":{target.port}/", f":{proxy.port}/")
    gateway = stack.start_gateway(GATEWAY_DATABASE_URL=url, GATEWAY_DATABASE_TIMEOUT_SECONDS="2")
    key = stack.new_key(gateway, "outage")
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        assert client.get(TASKS).status_code == 200
        proxy.cut()
        for _ in range(3):
            started = time.monotonic()
            answer = client.get(TASKS)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "ServiceUnavailable"
            assert int(answer.headers["retry-after"]) > 0
            assert answer.headers.get("connection") != "close"
            assert time.monotonic() - started < 5
        proxy.restore()
        time.sleep(0.5)
        assert client.get(TASKS).status_code == 200  # no restart needed
        with proxy.freeze():
            started = time.monotonic()
            assert client.get(TASKS).status_code == 503
            assert time.monotonic() - started < 5
        time.sleep(0.5)
        recovered = [client.get(TASKS).status_code for _ in range(3)]
        assert recovered[-1] == 200


def test_a_restarting_database_answers_503_never_500(stack: Stack) -> None:
    """PostgreSQL restarting refuses logins with 57P03, which SQLAlchemy wraps in its generic
    DBAPIError (a 500 before); every path, the ORM's and the direct statements', answers 503."""
    target = urlsplit(stack.database_url.replace("postgresql+asyncpg", "postgresql"))
    proxy = ToggleProxy(target.port or 5432)
    url = stack.database_url.replace(f":{target.port}/", f":{proxy.port}/")
    gateway = stack.start_gateway(GATEWAY_DATABASE_URL=url, GATEWAY_DATABASE_TIMEOUT_SECONDS="2")
    key = stack.new_key(gateway, "restart")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        user = {"Authorization": f"Bearer {key}"}
        calls = [
            lambda: client.get("/admin/v1/users", headers=admin),
            lambda: client.get(TASKS, headers=user),
            lambda: client.post(TASKS, content=CREATE, headers=user),
        ]
        assert [call().status_code for call in calls] == [200, 200, 200]
        with proxy.starting_up():
            time.sleep(1.1)  # past the second for which keys, accounts and prices are kept
            answers = [call() for call in calls]
            assert [answer.status_code for answer in answers] == [503, 503, 503]
            assert {answer.json()["error"]["code"] for answer in answers} == {"ServiceUnavailable"}
        time.sleep(0.5)
        assert [call().status_code for call in calls] == [200, 200, 200]


def test_database_lost_after_the_upstream_created_stops_sdk_retries(stack: Stack) -> None:
    """Upstream latency 3 s, the database gone at +1.2 s: one upstream task, found again."""
    target = urlsplit(stack.database_url.replace("postgresql+asyncpg", "postgresql"))
    proxy = ToggleProxy(target.port or 5432)
    gateway = stack.start_gateway(
        GATEWAY_DATABASE_URL=stack.database_url.replace(f":{target.port}/", f":{proxy.port}/"),
        GATEWAY_DATABASE_TIMEOUT_SECONDS="2",
        GATEWAY_UPSTREAM_TIMEOUT_SECONDS="4",
        GATEWAY_POLL_INTERVAL_SECONDS="0.5",
    )
    sdk = Ark(base_url=f"{gateway.url}/api/v3", api_key=stack.new_key(gateway, "sdk-outage"))
    key = {"Idempotency-Key": "outage-1"}
    creates_before = stack.sim("GET", "/_sim/stats")["calls"].get("create", 0)
    with stack.timings(latency_seconds=3):
        threading.Timer(1.2, proxy.cut).start()
        with pytest.raises(ArkAPIStatusError) as refused:
            sdk.content_generation.tasks.create(
                model="seedance-1-0-pro-250528",
                content=[{"type": "text", "text": "fox in the outage"}],
                extra_headers=key,
            )
    assert refused.value.status_code == 503
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert stack.sim("GET", "/_sim/stats")["calls"]["create"] == creates_before + 1  # no retry
    proxy.restore()
    deadline = time.monotonic() + 40
    while True:  # the same key says "retry later" until the poller has reconciled the create
        try:
            task = sdk.content_generation.tasks.create(
                model="seedance-1-0-pro-250528",
                content=[{"type": "text", "text": "fox in the outage"}],
                extra_headers=key,
            )
            break
        except ArkConflictError as pending:
            assert pending.code in ("IdempotencyKeyInUse", "IdempotencyKeyOutcomePending")
            assert time.monotonic() < deadline
            time.sleep(1)
    assert follow(lambda: sdk.content_generation.tasks.get(task_id=task.id).status)[-1] == (
        "succeeded"
    )
    assert stack.sim("GET", "/_sim/stats")["calls"]["create"] == creates_before + 1


async def test_a_process_opens_no_more_connections_than_its_pool(stack: Stack) -> None:
    """The pool size bounds a process's PostgreSQL connections (its sessions' share, the
    request paths' direct share, and the poller's one) however many requests arrive at once."""
    async with scratch_postgres(f"sgw_e2e_pool_{os.getpid()}") as database_url:
        alone = Stack(simulator=stack.simulator, database_url=database_url, tmp=stack.tmp)
        try:
            gateway = alone.start_gateway(
                GATEWAY_DATABASE_POOL_SIZE="4",
                GATEWAY_CREATE_RATE_LIMIT="10000/minute",
                GATEWAY_READ_RATE_LIMIT="10000/minute",
                GATEWAY_MAX_TASKS_IN_FLIGHT_PER_KEY="1000",
                GATEWAY_MAX_TASKS_IN_FLIGHT_PER_USER="1000",
            )
            key = alone.new_key(gateway, "pool-bound")
            seen = await _connections_under_load(gateway, key, database_url)
        finally:
            for process in alone.gateways:
                process.stop()
    assert 2 <= max(seen) <= 4 + 1, seen


async def _connections_under_load(gateway: Process, key: str, database_url: str) -> list[int]:
    name = database_url.rsplit("/", 1)[-1]
    count = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
    seen: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            rows = await fetch_rows(database_url, count)
            seen.append(int(rows[0][0]) - 1)  # not the sampler's own connection
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        created = (await client.post(TASKS, content=CREATE)).json()["id"]
        sampler = asyncio.create_task(sample())
        for _ in range(3):
            answers = await asyncio.gather(
                *(client.post(TASKS, content=CREATE) for _ in range(16)),
                *(client.get(TASKS) for _ in range(16)),
                *(client.get(f"{TASKS}/{created}") for _ in range(16)),
            )
            refused = [a for a in answers if a.status_code != 200]
            assert not refused, refused[0].text
        done.set()
        await sampler
    return seen
