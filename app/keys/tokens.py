"""Browser tokens: short-lived, signed stand-ins for a gateway key, for one browser session.

A backend holding a key mints a token (a JWT, HS256) that names the key, an expiry and what the
token may do beyond the key's own rules (fewer models, a number of tasks). Checking one costs a
signature check and the key's cached state, no database round trip. Several signing secrets may
be configured: the first signs, every one verifies (the `kid` header picks it), so a new secret
can be put first and the old one removed once the last token it signed has expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from app.db import utcnow
from app.errors import AuthenticationFailed
from app.ids import random_string

ISSUER = "seedance-gateway"
AUDIENCE = "seedance-gateway/browser"
ALGORITHM = "HS256"
MAX_TTL_SECONDS = 3600
# Tolerated clock difference between the replica that minted a token and one that checks it.
LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class BrowserToken:
    """What a valid token says: whose key it stands for and what it is limited to."""

    token_id: str
    key_id: str
    expires_at: datetime
    models: tuple[str, ...] | None
    max_tasks: int | None


def looks_like_token(credential: str) -> bool:
    """A JWT (three base64url parts, a JSON header); gateway keys start `sgw-` and have no dot."""
    return credential.startswith("eyJ") and credential.count(".") == 2


def secret_id(secret: bytes) -> str:
    """The `kid` of a signing secret: a short digest, never the secret."""
    return hashlib.sha256(secret).hexdigest()[:12]


@dataclass(frozen=True)
class TokenSigner:
    """Mints with the first secret and verifies with any of them."""

    secrets: tuple[bytes, ...]

    @property
    def enabled(self) -> bool:
        """Whether there is a secret to sign with."""
        return bool(self.secrets)

    def mint(
        self,
        *,
        key_id: str,
        ttl_seconds: int,
        models: list[str] | None,
        max_tasks: int | None,
        label: str | None,
    ) -> tuple[str, BrowserToken]:
        """A new token for `key_id` and what it stands for."""
        now = utcnow().replace(microsecond=0)
        expires_at = now + timedelta(seconds=ttl_seconds)
        token_id = f"tok_{random_string(16)}"
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": key_id,
            "jti": token_id,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        for name, value in (("models", models), ("max_tasks", max_tasks), ("label", label)):
            if value is not None:
                claims[name] = value
        signing = self.secrets[0]
        token = jwt.encode(
            claims, signing, algorithm=ALGORITHM, headers={"kid": secret_id(signing)}
        )
        return token, BrowserToken(
            token_id=token_id,
            key_id=key_id,
            expires_at=expires_at,
            models=tuple(models) if models is not None else None,
            max_tasks=max_tasks,
        )

    def sign_link(self, path: str, *, expires_at: int) -> dict[str, str]:
        """Query parameters that let anyone GET `path` until `expires_at` (unix seconds) with no
        credential: what a `<video src>` needs."""
        secret = self.secrets[0]
        return {
            "expires": str(expires_at),
            "kid": secret_id(secret),
            "signature": _link_signature(secret, path, expires_at),
        }

    def valid_link(self, path: str, *, expires: str, kid: str, signature: str, now: int) -> bool:
        """Whether a link to `path` was signed here (with any current secret) and is live."""
        if not expires.isdigit() or int(expires) < now:
            return False
        secret = next((s for s in self.secrets if secret_id(s) == kid), None)
        expected = _link_signature(secret, path, int(expires)) if secret is not None else ""
        return secret is not None and hmac.compare_digest(signature, expected)

    def seal(self, payload: dict[str, Any]) -> str:
        """`payload` as text only this gateway can have written (console session cookies)."""
        secret = self.secrets[0]
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        mac = hmac.new(secret, f"seal\n{body}".encode(), hashlib.sha256).hexdigest()
        return f"{body}.{secret_id(secret)}.{mac}"

    def unseal(self, sealed: str) -> dict[str, Any] | None:
        """What `seal` wrote, or None for anything else (forged, altered, another secret's)."""
        body, _, rest = sealed.partition(".")
        kid, _, mac = rest.partition(".")
        secret = next((s for s in self.secrets if secret_id(s) == kid), None)
        if secret is None or len(sealed) > 4096:
            return None
        expected = hmac.new(secret, f"seal\n{body}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def verify(self, token: str) -> BrowserToken:
        """The token's claims, or 401 for a token expired, tampered with or signed elsewhere."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = next((s for s in self.secrets if secret_id(s) == kid), None)
            if secret is None:
                raise AuthenticationFailed()
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
            )
            return _claims(claims)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise AuthenticationFailed() from None


def _link_signature(secret: bytes, path: str, expires_at: int) -> str:
    return hmac.new(secret, f"link\n{path}\n{expires_at}".encode(), hashlib.sha256).hexdigest()


def _claims(claims: dict[str, Any]) -> BrowserToken:
    models = claims.get("models")
    max_tasks = claims.get("max_tasks")
    if models is not None and not (
        isinstance(models, list) and all(isinstance(m, str) for m in models)
    ):
        raise ValueError("models")
    if max_tasks is not None and (type(max_tasks) is not int or max_tasks < 1):
        raise ValueError("max_tasks")
    if not isinstance(claims["sub"], str) or not isinstance(claims["jti"], str):
        raise ValueError("sub")
    return BrowserToken(
        token_id=claims["jti"],
        key_id=claims["sub"],
        expires_at=datetime.fromtimestamp(claims["exp"], tz=utcnow().tzinfo),
        models=tuple(models) if models is not None else None,
        max_tasks=max_tasks,
    )
