"""Route dependencies that apply the request-rate limits: `CreateCaller`, `ReadCaller`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Response

from app.keys.deps import CurrentKey
from app.keys.service import AuthContext
from app.limits.rates import rate_headers, refusal
from app.resources import Resources, ResourcesDep


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


async def create_caller(
    auth: CurrentKey, resources: ResourcesDep, response: Response
) -> AuthContext:
    """The caller, counted against its key's create rate."""
    rate = auth.create_rate_limit or resources.settings.create_rate_limit
    await _apply(resources, response, rate=rate, name="create", key_id=auth.key_id)
    return auth


async def read_caller(auth: CurrentKey, resources: ResourcesDep, response: Response) -> AuthContext:
    """The caller, counted against its key's read rate (retrieve, list, delete, usage)."""
    rate = auth.read_rate_limit or resources.settings.read_rate_limit
    await _apply(resources, response, rate=rate, name="read", key_id=auth.key_id)
    return auth


CreateCaller = Annotated[AuthContext, Depends(create_caller)]
ReadCaller = Annotated[AuthContext, Depends(read_caller)]
