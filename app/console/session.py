"""Console sessions: who signed in (an admin, or a user through one of its keys), kept in an
HttpOnly, SameSite=Strict cookie the gateway seals (HMAC with the browser-token secret), which
expires; each carries a CSRF token that every form that changes something must send back.

A user's session names its key, which is checked as on the API (cached ≤ 1 s): revoking the key
or disabling the user signs the session out. An admin's session names (a digest of) the admin
token it was opened with: a new admin token signs every admin out.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from app.errors import AccessDenied
from app.keys.service import authenticate_by_id
from app.resources import Resources, ResourcesDep

COOKIE = "sgw_console"
SESSION_SECONDS = 8 * 3600


class SignInRequired(Exception):
    """No valid console session: the browser is sent to the sign-in page."""


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in person: `admin`, or `user` (with the user and the key it signed in with)."""

    role: str
    csrf: str
    expires_at: int
    user_id: str | None = None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this is the admin's session."""
        return self.role == "admin"


def new_session(
    *, role: str, user_id: str | None = None, key_id: str | None = None
) -> ConsoleSession:
    """A fresh session, valid for `SESSION_SECONDS`."""
    return ConsoleSession(
        role=role,
        csrf=secrets.token_urlsafe(24),
        expires_at=int(time.time()) + SESSION_SECONDS,
        user_id=user_id,
        key_id=key_id,
    )


def cookie_value(resources: Resources, session: ConsoleSession) -> str:
    """The sealed cookie for `session`."""
    payload: dict[str, Any] = {
        "r": session.role,
        "c": session.csrf,
        "e": session.expires_at,
        "u": session.user_id,
        "k": session.key_id,
    }
    if session.is_admin:
        payload["a"] = _admin_mark(resources)
    return resources.token_signer.seal(payload)


def _admin_mark(resources: Resources) -> str | None:
    """A digest of the admin token an admin session was opened with: a new token ends them."""
    token = resources.settings.admin_token
    return None if token is None else hashlib.sha256(token.get_secret_value().encode()).hexdigest()


async def current_session(request: Request, resources: ResourcesDep) -> ConsoleSession:
    """The console session of this request; `SignInRequired` if none is valid."""
    sealed = request.cookies.get(COOKIE)
    payload = (
        resources.token_signer.unseal(sealed) if sealed and resources.token_signer.enabled else None
    )
    if payload is None or not isinstance(payload.get("e"), int) or payload["e"] < time.time():
        raise SignInRequired()
    session = ConsoleSession(
        role=str(payload.get("r")),
        csrf=str(payload.get("c")),
        expires_at=payload["e"],
        user_id=payload.get("u"),
        key_id=payload.get("k"),
    )
    if session.role == "user":
        if session.key_id is None or await _key_is_gone(resources, session.key_id):
            raise SignInRequired()
    elif session.role != "admin" or not _same_admin_token(payload, resources):
        raise SignInRequired()
    return session


def _same_admin_token(payload: dict[str, Any], resources: Resources) -> bool:
    mark = _admin_mark(resources)
    return mark is not None and secrets.compare_digest(str(payload.get("a")), mark)


async def _key_is_gone(resources: Resources, key_id: str) -> bool:
    try:
        await authenticate_by_id(resources.statements, key_id=key_id, cache=resources.auth_cache)
    except Exception:
        return True
    return False


async def admin_session(
    session: Annotated[ConsoleSession, Depends(current_session)],
) -> ConsoleSession:
    """The admin's session; a user's session gets 403 on admin pages."""
    if not session.is_admin:
        raise AccessDenied("This page is for admins.")
    return session


def check_csrf(request: Request, session: ConsoleSession, sent: str) -> None:
    """403 unless a form came back with its session's CSRF token, from this gateway's pages."""
    origin = request.headers.get("origin")
    same_origin = origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"
    if not (same_origin and secrets.compare_digest(sent.encode(), session.csrf.encode())):
        raise AccessDenied(
            "The form is stale or did not come from this console.", code="CsrfFailed"
        )


ConsoleDep = Annotated[ConsoleSession, Depends(current_session)]
AdminConsoleDep = Annotated[ConsoleSession, Depends(admin_session)]
