"""`GET /metrics`: Prometheus exposition, behind `GATEWAY_METRICS_TOKEN` when one is set."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.errors import AuthenticationFailed, GatewayError
from app.metrics import LiveCollector, render
from app.ops.service import live_readings
from app.resources import Resources, ResourcesDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    """Counters and histograms of every worker, and the current open tasks and reservations."""
    return await _exposition(request, resources)


async def _exposition(request: Request, resources: Resources) -> Response:
    token = resources.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise AuthenticationFailed("The metrics token is missing or wrong.")
    live = LiveCollector(read=lambda: live_readings(resources))
    return Response(await render(resources.metrics, live), media_type=CONTENT_TYPE_LATEST)


def worker_metrics_app(resources: Resources) -> FastAPI:
    """What a `worker` process serves: its metrics (same token rule) and a liveness probe."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return exc.to_response("")

    app.add_exception_handler(GatewayError, refused)

    @app.get("/metrics")
    async def worker_metrics(request: Request) -> Response:
        return await _exposition(request, resources)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
