"""Pure ASGI middleware: a request id on every response, and the request-body size cap."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, new_request_id

CLIENT_REQUEST_ID = "x-client-request-id"


def request_id_of(request: Request) -> str:
    """The id the gateway gave this request (in `X-Request-Id` and error messages)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


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
        client_id = Headers(scope=scope).get(CLIENT_REQUEST_ID)

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                if client_id and len(client_id) <= 128:
                    headers["X-Client-Request-Id"] = client_id
            await send(message)

        await self.app(scope, receive, send_with_ids)


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
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
