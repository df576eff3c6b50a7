"""Logging set-up, with a filter that blanks secrets should any ever reach a log line."""

from __future__ import annotations

import logging
import re

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_GATEWAY_KEY = re.compile(r"sgw-[A-Za-z0-9]{8,}")


class RedactSecrets(logging.Filter):
    """Replaces the master key, admin token, bearer tokens and gateway keys with `***`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _GATEWAY_KEY.sub("sgw-***", _BEARER.sub(r"\1***", message))
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, "***")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str, *, secrets: list[str]) -> None:
    """Root logging to stderr through the redaction filter; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
