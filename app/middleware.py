"""Pure ASGI middleware: a request id on every response, the last-resort 500, and the body cap.

An unexpected error is rendered here rather than by Starlette's outermost handler, which
re-raises it and makes the server drop the keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    InternalError,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    new_request_id,
)
from app.logs import bind

logger = logging.getLogger(__name__)

CLIENT_REQUEST_ID = "x-client-request-id"


def request_id_of(request: Request) -> str:
    """The id the gateway gave this request (in `X-Request-Id` and error messages)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def after_success(request: Request, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job` once the answer is sent, if it was a success (below 400): bookkeeping that a
    rejected request must not write. A job that fails is logged and fails nothing else."""
    request.scope.setdefault("state", {}).setdefault("after_success", []).append(job)


class RequestContextMiddleware:
    """Gives each request an id; answers with `X-Request-Id` and echoes `X-Client-Request-Id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        bind(request_id=request_id, user_id=None, key_prefix=None, task_id=None)
        client_id = Headers(scope=scope).get(CLIENT_REQUEST_ID)
        if _has_control_characters(scope):
            # No id, name or filter has one; PostgreSQL refuses NUL in text outright.
            refusal = InvalidParameter(
                "url", "the path or query has control or non-ASCII characters"
            )
            await refusal.to_response(request_id)(scope, receive, send)
            return

        started = False
        status = 500
        error_code = ""
        began = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal started, status, error_code
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                if client_id and len(client_id) <= 128 and client_id.isprintable():
                    headers["X-Client-Request-Id"] = client_id
            elif status >= 400 and not error_code:
                error_code = _error_code(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for an answer: the server closes the connection
            error = InternalError("The service encountered an unexpected internal error.")
            await error.to_response(request_id)(scope, receive, send_with_ids)
        finally:
            _count(scope, status, error_code, time.perf_counter() - began)
        if status < 400:
            await _run_after_success(scope)


def _error_code(body: bytes) -> str:
    """The `code` of an Ark error envelope (every error answer is one), or `unknown`."""
    try:
        return str(json.loads(body)["error"]["code"])[:64]
    except (ValueError, KeyError, TypeError):
        return "unknown"


def _count(scope: Scope, status: int, code: str, seconds: float) -> None:
    """Count the answer: by route template (never the raw path), method, status and error
    code; limit refusals (429) by code too."""
    resources = getattr(scope["app"].state, "resources", None)
    if resources is None:  # the app is not started (or is stopping)
        return
    metrics = resources.metrics
    route = getattr(scope.get("route"), "path", "unmatched")
    method = scope.get("method", "")
    metrics.requests.labels(route, method, str(status), code).inc()
    metrics.latency.labels(route, method).observe(seconds)
    if status == 429:
        metrics.refusals.labels(code).inc()


async def _run_after_success(scope: Scope) -> None:
    for job in scope["state"].get("after_success", ()):
        try:
            await job()
        except Exception as exc:
            logger.info("work after the answer failed: %s: %s", type(exc).__name__, exc)


def _has_control_characters(scope: Scope) -> bool:
    """Paths and queries here hold ids, model names, enums and dates: printable ASCII only."""
    path: str = scope.get("path", "")
    query = unquote(scope.get("query_string", b"").decode("latin-1"))
    text = path + query
    return not (text.isascii() and text.isprintable())


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, before anything parses them, and bodies that
    take longer than `read_timeout` seconds to arrive with 408."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, read_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and not (
            declared.isascii()
            and declared.isdigit()
            and len(declared) <= 18
            and int(declared) <= self.max_bytes
        ):
            await self._refuse(scope, receive, send)
            return
        received = 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later reads only wait for a disconnect: no deadline there
                return await receive()
            try:  # not `wait_for`: it would run each read as a task of its own
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body did not arrive within {self.read_timeout:g} seconds.",
                    param="body",
                ) from None
            body_done = not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body exceeds the limit of {self.max_bytes} bytes.", param="body"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(scope.get("state", {}).get("request_id", ""))
        response = self._too_large().to_response(request_id)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class ListedOriginsCORS(CORSMiddleware):
    """CORS for the listed origins only: a request from any other origin passes through as if
    CORS did not exist (no CORS headers at all; its preflight meets the API's own 405)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = Headers(scope=scope).get("origin") if scope["type"] == "http" else None
        if origin is None or not self.is_allowed_origin(origin):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
