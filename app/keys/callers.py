"""Who is calling: `authenticate_request` finds the caller behind the request's bearer key or
browser token, `require_key` insists that it holds a key. The route dependencies that use them
(`app.limits.deps`) count each request against its rate in the same step, as one dependency:
FastAPI spends CPU on every dependency it solves, on every request."""

from __future__ import annotations

from functools import partial

from fastapi import Request

from app.errors import AccessDenied, AuthenticationFailed
from app.keys.service import (
    AuthContext,
    authenticate,
    authenticate_token,
    hash_key,
    touch_last_used,
)
from app.keys.tokens import looks_like_token
from app.limits.auth_throttle import count_auth_failure, refuse_throttled_client
from app.limits.clients import client_address, in_networks
from app.logs import bind
from app.middleware import after_success
from app.resources import Resources


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer …` header, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 4096 or not token.isprintable():
        raise AuthenticationFailed()
    return token


async def authenticate_request(request: Request, resources: Resources) -> AuthContext:
    """Authenticate the caller, by gateway key or browser token; once a request of theirs has
    succeeded, note the key's use.

    The lookup uses a session of its own that ends before the endpoint runs, so no pooled
    connection is held while the client sends (perhaps slowly) its body.
    """
    context = _known_caller(request, resources)
    if context is None:  # not a key seen valid within the last second: the full check
        address = await refuse_throttled_client(request, resources)
        try:
            credential = bearer_token(request)
            if looks_like_token(credential):
                token = resources.token_signer.verify(credential)
                context = await authenticate_token(
                    resources.statements, token=token, cache=resources.auth_cache
                )
            else:
                context = await authenticate(
                    resources.statements, plaintext=credential, cache=resources.auth_cache
                )
        except AuthenticationFailed:
            await count_auth_failure(resources, address)
            raise
    if context.allowed_networks is not None and context.token_id is None:
        address = client_address(request, resources.trusted_proxies)
        if not in_networks(address, context.allowed_networks):
            # A key used from elsewhere is, to its owner, a stolen key: a failed authentication.
            await refuse_throttled_client(request, resources)
            await count_auth_failure(resources, address)
            raise AuthenticationFailed()
    after_success(request, partial(_note_use, resources, context.key_id))
    bind(user_id=context.user_id, key_prefix=context.key_prefix)
    return context


def require_key(caller: AuthContext) -> AuthContext:
    """The caller, who must hold a gateway key: a browser token may not mint tokens or read
    its user's usage."""
    if caller.token_id is not None:
        raise AccessDenied("A browser token cannot be used here; use a gateway key.")
    return caller


async def _note_use(resources: Resources, key_id: str) -> None:
    """Record the key's last use, at most once per resolution window per process."""
    resolution = resources.settings.key_last_used_resolution_seconds
    if resources.auth_cache.claim_touch(key_id, resolution=resolution):
        async with resources.sessionmaker() as session:
            await touch_last_used(session, key_id=key_id, resolution=resolution)


def _known_caller(request: Request, resources: Resources) -> AuthContext | None:
    """The caller, if its key was found valid within the auth cache's TTL (≤ 1 s): a key seen
    then, or a validly signed token of such a key.

    Such a request skips the failed-auth throttle's Redis read: a guesser's keys are never in
    the cache (nor are forged tokens validly signed), so a throttled address still gets nothing
    but 429s for them.
    """
    try:
        credential = bearer_token(request)
    except AuthenticationFailed:
        return None
    if not looks_like_token(credential):
        return resources.auth_cache.get(hash_key(credential))
    try:
        token = resources.token_signer.verify(credential)
    except AuthenticationFailed:
        return None
    parent = resources.auth_cache.get_by_id(token.key_id)
    return None if parent is None else parent.for_token(token)
