"""Alembic upgrades from code: used by `seedance-gateway migrate`, demo start-up and tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.db import create_engine

ROOT = Path(__file__).resolve().parent.parent
# Held (PostgreSQL, for the transaction) while migrating: replicas, workers and the release's
# migration Job start together, and each migrates at start; one does, the others then find the
# schema at head.
MIGRATION_LOCK = 0x5347_4D49  # "SGMI"


def alembic_config(url: str) -> Config:
    """Alembic's config pointing at the project's migrations and `url`."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade_to_head(url: str, *, revision: str = "head") -> None:
    """Apply every migration not yet applied to the database at `url` (up to `revision`)."""
    engine = create_engine(url, timeout_seconds=600, sqlite_foreign_keys=False)  # may take long
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=MIGRATION_LOCK)
                await connection.execute(lock)
            await connection.run_sync(_upgrade, alembic_config(url), revision)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
