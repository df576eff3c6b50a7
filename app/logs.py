"""Logging set-up, with a filter that blanks secrets should any ever reach a log line."""

from __future__ import annotations

import logging
import re

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_GATEWAY_KEY = re.compile(r"sgw-[A-Za-z0-9]{8,}")
# Browser tokens (JWTs) and the signatures of output links: each grants access while it lives.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_LINK_SIGNATURE = re.compile(r"(?i)(signature=)[0-9a-f]+")


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
