"""Running the gateway under uvicorn: the same server settings and logging in every process.

uvicorn's fast HTTP parser (httptools) has no limit on the size of request headers: a client
could make a process buffer gigabytes of them. `HeaderLimitedProtocol` refuses a request whose
head exceeds the limit that uvicorn applies to its other parser (h11), with a 431.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings
from app.errors import new_request_id
from app.logs import configure_logging
from app.metrics import MULTIPROCESS_DIR


class HeaderLimitedProtocol(HttpToolsProtocol):
    """httptools, with the request line and headers limited to `h11_max_incomplete_event_size`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit: int = self.config.h11_max_incomplete_event_size or 32 * 1024
        self._head_bytes = 0
        self._reading_head = True

    def data_received(self, data: bytes) -> None:
        """Count the bytes of the request head; past the limit, answer 431 and close."""
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is in: the body that follows is not counted against the head limit."""
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next request on this connection starts with a head again."""
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()

    def _refuse_head(self) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "RequestHeaderFieldsTooLarge",
                    "message": f"The request headers exceed {self._head_limit} bytes. "
                    f"Request id: {new_request_id()}",
                    "param": "headers",
                    "type": "BadRequest",
                }
            }
        ).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options every gateway process runs with."""
    return {
        "http": HeaderLimitedProtocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "log_config": None,  # `configure_logging` (below and in each worker) owns logging
        "proxy_headers": False,  # X-Forwarded-For is believed only from GATEWAY_TRUSTED_PROXIES
        "timeout_keep_alive": 15,
        # SIGTERM: stop accepting, let in-flight requests (a create in particular) finish.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
    }


def app_from_environment() -> FastAPI:
    """The app for a uvicorn worker process: its logging set up exactly as the parent's."""
    from app.main import create_app  # the web stack loads only in processes that serve

    settings = Settings()
    configure_logging(
        settings.log_level, secrets=settings.secrets(), log_format=settings.log_format
    )
    return create_app(settings)


def serve_gateway(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve the gateway; with several workers each one builds its app from the environment."""
    if workers > 1:
        # Every worker writes its metric samples here and /metrics adds them up (a fresh
        # directory each start: samples of processes gone must not linger).
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="sgw-metrics-")
        uvicorn.run(
            "app.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **server_options(settings),
        )
        return
    from app.main import create_app

    uvicorn.run(create_app(settings), host=host, port=port, **server_options(settings))
