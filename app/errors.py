"""Every error the gateway answers with, rendered as the Ark envelope.

GatewayError                      any status; renders {"error": {code, message, param, type}}
├── InvalidParameter              400 BadRequest
├── MissingParameter              400 BadRequest
├── AuthenticationFailed          401 Unauthorized
├── AccessDenied                  403 Forbidden (a browser token where only a key may go)
├── NotFound                      404 NotFound (unknown route, unknown task, other user's task)
│   └── ModelNotFound             404 NotFound (unknown model or one the key may not use)
├── MethodNotAllowed              405 MethodNotAllowed
├── RequestTimeout                408 RequestTimeout (the client sent its body too slowly)
├── Conflict                      409 Conflict
├── Gone                          410 Gone (an output whose upstream link has expired)
├── PayloadTooLarge               413 RequestEntityTooLarge
├── RangeNotSatisfiable           416 RangeNotSatisfiable, with Content-Range when known
├── UnprocessableEntity           422 UnprocessableEntity (an Idempotency-Key reused elsewhere)
├── TooManyRequests               429 TooManyRequests, with Retry-After
├── InternalError                 500 InternalServerError
├── UpstreamFailure               502 BadGateway (upstream 5xx, or it refused our master key)
│   └── UpstreamCallFailed        app.upstream.client; says whether a create may have landed
├── ServiceUnavailable            503 ServiceUnavailable, with Retry-After (the database is out)
├── UpstreamTimeout               504 GatewayTimeout
│   └── UpstreamTimedOut          app.upstream.client; a create may have landed
└── UpstreamRelayed               the upstream's own 4xx, passed through
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar

from starlette.responses import Response


def new_request_id() -> str:
    """An id shaped like the upstream's: '021', 13 ms-timestamp digits, 37 hex digits."""
    return f"021{int(time.time() * 1000):013d}{os.urandom(19).hex()[:37]}"


class GatewayError(Exception):
    """Base of every error the gateway renders; subclasses fix status, type and default code."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "InternalServerError"
    default_code: ClassVar[str] = "InternalServiceError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = dict(headers or {})

    def status(self) -> int:
        """The HTTP status to answer with."""
        return self.status_code

    def kind(self) -> str:
        """The envelope's `type` field."""
        return self.error_type

    def envelope(self, request_id: str) -> dict[str, Any]:
        """The Ark error body; the message ends with the request id, as upstream's do."""
        message = self.message.rstrip()
        if request_id and "request id:" not in message.lower():
            message = f"{message} Request id: {request_id}"
        return {
            "error": {
                "code": self.code,
                "message": message,
                "param": self.param,
                "type": self.kind(),
            }
        }

    def to_response(self, request_id: str) -> Response:
        """Render as a JSON response carrying the error's headers and the request id."""
        headers = {**self.headers, "X-Request-Id": request_id}
        return Response(
            content=json.dumps(self.envelope(request_id), ensure_ascii=False),
            status_code=self.status(),
            media_type="application/json",
            headers=headers,
        )


class InvalidParameter(GatewayError):
    status_code = 400
    error_type = "BadRequest"
    default_code = "InvalidParameter"

    def __init__(self, param: str, reason: str, **kwargs: Any) -> None:
        message = f"The parameter `{param}` specified in the request is not valid: {reason}."
        super().__init__(message, param=param, **kwargs)


class MissingParameter(GatewayError):
    status_code = 400
    error_type = "BadRequest"
    default_code = "MissingParameter"

    def __init__(self, param: str) -> None:
        super().__init__(
            "The request failed because it is missing one or multiple required parameters: "
            f"`{param}`.",
            param=param,
        )


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "Unauthorized"
    default_code = "AuthenticationError"

    def __init__(self, message: str = "The API key in the request is missing or invalid.") -> None:
        super().__init__(message)


class AccessDenied(GatewayError):
    status_code = 403
    error_type = "Forbidden"
    default_code = "AccessDenied"


class NotFound(GatewayError):
    status_code = 404
    error_type = "NotFound"
    default_code = "ResourceNotFound"


class ModelNotFound(NotFound):
    default_code = "InvalidEndpointOrModel.NotFound"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model or endpoint {model} does not exist or you do not have access to it.",
            param="model",
        )


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "MethodNotAllowed"
    default_code = "MethodNotAllowed"


class RequestTimeout(GatewayError):
    status_code = 408
    error_type = "RequestTimeout"
    default_code = "RequestTimeout"


class Conflict(GatewayError):
    status_code = 409
    error_type = "Conflict"
    default_code = "InvalidAction"


class Gone(GatewayError):
    status_code = 410
    error_type = "Gone"
    default_code = "ResourceGone"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "RequestEntityTooLarge"
    default_code = "RequestEntityTooLarge"


class RangeNotSatisfiable(GatewayError):
    status_code = 416
    error_type = "RangeNotSatisfiable"
    default_code = "InvalidRange"

    def __init__(self, *, content_range: str | None = None) -> None:
        headers = {"Content-Range": content_range} if content_range else None
        super().__init__(
            "The Range header is not one byte range within the content.",
            param="Range",
            headers=headers,
        )


class UnprocessableEntity(GatewayError):
    status_code = 422
    error_type = "UnprocessableEntity"
    default_code = "UnprocessableEntity"


class TooManyRequests(GatewayError):
    status_code = 429
    error_type = "TooManyRequests"
    default_code = "RateLimitExceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool = True,
    ) -> None:
        merged = {"Retry-After": str(max(1, retry_after)), **(headers or {})}
        if not retryable:
            merged["x-should-retry"] = "false"
        super().__init__(message, code=code, headers=merged)


class InternalError(GatewayError):
    pass


class UpstreamFailure(GatewayError):
    status_code = 502
    error_type = "BadGateway"
    default_code = "UpstreamServiceError"


class ServiceUnavailable(GatewayError):
    status_code = 503
    error_type = "ServiceUnavailable"
    default_code = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after))


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "GatewayTimeout"
    default_code = "UpstreamTimeout"


class UpstreamRelayed(GatewayError):
    """An upstream 4xx passed through as the upstream worded it."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        param: str,
        error_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, headers=headers)
        self._status = status
        self._type = error_type

    def status(self) -> int:
        return self._status

    def kind(self) -> str:
        return self._type
