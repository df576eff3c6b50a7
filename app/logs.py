"""Logging set-up: text or JSON lines (python-json-logger), each line about a request carrying
its request id and, once known, the user, the key's prefix and the task; and a filter that
blanks secrets should any ever reach a log line, in both formats and in every process."""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_GATEWAY_KEY = re.compile(r"sgw-[A-Za-z0-9]{8,}")
# Browser tokens (JWTs) and the signatures of output links: each grants access while it lives.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_LINK_SIGNATURE = re.compile(r"(?i)(signature=)[0-9a-f]+")

# What the current request is about; set as it becomes known, read by every log line.
CONTEXT_FIELDS = ("request_id", "user_id", "key_prefix", "task_id")
_CONTEXT: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"log_{name}", default=None) for name in CONTEXT_FIELDS
}


def bind(**fields: str | None) -> None:
    """Add what is now known about the current request (`request_id`, `user_id`,
    `key_prefix`, `task_id`) to its log lines; it lasts as long as the request's context."""
    for name, value in fields.items():
        _CONTEXT[name].set(value)


class RedactSecrets(logging.Filter):
    """Replaces the master key, admin token, bearer tokens, gateway keys, browser tokens and
    output-link signatures with `***`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _GATEWAY_KEY.sub("sgw-***", _BEARER.sub(r"\1***", message))
        cleaned = _LINK_SIGNATURE.sub(r"\1***", _JWT.sub("eyJ***", cleaned))
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, "***")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RequestContext(logging.Filter):
    """Puts the request's context on the record: as fields (JSON) and as `context` (text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = {name: var.get() for name, var in _CONTEXT.items() if var.get() is not None}
        for name in CONTEXT_FIELDS:
            setattr(record, name, known.get(name))
        record.context = (
            " [" + " ".join(f"{k}={v}" for k, v in known.items()) + "]" if known else ""
        )
        return True


def _formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s "
            + " ".join(f"%({name})s" for name in CONTEXT_FIELDS),
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    return logging.Formatter(
        "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s%(context)s"
    )


def configure_logging(level: str, *, secrets: list[str], log_format: LogFormat = "text") -> None:
    """Root logging to stderr through the context and redaction filters; uvicorn's loggers
    propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(RequestContext())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
