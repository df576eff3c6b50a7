"""Databases of a run's own on the real PostgreSQL (tests, e2e tests and benchmarks)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@asynccontextmanager
async def scratch_postgres(name: str) -> AsyncIterator[str]:
    """Create database `name` afresh; yield its SQLAlchemy URL; drop it afterwards."""
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def fetch_rows(database_url: str, query: str) -> list[asyncpg.Record]:
    """The rows a query returns, read over a connection of its own (a gateway's database)."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()
