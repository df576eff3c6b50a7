"""Liveness and readiness probes for load balancers and Kubernetes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.limits.rates import describe
from app.resources import ResourcesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """The process can serve: its database answers. Details name each dependency's state."""
    checks: dict[str, Any] = {"mode": "demo" if resources.settings.demo_mode else "upstream"}
    try:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the type is enough detail
        checks["database"] = f"error: {type(exc).__name__}"
    checks["rate_limits"] = describe(resources.limiter)
    ready = checks["database"] == "ok"
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
