"""The auth dependency: `CurrentKey` is the caller behind the request's bearer key."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Depends, Request

from app.errors import AuthenticationFailed
from app.keys.service import AuthContext, authenticate, hash_key, touch_last_used
from app.limits.auth_throttle import count_auth_failure, refuse_throttled_client
from app.middleware import after_success
from app.resources import Resources, ResourcesDep


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer …` header, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256 or not token.isprintable():
        raise AuthenticationFailed()
    return token


async def current_key(request: Request, resources: ResourcesDep) -> AuthContext:
    """Authenticate the caller; once a request of theirs has succeeded, note the key's use.

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
    after_success(request, partial(_note_use, resources, context.key_id))
    return context


async def _note_use(resources: Resources, key_id: str) -> None:
    """Record the key's last use, at most once per resolution window per process."""
    resolution = resources.settings.key_last_used_resolution_seconds
    if resources.auth_cache.claim_touch(key_id, resolution=resolution):
        async with resources.sessionmaker() as session:
            await touch_last_used(session, key_id=key_id, resolution=resolution)


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
