"""Route dependencies that authenticate the caller and apply its request-rate limit, in one
step: `CreateCaller`, `ReadCaller` (a key or a browser token), `KeyReadCaller` (a key only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from app.keys.callers import authenticate_request, require_key
from app.keys.service import AuthContext
from app.limits.rates import rate_headers, refusal
from app.resources import Resources, resources_of


async def _apply(
    resources: Resources, response: Response, *, rate: str, name: str, key_id: str
) -> None:
    decision = await resources.limiter.hit(rate, name, key_id)
    if not decision.allowed:
        raise refusal(
            decision,
            f"The {name} request rate of this key ({rate}) is exceeded.",
            f"RateLimitExceeded.Key{name.capitalize()}",
        )
    response.headers.update(rate_headers(decision))


async def create_caller(request: Request, response: Response) -> AuthContext:
    """The caller, counted against its key's create rate."""
    resources = resources_of(request)
    auth = await authenticate_request(request, resources)
    rate = auth.create_rate_limit or resources.settings.create_rate_limit
    await _apply(resources, response, rate=rate, name="create", key_id=auth.key_id)
    return auth


async def read_caller(request: Request, response: Response) -> AuthContext:
    """The caller, counted against its key's read rate (retrieve, list, delete, content)."""
    resources = resources_of(request)
    return await _read(await authenticate_request(request, resources), resources, response)


async def key_read_caller(request: Request, response: Response) -> AuthContext:
    """The caller holding a key, counted against its read rate (usage, minting tokens)."""
    resources = resources_of(request)
    auth = require_key(await authenticate_request(request, resources))
    return await _read(auth, resources, response)


async def _read(auth: AuthContext, resources: Resources, response: Response) -> AuthContext:
    rate = auth.read_rate_limit or resources.settings.read_rate_limit
    await _apply(resources, response, rate=rate, name="read", key_id=auth.key_id)
    return auth


CreateCaller = Annotated[AuthContext, Depends(create_caller)]
ReadCaller = Annotated[AuthContext, Depends(read_caller)]
KeyReadCaller = Annotated[AuthContext, Depends(key_read_caller)]
