"""Self-service usage for gateway keys, outside `/api/v3`: what front ends show their users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.db import SessionDep
from app.limits.deps import KeyReadCaller, ReadCaller
from app.resources import ResourcesDep
from app.tasks.validation import validate_create
from app.usage.quote import quote
from app.usage.reports import self_service_usage

router = APIRouter(prefix="/gateway/v1", tags=["usage"])


@router.get("/usage")
async def my_usage(session: SessionDep, auth: KeyReadCaller) -> dict[str, Any]:
    """This month's usage of the caller's user, by model, and the room left in its budgets."""
    return await self_service_usage(session, user_id=auth.user_id, key_id=auth.key_id)


@router.post("/quote")
async def quote_create(
    request: Request, session: SessionDep, resources: ResourcesDep, auth: ReadCaller
) -> dict[str, Any]:
    """What a create with this body would reserve and cost now (and what the caller would be
    charged), validated exactly as a create; nothing is written or sent upstream."""
    create = validate_create(
        await request.body(),
        allowed_models=auth.allowed_models,
        aliases=resources.settings.model_aliases,
    )
    return await quote(
        session,
        request=create,
        user_id=auth.user_id,
        key_id=auth.key_id,
        plan_id=auth.plan_id,
        cache=resources.prices,
    )
