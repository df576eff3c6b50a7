"""What every console page shares: its templates, redirects, the CSRF form field, and the
session through which the console's admin changes things (audited)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlmodel.ext.asyncio.session import AsyncSession

from app.admin.audit import audited
from app.console.session import ConsoleSession
from app.limits.clients import client_address
from app.resources import Resources

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
CsrfField = Annotated[str, Form(max_length=64)]


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render template `name` (escaped) with `context` (and whether users manage their keys)."""
    resources: Resources = request.app.state.resources
    context.setdefault("user_keys", resources.settings.console_user_keys)
    return templates.TemplateResponse(request, name, context, status_code=status)


def to(path: str) -> RedirectResponse:
    """After a form: see `path` (303, so a reload does not post again)."""
    return RedirectResponse(path, status_code=303)


def as_admin(request: Request, session: AsyncSession, resources: Resources) -> AsyncSession:
    """The session, acting for the console's admin: its changes go to the audit log."""
    address = client_address(request, resources.trusted_proxies)
    return audited(session, actor="console:admin", address=address)


def as_user(
    request: Request, session: AsyncSession, resources: Resources, me: ConsoleSession
) -> AsyncSession:
    """The session, acting for a signed-in user (named by the key they signed in with)."""
    address = client_address(request, resources.trusted_proxies)
    return audited(session, actor=f"console:user:{me.key_id}", address=address)
