"""What a running gateway holds open: made in the lifespan, reached through `ResourcesDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.coalesce import Coalescer
from app.config import Settings
from app.keys.service import AuthCache
from app.limits.clients import Network
from app.limits.rates import RateLimiter
from app.upstream.client import UpstreamClient


@dataclass
class Resources:
    """The process's shared resources; nothing here is module-level state."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    upstream: UpstreamClient
    callbacks: httpx.AsyncClient
    auth_cache: AuthCache
    refreshes: Coalescer
    limiter: RateLimiter
    trusted_proxies: list[Network]


def get_resources(request: Request) -> Resources:
    """The resources the lifespan created for this app."""
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]
