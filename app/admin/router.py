"""Admin routes under `/admin/v1`: users and their keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from app.admin import audit
from app.admin.deps import AdminSessionDep, require_admin
from app.admin.schemas import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyRotate,
    KeyUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from app.db import utcnow
from app.errors import InvalidParameter
from app.keys import lifecycle, service
from app.tasks import service as task_service

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/users", status_code=201)
async def create_user(body: UserCreate, session: AdminSessionDep) -> UserPublic:
    """Create a user."""
    user = await service.create_user(session, name=body.name, allowed_models=body.allowed_models)
    return UserPublic.model_validate(user)


@router.get("/users")
async def list_users(session: AdminSessionDep) -> list[UserPublic]:
    """List every user."""
    return [UserPublic.model_validate(user) for user in await service.list_users(session)]


@router.get("/users/{user_id}")
async def get_user(user_id: str, session: AdminSessionDep) -> UserPublic:
    """Show one user."""
    return UserPublic.model_validate(await service.get_user(session, user_id=user_id))


@router.patch("/users/{user_id}")
async def update_user(user_id: str, body: UserUpdate, session: AdminSessionDep) -> UserPublic:
    """Rename, disable or re-enable a user, or change the models it may use."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("name", "disabled", "self_service_keys"):
        if changes.get(name) is None:
            changes.pop(name, None)
    user = await service.update_user(session, user_id=user_id, changes=changes)
    return UserPublic.model_validate(user)


@router.post("/users/{user_id}/keys", status_code=201)
async def create_key(user_id: str, body: KeyCreate, session: AdminSessionDep) -> KeyCreated:
    """Issue a key; the plaintext is in this answer and nowhere else, ever."""
    key, plaintext = await service.create_key(
        session,
        user_id=user_id,
        name=body.name,
        expires_at=body.expires_at,
        allowed_networks=body.allowed_networks,
    )
    return KeyCreated.shown_once(key, plaintext)


@router.get("/users/{user_id}/keys")
async def list_keys(user_id: str, session: AdminSessionDep) -> list[KeyPublic]:
    """A user's keys (prefix and metadata only)."""
    return [
        KeyPublic.model_validate(key) for key in await service.list_keys(session, user_id=user_id)
    ]


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, session: AdminSessionDep) -> KeyPublic:
    """Rename a key, change its limit overrides (null restores the default), its expiry (null:
    never) or the networks it may be used from (null: anywhere)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)
    if changes.get("expires_at") is not None and changes["expires_at"] <= utcnow():
        raise InvalidParameter("expires_at", "must be in the future")
    return KeyPublic.model_validate(
        await service.update_key(session, key_id=key_id, changes=changes)
    )


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: str, body: KeyRotate, session: AdminSessionDep) -> KeyCreated:
    """A new secret for the key (shown once), same id, user, name, limits and budgets; the
    former secret keeps working for `grace_seconds`, then stops everywhere within a second."""
    key, plaintext = await lifecycle.rotate_key(
        session, key_id=key_id, grace=timedelta(seconds=body.grace_seconds)
    )
    return KeyCreated.shown_once(key, plaintext)


@router.get("/keys/expiring")
async def expiring_keys(
    session: AdminSessionDep, within_days: Annotated[int, Query(ge=0, le=3650)] = 7
) -> list[KeyPublic]:
    """Keys (not revoked) that expire within `within_days`, or whose former secret does."""
    keys = await lifecycle.expiring_keys(session, within=timedelta(days=within_days))
    return [KeyPublic.model_validate(key) for key in keys]


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, session: AdminSessionDep) -> KeyPublic:
    """Revoke a key; it stops working on every process within a second."""
    return KeyPublic.model_validate(await service.revoke_key(session, key_id=key_id))


@router.get("/tasks/{task_id}")
async def task_detail(task_id: str, session: AdminSessionDep) -> dict[str, Any]:
    """A task as the gateway keeps it: owner, key, token, upstream id, tokens, and its archive
    copy's progress (attempts, last error, sizes) when the archive is on."""
    return await task_service.task_detail(session, task_id=task_id)


@router.get("/audit")
async def audit_log(
    session: AdminSessionDep,
    entity: Literal["user", "key", "price", "budget", "account"] | None = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Admin changes, newest first: who (`admin`, `cli:<user>`), from where, when, what, and
    the values before and after (never a key or its hash)."""
    entries = await audit.audit_log(session, entity=entity, entity_id=entity_id, limit=limit)
    return [entry.model_dump() for entry in entries]
