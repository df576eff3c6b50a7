"""Shared fixtures: the gateway ASGI app wired to a simulator app, on SQLite and on PostgreSQL.

Every response the gateway client sees and every log record is checked for the master key.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, text
from sqlmodel import col

from app.config import Settings
from app.main import create_app
from app.migrate import upgrade_to_head
from app.models import metadata
from app.simulator.app import create_simulator_app
from app.simulator.state import SimConfig, SimulatorState
from app.usage.models import Price
from tests.scratch_db import scratch_postgres

MASTER_KEY = "sim-master-" + os.urandom(12).hex()
ADMIN_TOKEN = "admin-" + os.urandom(12).hex()
TEST_DB = f"sgw_test_{os.getpid()}"
TASKS = "/api/v3/contents/generations/tasks"


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of this run's own on the real PostgreSQL, migrated to head."""
    async with scratch_postgres(TEST_DB) as url:
        await upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite file migrated to head."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
    await upgrade_to_head(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each API test runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def sim_config() -> SimConfig:
    """Simulator timings for tests: tasks finish at once unless a test slows them."""
    return SimConfig(api_key=MASTER_KEY, queued_seconds=0.0, running_seconds=0.0)


@pytest.fixture
def simulator(sim_config: SimConfig) -> FastAPI:
    """A fresh simulator app (its own tasks and counters)."""
    return create_simulator_app(sim_config)


@pytest.fixture
def sim_state(simulator: FastAPI) -> SimulatorState:
    """The simulator's tasks and call counters."""
    state: SimulatorState = simulator.state.sim
    return state


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test gateway; never read from the developer's environment or .env."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "upstream_api_key": MASTER_KEY,
        "upstream_base_url": "http://upstream.test/api/v3",
        "admin_token": ADMIN_TOKEN,
        "refresh_stale_seconds": 0.0,
        "auth_cache_seconds": 0.0,
        "poller_enabled": False,
        # Generous limits by default; the limit tests set tight ones.
        "create_rate_limit": "100000/minute",
        "read_rate_limit": "100000/minute",
        "max_tasks_in_flight_per_key": 1000,
        "max_tasks_in_flight_per_user": 1000,
        "max_tasks_in_flight_global": 1000,
        "auth_failure_limit": "100000/minute",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _assert_no_master_key(response: httpx.Response) -> None:
    blob = response.content + str(response.headers).encode()
    assert MASTER_KEY.encode() not in blob, "master key leaked into a response"


async def _check_response(response: httpx.Response) -> None:
    await response.aread()
    _assert_no_master_key(response)


@dataclass
class Gateway:
    """A running gateway app and clients for it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    def as_user(self, key: str) -> httpx.AsyncClient:
        """A client that sends `key` as its bearer token."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {key}"},
            event_hooks={"response": [_check_response]},
        )

    async def create_user(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create a user through the admin API."""
        response = await self.client.post(
            "/admin/v1/users", json={"name": name, **fields}, headers=_admin()
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def create_key(self, user_id: str, **fields: Any) -> str:
        """Issue a key through the admin API; returns the plaintext."""
        response = await self.client.post(
            f"/admin/v1/users/{user_id}/keys", json=fields, headers=_admin()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    async def user_client(self, name: str, **fields: Any) -> httpx.AsyncClient:
        """A client for a new user with one new key."""
        user = await self.create_user(name, **fields)
        return self.as_user(await self.create_key(user["id"]))


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Headers that carry the admin token."""
    return _admin()


SEEDED_BEFORE = datetime(2025, 1, 2, tzinfo=UTC)  # migration 0002 seeds prices dated 2025-01-01


async def _truncate(database_url: str, app: FastAPI) -> None:
    """Empty every table but keep the prices the migrations seeded."""
    engine = app.state.resources.engine
    async with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            if table.name == "prices":
                await connection.execute(delete(Price).where(col(Price.created_at) > SEEDED_BEFORE))
            else:
                await connection.execute(text(f"DELETE FROM {table.name}"))


@contextlib.asynccontextmanager
async def gateway_factory(database_url: str, simulator: FastAPI) -> AsyncIterator[Any]:
    """Makes gateways (replicas) on one database; on exit, empties it and closes them."""
    stacks: list[Any] = []

    async def make(
        transport: httpx.AsyncBaseTransport | None = None,
        callbacks: httpx.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> Gateway:
        settings = gateway_settings(database_url, **overrides)
        app = create_app(
            settings,
            upstream_transport=transport or httpx.ASGITransport(app=simulator),
            callback_transport=callbacks,
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stacks.append((app, lifespan))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway.test",
            event_hooks={"response": [_check_response]},
        )
        return Gateway(app=app, client=client, settings=settings)

    try:
        yield make
    finally:
        if stacks:
            await _truncate(database_url, stacks[0][0])
        for _, lifespan in reversed(stacks):
            await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def make_gateway(database_url: str, simulator: FastAPI) -> AsyncIterator[Any]:
    """A factory for gateways on the test database (each backend), upstream = the simulator."""
    async with gateway_factory(database_url, simulator) as make:
        yield make


@pytest.fixture
async def make_pg_gateway(postgres_url: str, simulator: FastAPI) -> AsyncIterator[Any]:
    """The same, on PostgreSQL only: for what only PostgreSQL promises (SKIP LOCKED)."""
    async with gateway_factory(postgres_url, simulator) as make:
        yield make


@pytest.fixture
async def gateway(make_gateway: Any) -> Gateway:
    """A gateway with default test settings."""
    gateway: Gateway = await make_gateway()
    return gateway


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every log record at DEBUG and fail the test if one carries the master key."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        assert MASTER_KEY not in line, f"master key leaked into log: {record.name}"
