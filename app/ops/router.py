"""`GET /metrics`: Prometheus exposition, behind `GATEWAY_METRICS_TOKEN` when one is set."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.errors import AuthenticationFailed
from app.metrics import LiveCollector, render
from app.ops.service import live_readings
from app.resources import ResourcesDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    """Counters and histograms of every worker, and the current open tasks and reservations."""
    token = resources.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise AuthenticationFailed("The metrics token is missing or wrong.")
    live = LiveCollector(read=lambda: live_readings(resources))
    return Response(await render(resources.metrics, live), media_type=CONTENT_TYPE_LATEST)
