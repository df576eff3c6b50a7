"""What a running gateway holds open: made in the lifespan, reached through `ResourcesDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.coalesce import Coalescer
from app.config import Settings
from app.db_direct import DirectStatements
from app.keys.service import AuthCache
from app.keys.tokens import TokenSigner
from app.limits.clients import Network
from app.limits.rates import RateLimiter
from app.metrics import Metrics
from app.storage import ObjectStore
from app.ttl_cache import TtlCache
from app.upstream.pool import UpstreamPool


@dataclass
class Resources:
    """The process's shared resources; nothing here is module-level state."""

    settings: Settings
    engine: AsyncEngine
    # The same pool, for reads that need no transaction (no BEGIN and ROLLBACK round trips).
    autocommit_engine: AsyncEngine
    # The request hot paths' statements (asyncpg directly, on PostgreSQL).
    statements: DirectStatements
    sessionmaker: async_sessionmaker[AsyncSession]
    # Every upstream account's client; a task's calls go to its own account's.
    upstream: UpstreamPool
    callbacks: httpx.AsyncClient
    # Downloads of task outputs from the upstream's presigned URLs (no credentials).
    downloads: httpx.AsyncClient
    # The archive's store (`GATEWAY_ARCHIVE_URL`), or None when the archive is off.
    store: ObjectStore | None
    auth_cache: AuthCache
    token_signer: TokenSigner
    # Finished tasks' answers by task id, with their owner: (user_id, token_id, task object).
    finished_tasks: TtlCache[tuple[str, str | None, dict[str, Any]]]
    # Price rows by model and tier, as creates read them (`app.usage.ledger.price_in_force`).
    prices: TtlCache[Any]
    # Budgets by user and key, as creates read them (`app.usage.budgets.budgets_for`).
    budgets: TtlCache[Any]
    refreshes: Coalescer
    limiter: RateLimiter
    metrics: Metrics
    trusted_proxies: list[Network]


def resources_of(request: Request) -> Resources:
    """The resources the lifespan created for the request's app."""
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    """`resources_of` as a dependency (async: a sync dependency would hop to the thread pool on
    every request)."""
    return resources_of(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]
