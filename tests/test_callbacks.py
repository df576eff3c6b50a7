"""Client callbacks: sent by the gateway with its own ids, once per status, retried on failure."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import update
from sqlmodel import col, select

from app.db import utcnow
from app.lifespan import poller_for
from app.simulator.state import SimulatorState
from app.tasks.models import CallbackDelivery, Task
from tests.conftest import MASTER_KEY
from tests.helpers import TASKS, body

# A public address, so the callback guard lets it through; the in-process receiver answers for it.
HOOK = "https://93.184.215.14/seedance"


class Receiver:
    """A client's callback endpoint that records what it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answer = 200
        self.app = FastAPI()

        @self.app.post("/seedance")
        async def hook(request: Request) -> Response:
            self.received.append(await request.json())
            self.headers.append(dict(request.headers))
            return Response(status_code=self.answer)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


async def test_status_changes_are_posted_with_gateway_ids(
    make_gateway, receiver: Receiver, sim_state: SimulatorState
) -> None:
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    assert "callback_url" not in next(iter(sim_state.tasks.values())).body  # kept from upstream
    await client.get(f"{TASKS}/{task_id}")  # succeeded
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    await poller.run_once()
    assert [(p["id"], p["status"]) for p in receiver.received] == [
        (task_id, "queued"),
        (task_id, "succeeded"),
    ]
    assert receiver.received[1]["usage"]["completion_tokens"] > 0
    upstream_ids = set(sim_state.tasks)
    assert not any(p["id"] in upstream_ids for p in receiver.received)
    assert all("authorization" not in h for h in receiver.headers)
    assert MASTER_KEY not in repr(receiver.headers)


async def test_unacknowledged_terminal_callback_is_retried_three_times(
    make_gateway, receiver: Receiver
) -> None:
    receiver.answer = 500
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body("[sim:fail] fox", callback_url=HOOK))).json()[
        "id"
    ]
    await client.get(f"{TASKS}/{task_id}")
    poller = poller_for(gateway.app.state.resources)
    sessionmaker = gateway.app.state.resources.sessionmaker
    for _ in range(6):
        await poller.run_once()
        async with sessionmaker() as session:  # let the back-off pass at once
            await session.exec(
                update(CallbackDelivery)
                .where(col(CallbackDelivery.delivered_at).is_(None))
                .values(next_attempt_at=utcnow())
            )
            await session.commit()
    statuses = [p["status"] for p in receiver.received]
    assert statuses.count("queued") == 1  # non-terminal: one try
    assert statuses.count("failed") == 4  # terminal: one try and three retries
    async with sessionmaker() as session:
        failed = (
            await session.exec(select(CallbackDelivery).where(CallbackDelivery.status == "failed"))
        ).one()
    assert failed.delivered_at is None and failed.last_error == "HTTP 500"


async def test_a_later_2xx_ends_the_retries(make_gateway, receiver: Receiver) -> None:
    receiver.answer = 503
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    await client.get(f"{TASKS}/{task_id}")
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    receiver.answer = 200
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(CallbackDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    await poller.run_once()
    await poller.run_once()
    assert [p["status"] for p in receiver.received] == ["queued", "succeeded", "succeeded"]


async def test_no_callback_url_queues_nothing(gateway, receiver: Receiver) -> None:
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body())).json()["id"]
    await client.get(f"{TASKS}/{task_id}")
    async with gateway.app.state.resources.sessionmaker() as session:
        assert (await session.exec(select(CallbackDelivery))).all() == []


class SocketReceiver:
    """A real HTTP endpoint on 127.0.0.1 that records the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        self.requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def socket_receiver() -> AsyncIterator[SocketReceiver]:
    receiver = SocketReceiver()
    yield receiver
    if receiver.server is not None:
        receiver.server.close()
        await receiver.server.wait_closed()


async def _deliveries(gateway) -> list[CallbackDelivery]:
    async with gateway.app.state.resources.sessionmaker() as session:
        return list((await session.exec(select(CallbackDelivery))).all())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_callbacks_to_private_hosts_are_refused_by_default(
    make_gateway, socket_receiver: SocketReceiver, host: str
) -> None:
    url = (await socket_receiver.start()).replace("127.0.0.1", host)
    gateway = await make_gateway()  # the real transport, default settings
    client = await gateway.user_client("alice")
    await client.post(TASKS, json=body(callback_url=url))
    await poller_for(gateway.app.state.resources).run_once()
    deliveries = await _deliveries(gateway)
    assert deliveries  # queued, then succeeded: each one refused
    for delivery in deliveries:
        assert delivery.delivered_at is None
        assert (delivery.last_error or "").startswith("CallbackHostRefused: callback host")
    assert socket_receiver.requests == []


async def test_an_allowed_network_receives_callbacks_at_the_checked_address(
    make_gateway, socket_receiver: SocketReceiver
) -> None:
    url = await socket_receiver.start()
    gateway = await make_gateway(callback_allowed_networks=["127.0.0.0/8"])
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(callback_url=url))).json()["id"]
    await poller_for(gateway.app.state.resources).run_once()
    deliveries = await _deliveries(gateway)
    assert deliveries and all(d.delivered_at and d.last_error is None for d in deliveries)
    assert len(socket_receiver.requests) == len(deliveries)
    request = socket_receiver.requests[0]
    assert request.startswith(b"POST /hook HTTP/1.1")
    assert f"host: {url.split('/')[2]}".encode() in request.lower()
    assert task_id.encode() in request


async def test_polling_a_moving_task_with_a_callback_never_fails(
    make_gateway, receiver: Receiver, sim_config
) -> None:
    """Polls while the task stands still and while it moves: each refresh that finds the same
    status stores it without queueing a second callback (that used to be a 500)."""
    sim_config.queued_seconds, sim_config.running_seconds = 0.8, 0.8
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    seen: list[str] = []
    for _ in range(40):
        response = await client.get(f"{TASKS}/{task_id}")
        assert response.status_code == 200, response.text
        seen.append(response.json()["status"])
        if seen[-1] == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert seen.count("queued") > 1 and seen.count("running") > 1 and seen[-1] == "succeeded"
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    assert [p["status"] for p in receiver.received] == ["queued", "running", "succeeded"]


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://user:pw@example.com/",
        "ftp://example.com/",
        "http://exa mple.com/",
        "http://example.com/\x00",
        "http://[::1/",
        "http://-bad-.example/",
    ],
)
async def test_undeliverable_callback_urls_are_refused_at_create(gateway, url: str) -> None:
    client = await gateway.user_client("alice")
    answer = await client.post(TASKS, json=body(callback_url=url))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "callback_url"
    async with gateway.app.state.resources.sessionmaker() as session:
        assert (await session.exec(select(Task))).all() == []


async def test_one_bad_callback_url_blocks_no_one_else(make_gateway, receiver: Receiver) -> None:
    """A URL stored before URLs were checked fully fails alone; the others are delivered."""
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    first = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    second = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(CallbackDelivery)
            .where(col(CallbackDelivery.task_id) == first)
            .values(url="http://0177.0.0.1/")
        )
        await session.exec(
            update(Task).where(col(Task.id) == first).values(callback_url="http://0177.0.0.1/")
        )
        await session.commit()
    await poller_for(gateway.app.state.resources).run_once()
    assert [(p["id"], p["status"]) for p in receiver.received] == [
        (second, "queued"),
        (second, "succeeded"),
    ]
    failed = [d for d in await _deliveries(gateway) if d.task_id == first]
    assert failed and all(d.attempts == 1 and d.last_error for d in failed)


async def test_a_later_status_waits_while_an_earlier_one_is_out_with_another_replica(
    make_gateway, receiver: Receiver
) -> None:
    gateway = await make_gateway(callbacks=receiver.transport())
    client = await gateway.user_client("alice")
    task_id = (await client.post(TASKS, json=body(callback_url=HOOK))).json()["id"]
    await client.get(f"{TASKS}/{task_id}")  # queued and succeeded are both due now
    sessionmaker = gateway.app.state.resources.sessionmaker
    async with sessionmaker() as session:  # another replica has claimed `queued` (its lease)
        await session.exec(
            update(CallbackDelivery)
            .where(col(CallbackDelivery.status) == "queued")
            .values(next_attempt_at=utcnow() + timedelta(seconds=30))
        )
        await session.commit()
    poller = poller_for(gateway.app.state.resources)
    await poller.run_once()
    assert receiver.received == []  # `succeeded` did not overtake `queued`
    async with sessionmaker() as session:  # that replica died; its lease runs out
        await session.exec(update(CallbackDelivery).values(next_attempt_at=utcnow()))
        await session.commit()
    await poller.run_once()
    assert [p["status"] for p in receiver.received] == ["queued", "succeeded"]
