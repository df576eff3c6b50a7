"""The upstream client's transport: aiohttp under httpx's API (`httpx-aiohttp`).

bench/upstream_client.py measured it at about a quarter of httpx's own CPU time per call, and
the gateway makes one upstream call per create and per refresh. Its stock error mapping turns
every aiohttp connection error into `httpx.ConnectTimeout`, including a server that dropped the
connection after the request was sent. For a create that difference decides between "never
sent" and "may have landed", so errors are mapped again here from the aiohttp cause.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class UpstreamTransport(AiohttpTransport):
    """`AiohttpTransport` whose errors say whether the request can have reached the server."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; transport failures come back as the precise httpx error."""
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _httpx_error(exc.__cause__ or exc, request) from exc.__cause__
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _httpx_error(exc, request) from exc


def _httpx_error(cause: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = f"{type(cause).__name__}: {cause}"
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)  # no connection: nothing sent
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)  # no connection: nothing sent
    if isinstance(cause, TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(cause, httpx.TransportError):
        return cause
    return httpx.ReadError(message, request=request)  # the request may have been sent


def upstream_transport(*, max_connections: int) -> UpstreamTransport:
    """A pooled transport keeping up to `max_connections` connections to the upstream."""
    return UpstreamTransport(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
    )
