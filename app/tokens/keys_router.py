"""`/gateway/v1/keys`: a user's keys, managed by the user itself when its admin allows it
(`self_service_keys`): list them, create one (up to `max_keys` valid ones), revoke one. A
browser token cannot; another user's key is a 404, as an unknown id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from app.admin.audit import audited
from app.admin.schemas import KeyCreate, KeyCreated, KeyPublic
from app.db import SessionDep
from app.keys import lifecycle
from app.limits.clients import client_address
from app.limits.deps import KeyReadCaller
from app.resources import ResourcesDep

router = APIRouter(prefix="/gateway/v1/keys", tags=["keys"])


async def own_session(
    request: Request, session: SessionDep, resources: ResourcesDep, auth: KeyReadCaller
) -> AsyncSession:
    """The request's session, acting for the calling key: its changes are audited as its."""
    address = client_address(request, resources.trusted_proxies)
    return audited(session, actor=f"key:{auth.key_id}", address=address)


OwnSessionDep = Annotated[AsyncSession, Depends(own_session)]


@router.get("")
async def list_own_keys(auth: KeyReadCaller, session: OwnSessionDep) -> list[KeyPublic]:
    """The caller's user's keys (prefixes and metadata, never a secret)."""
    keys = await lifecycle.own_keys(session, auth=auth)
    return [KeyPublic.model_validate(key) for key in keys]


@router.post("", status_code=201)
async def create_own_key(
    body: KeyCreate, auth: KeyReadCaller, session: OwnSessionDep
) -> KeyCreated:
    """A new key for the caller's user; the plaintext is in this answer only."""
    key, plaintext = await lifecycle.create_own_key(
        session,
        auth=auth,
        name=body.name,
        expires_at=body.expires_at,
        networks=body.allowed_networks,
    )
    return KeyCreated.shown_once(key, plaintext)


@router.delete("/{key_id}")
async def revoke_own_key(key_id: str, auth: KeyReadCaller, session: OwnSessionDep) -> KeyPublic:
    """Revoke one of the caller's user's keys (the caller's own too); within a second it stops
    working everywhere."""
    return KeyPublic.model_validate(
        await lifecycle.revoke_own_key(session, auth=auth, key_id=key_id)
    )
