"""The admin guard: `Authorization: Bearer $GATEWAY_ADMIN_TOKEN`, compared in constant time."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from app.admin.audit import audited
from app.db import SessionDep
from app.errors import AuthenticationFailed
from app.keys.callers import bearer_token
from app.limits.auth_throttle import count_auth_failure, refuse_throttled_client
from app.limits.clients import client_address
from app.resources import ResourcesDep


async def require_admin(request: Request, resources: ResourcesDep) -> None:
    """401 unless the request carries the admin token (the admin API is off without one)."""
    configured = resources.settings.admin_token
    if configured is None:
        raise AuthenticationFailed("The admin API is disabled: GATEWAY_ADMIN_TOKEN is not set.")
    address = await refuse_throttled_client(request, resources)
    try:
        presented = bearer_token(request)
    except AuthenticationFailed:
        presented = ""
    if not secrets.compare_digest(presented.encode(), configured.get_secret_value().encode()):
        await count_auth_failure(resources, address)
        raise AuthenticationFailed("The admin token in the request is missing or invalid.")


async def admin_session(
    request: Request, session: SessionDep, resources: ResourcesDep
) -> AsyncSession:
    """The request's session, acting for the admin: each change it makes is audited."""
    address = client_address(request, resources.trusted_proxies)
    return audited(session, actor="admin", address=address)


AdminSessionDep = Annotated[AsyncSession, Depends(admin_session)]
