"""The ASGI app: `create_app()` wires middleware, error handlers and routers.

The lifespan owns the resources (engine, upstream client, caches).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from app.admin.accounts_router import router as accounts_router
from app.admin.billing_router import router as billing_router
from app.admin.router import router as admin_router
from app.config import Settings
from app.console.router import install_console
from app.db_direct import DRIVER_UNAVAILABLE
from app.docs import install_docs
from app.errors import (
    GatewayError,
    InternalError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from app.health import router as health_router
from app.lifespan import open_resources, running_background
from app.middleware import (
    BodyLimitMiddleware,
    ListedOriginsCORS,
    RequestContextMiddleware,
    request_id_of,
)
from app.openapi import gateway_openapi
from app.ops.router import router as ops_router
from app.tasks.router import outputs_router
from app.tasks.router import router as tasks_router
from app.tokens.keys_router import router as keys_router
from app.tokens.router import router as tokens_router
from app.usage.router import router as usage_router

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    callback_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway; `upstream_transport` routes upstream calls to, say, a simulator app."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(
            settings, upstream_transport=upstream_transport, callback_transport=callback_transport
        ) as resources:
            app.state.resources = resources
            async with running_background(resources):
                yield

    app = FastAPI(
        title="Seedance Gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # app.docs serves it, with no CDN
        redoc_url=None,
    )
    app.include_router(tasks_router)
    app.include_router(outputs_router)
    app.include_router(admin_router)
    app.include_router(billing_router)
    app.include_router(accounts_router)
    app.include_router(usage_router)
    app.include_router(tokens_router)
    app.include_router(keys_router)
    app.include_router(health_router)
    app.include_router(ops_router)
    install_docs(app)
    install_console(app)
    _install_error_handlers(app)
    app.openapi = lambda: gateway_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware)  # every answer gets a request id
    if settings.cors_origins:  # outermost: a preflight is answered before anything else runs
        app.add_middleware(
            ListedOriginsCORS,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    return app


# What a page may send besides the simple headers, and what it may read of an answer.
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Range",
    "X-Client-Request-Id",
]
CORS_EXPOSED_HEADERS = [
    "X-Request-Id",
    "X-Client-Request-Id",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Content-Range",
    "Accept-Ranges",
    "Content-Length",
    "ETag",
]


# What the database drivers raise when the database is down, frozen or out of connections.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
    *DRIVER_UNAVAILABLE,
)


def _is_unavailable(exc: sa_exc.DBAPIError) -> bool:
    """Whether a generic DBAPIError is the database being out of reach: SQLAlchemy raises one
    for what asyncpg raises while PostgreSQL starts up (57P03) or shuts down."""
    if exc.connection_invalidated:
        return True
    cause: BaseException | None = exc.orig
    while cause is not None:
        if isinstance(cause, DATABASE_UNAVAILABLE):
            return True
        cause = cause.__cause__
    return False


def _methods_at(request: Request) -> list[str]:
    """Every method some route serves at this path (FastAPI makes one route per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return exc.to_response(request_id_of(request))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        first: dict[str, Any] = dict(exc.errors()[0])
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        param = loc[0] if loc else "body"
        error = InvalidParameter(param, str(first.get("msg", "invalid value")))
        return error.to_response(request_id_of(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: GatewayError
        if exc.status_code == 405:
            error = MethodNotAllowed(
                f"The method {request.method} is not allowed here.",
                headers={"Allow": ", ".join(_methods_at(request))},
            )
        elif exc.status_code == 404:
            error = NotFound("The requested resource is not found.")
        elif exc.status_code == 413:
            error = PayloadTooLarge("The request body is too large.", param="body")
        elif exc.status_code < 500:  # FastAPI's own 4xx, e.g. a body it could not parse
            error = InvalidParameter("body", str(exc.detail).rstrip("."))
        else:
            error = InternalError("The service encountered an unexpected internal error.")
        return error.to_response(request_id_of(request))

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        logger.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        error = ServiceUnavailable("The service is temporarily unavailable; retry later.")
        return error.to_response(request_id_of(request))

    async def database_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, sa_exc.DBAPIError)
        if not _is_unavailable(exc):
            raise exc  # a fault of ours: the 500, logged with its traceback
        return await database_unavailable(request, exc)

    async def client_disconnected(request: Request, exc: Exception) -> Response:
        # The client's end, not ours: nothing was written, and nobody reads this answer.
        logger.info("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    for error_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_class, database_unavailable)
    app.add_exception_handler(sa_exc.DBAPIError, database_error)


def __getattr__(name: str) -> Any:
    # `app.main:app` for uvicorn, built on first access so importing this module has no effects.
    if name == "app":  # logging set up as `serve` does it, redaction of secrets included
        from app.server import app_from_environment

        return app_from_environment()
    raise AttributeError(name)
