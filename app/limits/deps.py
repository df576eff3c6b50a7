"""Route dependencies that authenticate the caller and apply its request-rate limit, in one
step: `CreateCaller`, `ReadCaller` (a key or a browser token), `KeyReadCaller` (a key only)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from app.keys.callers import authenticate_request, require_key
from app.keys.service import AuthContext
from app.limits.rates import RateDecision, rate_headers, refusal
from app.resources import Resources, resources_of


def _apply(decision: RateDecision, response: Response, *, rate: str, name: str) -> None:
    if not decision.allowed:
        raise refusal(
            decision,
            f"The {name} request rate of this key ({rate}) is exceeded.",
            f"RateLimitExceeded.Key{name.capitalize()}",
        )
    response.headers.update(rate_headers(decision))


@dataclass(frozen=True, slots=True)
class CreateAdmission:
    """A create's caller, whose rate check is on its way to Redis while the route parses the
    body and builds the task (a create's CPU hides the round trip). `admitted()` waits for the
    verdict and raises its 429: the route awaits it before anything is read from the database,
    written or answered, and again whatever happens, so a refusal outranks any other answer."""

    auth: AuthContext
    check: asyncio.Task[RateDecision]
    response: Response
    rate: str

    async def admitted(self) -> None:
        """Wait for the rate check; raise its 429 if refused (each time it is awaited)."""
        _apply(await self.check, self.response, rate=self.rate, name="create")


async def create_caller(request: Request, response: Response) -> CreateAdmission:
    """The caller, being counted against its key's create rate."""
    resources = resources_of(request)
    auth = await authenticate_request(request, resources)
    rate = auth.create_rate_limit or resources.settings.create_rate_limit
    check = asyncio.create_task(resources.limiter.hit(rate, "create", auth.key_id))
    await asyncio.sleep(0)  # the check runs up to its wait for Redis's answer
    return CreateAdmission(auth=auth, check=check, response=response, rate=rate)


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
    decision = await resources.limiter.hit(rate, "read", auth.key_id)
    _apply(decision, response, rate=rate, name="read")
    return auth


CreateCaller = Annotated[CreateAdmission, Depends(create_caller)]
ReadCaller = Annotated[AuthContext, Depends(read_caller)]
KeyReadCaller = Annotated[AuthContext, Depends(key_read_caller)]
