"""The production upstream transport (aiohttp) against real sockets that misbehave.

Whether a failed create may have reached the upstream decides between "rejected, retry freely"
and "unknown, reconcile": each case here is a real TCP peer, not a mock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlmodel import select

from app.tasks.models import Task
from app.upstream.transport import upstream_transport
from tests.conftest import Gateway
from tests.helpers import TASKS, body

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts a TCP server on a free port with a given handler; yields its base URL."""
    servers: list[asyncio.Server] = []

    async def serve(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v3"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


async def _gateway_on(make_gateway, base_url: str, **overrides) -> Gateway:
    return await make_gateway(
        transport=upstream_transport(max_connections=4), upstream_base_url=base_url, **overrides
    )


async def _only_task(gateway: Gateway) -> Task:
    async with gateway.app.state.resources.sessionmaker() as session:
        (task,) = (await session.exec(select(Task))).all()
        return task


async def test_refused_connection_is_502_and_nothing_was_sent(make_gateway) -> None:
    gateway = await _gateway_on(make_gateway, "http://127.0.0.1:1/api/v3")  # port 1: refused
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 502
    assert "x-should-retry" not in response.headers
    assert (await _only_task(gateway)).status == "rejected"


async def test_connection_dropped_after_the_request_may_have_created(make_gateway, peer) -> None:
    received: list[bytes] = []

    async def drop_after_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        received.append(await _read_request(reader))
        writer.close()

    gateway = await _gateway_on(make_gateway, await peer(drop_after_reading))
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert received and received[0].startswith(b"POST /api/v3/contents/generations/tasks ")
    assert (await _only_task(gateway)).status == "unknown"


async def test_silent_upstream_is_504_and_may_have_created(make_gateway, peer) -> None:
    async def read_and_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(3)
        writer.close()

    gateway = await _gateway_on(
        make_gateway, await peer(read_and_wait), upstream_timeout_seconds=0.5
    )
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    assert (await _only_task(gateway)).status == "unknown"


async def test_answers_pass_through_the_real_transport(make_gateway, peer) -> None:
    async def ark(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        assert b"\r\nauthorization: bearer " in request.lower()
        payload = b'{"id":"cgt-upstream-1"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    gateway = await _gateway_on(make_gateway, await peer(ark))
    client = await gateway.user_client("alice")
    response = await client.post(TASKS, json=body())
    assert response.status_code == 200
    task = await _only_task(gateway)
    assert task.status == "queued" and task.upstream_id == "cgt-upstream-1"
    assert response.json() == {"id": task.id}
