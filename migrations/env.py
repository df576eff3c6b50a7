"""Alembic environment: runs migrations on the connection it is given, or on GATEWAY_DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.config import Settings
from app.db import create_engine
from app.models import metadata

config = context.config


def run_on(connection: Connection) -> None:
    """Run the migrations inside one transaction on `connection`."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    """Open an engine on the configured URL and migrate."""
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine = create_engine(url, sqlite_foreign_keys=False)
    async with engine.begin() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
elif (connection := config.attributes.get("connection")) is not None:
    run_on(connection)
else:
    asyncio.run(run_online())
