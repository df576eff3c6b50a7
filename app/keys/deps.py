"""The auth dependency: `CurrentKey` is the caller behind the request's bearer key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from app.errors import AuthenticationFailed
from app.keys.service import AuthContext, authenticate, hash_key, touch_last_used
from app.limits.auth_throttle import count_auth_failure, refuse_throttled_client
from app.resources import Resources, ResourcesDep

logger = logging.getLogger(__name__)


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer …` header, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256 or not token.isprintable():
        raise AuthenticationFailed()
    return token


async def current_key(request: Request, resources: ResourcesDep) -> AsyncIterator[AuthContext]:
    """Authenticate the caller; after a request that succeeded, note the key's last use.

    The lookup uses a session of its own that ends before the endpoint runs, so no pooled
    connection is held while the client sends (perhaps slowly) its body.
    """
    context = _known_key(request, resources)
    if context is None:  # not a key seen valid within the last second: the full check
        address = await refuse_throttled_client(request, resources)
        try:
            token = bearer_token(request)
            async with resources.sessionmaker() as session:
                context = await authenticate(session, plaintext=token, cache=resources.auth_cache)
        except AuthenticationFailed:
            await count_auth_failure(resources, address)
            raise
    yield context
    # Only reached when the endpoint did not raise: rejected requests write nothing.
    resolution = resources.settings.key_last_used_resolution_seconds
    if resources.auth_cache.claim_touch(context.key_id, resolution=resolution):
        try:  # after the answer: bookkeeping that may fail without failing anything else
            async with resources.sessionmaker() as session:
                await touch_last_used(session, key_id=context.key_id, resolution=resolution)
        except Exception as exc:
            logger.info("recording key %s's last use failed: %s", context.key_id, exc)


def _known_key(request: Request, resources: Resources) -> AuthContext | None:
    """The caller, if its key was found valid within the auth cache's TTL (≤ 1 s).

    Such a request skips the failed-auth throttle's Redis read: a guesser's keys are never in
    the cache, so a throttled address still gets nothing but 429s for them.
    """
    try:
        token = bearer_token(request)
    except AuthenticationFailed:
        return None
    return resources.auth_cache.get(hash_key(token))


CurrentKey = Annotated[AuthContext, Depends(current_key)]
