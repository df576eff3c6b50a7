"""Self-service usage for gateway keys, outside `/api/v3`: what front ends show their users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.db import SessionDep
from app.limits.deps import KeyReadCaller
from app.usage.reports import self_service_usage

router = APIRouter(prefix="/gateway/v1", tags=["usage"])


@router.get("/usage")
async def my_usage(session: SessionDep, auth: KeyReadCaller) -> dict[str, Any]:
    """This month's usage of the caller's user, by model, and the room left in its budgets."""
    return await self_service_usage(session, user_id=auth.user_id, key_id=auth.key_id)
