"""Hostile input through HTTP: a clear Ark 4xx every time, never a 500, and nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Gateway
from tests.helpers import TASKS, database_rows

MODEL = "seedance-1-0-pro-250528"
BAD_BODIES = {
    "deep nesting": b'{"model":"m","content":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "5000-digit integer": b'{"model":"%s","content":[],"seed":%s}' % (MODEL.encode(), b"9" * 5000),
    "NaN": b'{"model":"%s","content":[{"type":"text","text":"x"}],"seed":NaN}' % MODEL.encode(),
    "Infinity": b'{"model":"%s","content":[{"type":"text","text":"x"}],"duration":Infinity}'
    % MODEL.encode(),
    "-Infinity": b'{"model":"%s","content":[{"type":"text","text":"x"}],"frames":-Infinity}'
    % MODEL.encode(),
    "invalid UTF-8": b'{"model":"\xff\xfe","content":[]}',
    "huge integer field": b'{"model":"%s","content":[{"type":"text","text":"x"}],"duration":%s}'
    % (MODEL.encode(), str(2**70).encode()),
    "NUL in callback": b'{"model":"%s","content":[{"type":"text","text":"x"}],'
    b'"callback_url":"https://example.com/\\u0000"}' % MODEL.encode(),
}


@pytest.fixture
async def alice(gateway: Gateway) -> AsyncIterator[tuple[Gateway, object]]:
    client = await gateway.user_client("alice")
    yield gateway, client


def _is_ark_4xx(response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param", "type"}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
async def test_bad_create_bodies_are_400_and_write_nothing(alice, name: str) -> None:
    gateway, client = alice
    before = await database_rows(gateway.app)
    answer = await client.post(
        TASKS, content=BAD_BODIES[name], headers={"Content-Type": "application/json"}
    )
    _is_ark_4xx(answer, 400)
    assert await database_rows(gateway.app) == before


async def test_bodies_over_the_cap_are_413_with_or_without_a_length(make_gateway) -> None:
    gateway = await make_gateway(max_body_bytes=1024)
    client = await gateway.user_client("alice")

    async def chunks():
        for _ in range(10):
            yield b"x" * 512

    _is_ark_4xx(await client.post(TASKS, content=b"{" + b" " * 4096 + b"}"), 413)
    _is_ark_4xx(await client.post(TASKS, content=chunks()), 413)
    _is_ark_4xx(await client.post(TASKS, headers={"Content-Length": "9" * 5000}), 413)


@pytest.mark.parametrize(
    "path",
    [
        f"{TASKS}/cgt-%00",
        f"{TASKS}?filter.task_ids=a%00b",
        f"{TASKS}?filter.model=m%00",
        f"{TASKS}?filter.status=%00",
        "/admin/v1/users/usr_%00",
        "/admin/v1/usage?user_id=%00",
    ],
)
async def test_control_characters_in_ids_and_filters_are_400(alice, admin_headers, path) -> None:
    _, client = alice
    headers = admin_headers if path.startswith("/admin") else {}
    _is_ark_4xx(await client.get(path, headers=headers), 400)


async def test_ten_thousand_task_ids_are_refused(alice) -> None:
    _, client = alice
    ids = ",".join(f"{i:x}" for i in range(10_000))  # the comma form keeps the URL short
    _is_ark_4xx(await client.get(f"{TASKS}?filter.task_ids={ids}"), 400)


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/admin/v1/users", b'{"name": "a\\u0000b"}'),
        ("post", "/admin/v1/users", b'{"name": '),
        ("post", "/admin/v1/users", b'{"name": "x", "allowed_models": [1e999]}'),
        ("put", "/admin/v1/users/{user}/budget", b'{"limit_micros": 99999999999999999999999}'),
        ("put", "/admin/v1/users/{user}/budget", b'{"limit_tokens": %d}' % 2**64),
        ("post", "/admin/v1/prices", b'{"model": "m", "micros_per_million_tokens": %d}' % 2**63),
        ("patch", "/admin/v1/users/{user}", b'{"max_tasks_in_flight": %d}' % 2**64),
        ("post", "/admin/v1/users/{user}/keys", b'{"name": "k\\u0000"}'),
    ],
)
async def test_hostile_admin_bodies_are_400(
    gateway: Gateway, admin_headers, method: str, path: str, payload: bytes
) -> None:
    user = await gateway.create_user("target")
    before = await database_rows(gateway.app)
    answer = await gateway.client.request(
        method.upper(),
        path.format(user=user["id"]),
        content=payload,
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    _is_ark_4xx(answer, 400)
    assert await database_rows(gateway.app) == before
