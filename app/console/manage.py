"""Console pages that change who may do what: users, keys, budgets, limit overrides, prices.
Every form checks its CSRF token; every change goes through the domains' services in a session
the audit log follows (`console:admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.console.pages import CsrfField, as_admin, page, to
from app.console.session import AdminConsoleDep, check_csrf
from app.db import SessionDep
from app.keys import service as keys
from app.resources import ResourcesDep

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/users")
async def users(request: Request, me: AdminConsoleDep, session: SessionDep) -> HTMLResponse:
    """Every user, and a form to add one."""
    return page(request, "users.html", me=me, users=await keys.list_users(session))


@router.post("/users")
async def create_user(
    request: Request,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    name: Annotated[str, Form(min_length=1, max_length=200)],
) -> Response:
    """Add a user (audited as the console's admin)."""
    check_csrf(request, me, csrf)
    user = await keys.create_user(as_admin(request, session, resources), name=name)
    return to(f"/console/users/{user.id}")


@router.get("/users/{user_id}")
async def user_page(
    request: Request, user_id: str, me: AdminConsoleDep, session: SessionDep
) -> HTMLResponse:
    """One user: its keys (create, revoke) and whether it may sign in and call."""
    user = await keys.get_user(session, user_id=user_id)
    user_keys = await keys.list_keys(session, user_id=user_id)
    return page(request, "user.html", me=me, user=user, keys=user_keys, new_key=None)


@router.post("/users/{user_id}/state")
async def set_user_state(
    request: Request,
    user_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    disabled: Annotated[bool, Form()],
) -> Response:
    """Disable or re-enable a user."""
    check_csrf(request, me, csrf)
    db = as_admin(request, session, resources)
    await keys.update_user(db, user_id=user_id, changes={"disabled": disabled})
    return to(f"/console/users/{user_id}")


@router.post("/users/{user_id}/keys")
async def create_key(
    request: Request,
    user_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    name: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Issue a key: its plaintext is on this page and nowhere else, ever."""
    check_csrf(request, me, csrf)
    db = as_admin(request, session, resources)
    _, plaintext = await keys.create_key(db, user_id=user_id, name=name)
    user = await keys.get_user(session, user_id=user_id)
    user_keys = await keys.list_keys(session, user_id=user_id)
    return page(request, "user.html", me=me, user=user, keys=user_keys, new_key=plaintext)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    request: Request,
    key_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
) -> Response:
    """Revoke a key; every process stops accepting it within a second."""
    check_csrf(request, me, csrf)
    key = await keys.revoke_key(as_admin(request, session, resources), key_id=key_id)
    return to(f"/console/users/{key.user_id}")
