"""The only code that speaks HTTP to Seedance: the four task calls, with the master key.

Upstream answers are mapped onto the gateway's errors here:
- 4xx (not 401/403): relayed as the upstream worded it, `Retry-After` kept on 429;
- 401/403: our master key's problem, logged for the operator, a 502 for the client;
- 5xx, bad JSON: 502; timeouts: 504. `maybe_created` says whether a create may have landed.

Each call's outcome is told to the account's health watcher (`app.upstream.pool`): `answered`
(any answer but those below), `refused` (401/403: the master key), `failed` (5xx, unreadable,
unreachable, timed out).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import httpx

from app.errors import UpstreamFailure, UpstreamRelayed, UpstreamTimeout
from app.metrics import Metrics
from app.upstream.transport import upstream_transport

logger = logging.getLogger(__name__)

TASKS_PATH = "/contents/generations/tasks"
Outcome = Literal["answered", "refused", "failed"]
_RELAYED_HEADERS = ("retry-after",)


class UpstreamCallFailed(UpstreamFailure):
    """The upstream failed (5xx, refused our key, unreadable, unreachable)."""

    def __init__(self, message: str, *, maybe_created: bool, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.maybe_created = maybe_created


class UpstreamTimedOut(UpstreamTimeout):
    """The upstream did not answer in time; a create may have landed."""

    maybe_created = True


def create_http_client(
    *,
    base_url: str,
    api_key: str,
    timeout: float,
    connect_timeout: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The pooled client that carries the master key; made once, in the lifespan.

    The transport is aiohttp's (see `app.upstream.transport`) unless a test passes its own.
    """
    return _CookielessClient(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        transport=transport or upstream_transport(max_connections=max_connections),
    )


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep no cookie from `response`."""


class _CookielessClient(httpx.AsyncClient):
    """httpx's client with no cookie jar: the master key is the upstream's only credential, and
    feeding every answer through urllib's cookie jar was 3% of a create's CPU."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()  # one empty jar that every request reads

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, _cookies: object) -> None:
        """Cookies given to the client are ignored (none are)."""


class UpstreamClient:
    """Seedance's task API for one account, as async methods returning parsed JSON; each call
    is counted by account, kind and status (`timeout` and `unreachable` when there is none)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        metrics: Metrics | None = None,
        on_outcome: Callable[[Outcome], Awaitable[None]] | None = None,
        account_id: str = "default",
    ) -> None:
        self._http = http
        # Absolute, parsed once: httpx would parse and merge a path with its base on every call.
        self._tasks_url = httpx.URL(str(http.base_url).rstrip("/") + TASKS_PATH)
        self._calls = metrics.upstream_calls if metrics is not None else None
        # Told each call's outcome: the account's health (a refused key raises an alert).
        self._on_outcome = on_outcome
        self._account_id = account_id

    async def aclose(self) -> None:
        """Close its connections."""
        await self._http.aclose()

    async def create_task(self, body: dict[str, Any], *, request_id: str) -> dict[str, Any]:
        """POST a create; returns the upstream body (`{"id": ...}`)."""
        return await self._call(
            "POST", self._tasks_url, request_id=request_id, json=body, creates=True, kind="create"
        )

    async def get_task(self, upstream_id: str, *, request_id: str) -> dict[str, Any]:
        """GET one task object."""
        return await self._call(
            "GET", self._task_url(upstream_id), request_id=request_id, kind="retrieve"
        )

    async def list_tasks(
        self, params: list[tuple[str, str | int]], *, request_id: str
    ) -> dict[str, Any]:
        """GET the account's task list (open tasks observed in bulk; unknown creates reconciled)."""
        return await self._call(
            "GET", self._tasks_url, request_id=request_id, params=params, kind="list"
        )

    async def delete_task(self, upstream_id: str, *, request_id: str) -> None:
        """DELETE (cancel a queued task, or delete a finished one)."""
        await self._call(
            "DELETE", self._task_url(upstream_id), request_id=request_id, json={}, kind="delete"
        )

    def _task_url(self, upstream_id: str) -> httpx.URL:
        return httpx.URL(f"{self._tasks_url}/{upstream_id}")

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        request_id: str,
        kind: str,
        creates: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        headers = {"X-Client-Request-Id": request_id}
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            await self._count(kind, "timeout", "failed")
            # A connect timeout means the request never left; anything later may have landed.
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            if sent:
                raise UpstreamTimedOut("The upstream service did not answer in time.") from None
            raise UpstreamCallFailed(
                "The upstream service is unreachable.", maybe_created=False
            ) from None
        except httpx.TransportError as exc:
            await self._count(kind, "unreachable", "failed")
            sent = not isinstance(exc, httpx.ConnectError)
            logger.warning(
                "upstream %s %s transport error: %s", method, url.path, type(exc).__name__
            )
            raise UpstreamCallFailed(
                "The upstream service is unreachable.", maybe_created=creates and sent
            ) from None
        status = response.status_code
        outcome: Outcome = (
            "refused" if status in (401, 403) else "failed" if status >= 500 else "answered"
        )
        try:
            return _parse(response, method=method, path=url.path, creates=creates)
        except UpstreamCallFailed:
            outcome = "refused" if outcome == "refused" else "failed"  # unreadable 2xx too
            raise
        finally:
            await self._count(kind, str(status), outcome)

    async def _count(self, kind: str, status: str, outcome: Outcome) -> None:
        if self._calls is not None:
            self._calls.labels(self._account_id, kind, status).inc()
        if self._on_outcome is not None:
            try:
                await self._on_outcome(outcome)
            except Exception:  # health and alerts are a bonus; the answer is what matters
                logger.exception("recording the upstream's health failed")


def _parse(response: httpx.Response, *, method: str, path: str, creates: bool) -> dict[str, Any]:
    status = response.status_code
    body = _json_or_none(response)
    if 200 <= status < 300:
        if not isinstance(body, dict):
            logger.error("upstream %s %s answered %s with a non-object body", method, path, status)
            raise UpstreamCallFailed(
                "The upstream service sent an unreadable answer.", maybe_created=creates
            )
        return body
    error = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "")
    if status in (401, 403):
        logger.error(
            "upstream refused the gateway's master key: HTTP %s code=%s (check "
            "GATEWAY_UPSTREAM_API_KEY and the account)",
            status,
            code or "-",
        )
        raise UpstreamCallFailed(
            "The gateway's upstream credentials were refused.",
            maybe_created=False,
            code="UpstreamAuthenticationError",
        )
    if status >= 500 or status < 400:
        logger.warning("upstream %s %s answered HTTP %s code=%s", method, path, status, code or "-")
        raise UpstreamCallFailed(
            "The upstream service encountered an error.", maybe_created=creates
        )
    headers = {
        name: response.headers[name] for name in _RELAYED_HEADERS if name in response.headers
    }
    raise UpstreamRelayed(
        status=status,
        code=code or "InvalidParameter",
        message=str(error.get("message") or "The upstream service refused the request."),
        param=str(error.get("param") or ""),
        error_type=str(error.get("type") or "BadRequest"),
        headers=headers,
    )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
