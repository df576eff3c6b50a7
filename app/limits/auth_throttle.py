"""Throttling of failed authentication per client address, so keys cannot be guessed."""

from __future__ import annotations

from starlette.requests import Request

from app.limits.clients import client_address
from app.limits.rates import refusal
from app.resources import Resources


async def refuse_throttled_client(request: Request, resources: Resources) -> str:
    """429 if this client address has sent too many bad keys lately; returns the address."""
    address = client_address(request, resources.trusted_proxies)
    exhausted = await resources.limiter.is_exhausted(
        resources.settings.auth_failure_limit, "authfail", address
    )
    if exhausted is not None:
        raise refusal(
            exhausted,
            "Too many failed authentications from this address.",
            "RateLimitExceeded.AuthFailures",
        )
    return address


async def count_auth_failure(resources: Resources, address: str) -> None:
    """Count one bad key (or admin token) from `address`; 429 if it was one too many.

    The count decides, not the check before it: of many bad keys sent at once, only as many
    as the limit allows are answered 401.
    """
    decision = await resources.limiter.hit(
        resources.settings.auth_failure_limit, "authfail", address
    )
    if not decision.allowed:
        raise refusal(
            decision,
            "Too many failed authentications from this address.",
            "RateLimitExceeded.AuthFailures",
        )
