"""Console pages that change who may do what: users, keys, budgets, limit overrides, prices.

Every form checks its CSRF token and is validated by the admin API's own schemas; every change
goes through the domains' services in a session the audit log follows (`console:admin`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from app.admin.billing_schemas import BudgetSet, PriceCreate
from app.admin.schemas import LimitOverrides
from app.console.pages import CsrfField, as_admin, as_user, page, to
from app.console.service import money
from app.console.session import AdminConsoleDep, ConsoleDep, ConsoleSession, check_csrf
from app.db import SessionDep
from app.errors import AccessDenied, InvalidParameter, NotFound
from app.keys import service as keys
from app.resources import Resources, ResourcesDep
from app.usage import budgets, prices

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
    return await _user_page(request, me, session, user_id=user_id, new_key=None)


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
    return await _user_page(request, me, session, user_id=user_id, new_key=plaintext)


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


async def _user_page(
    request: Request,
    me: ConsoleSession,
    session: AsyncSession,
    *,
    user_id: str,
    new_key: str | None,
) -> HTMLResponse:
    user = await keys.get_user(session, user_id=user_id)
    user_keys = await keys.list_keys(session, user_id=user_id)
    names = {key.id: key.name or key.prefix for key in user_keys}
    return page(
        request,
        "user.html",
        me=me,
        user=user,
        keys=user_keys,
        new_key=new_key,
        budgets=await budgets.budgets_of(session, user_id=user_id),
        key_names=names,
        money=money,
    )


async def _key_of(session: AsyncSession, *, user_id: str, key_id: str) -> str | None:
    """`key_id` if it names one of the user's keys, None for the user itself ("")."""
    if not key_id:
        return None
    if key_id not in {key.id for key in await keys.list_keys(session, user_id=user_id)}:
        raise NotFound(f"The user has no key {key_id}.", param="key_id")
    return key_id


@router.post("/users/{user_id}/budget")
async def set_budget(
    request: Request,
    user_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    period: Annotated[str, Form(max_length=16)] = "monthly",
    limit: Annotated[str, Form(max_length=40)] = "",
    limit_tokens: Annotated[str, Form(max_length=20)] = "",
    alert_percents: Annotated[str, Form(max_length=40)] = "",
    key_id: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Set or replace the budget of the user or of one of its keys (validated as the admin API
    validates it)."""
    check_csrf(request, me, csrf)
    body = BudgetSet.model_validate(
        {
            "period": period,
            "limit": limit or None,
            "limit_tokens": _whole(limit_tokens, "limit_tokens"),
            "alert_percents": [_whole(p, "alert_percents") for p in alert_percents.split(",")]
            if alert_percents.strip()
            else None,
        }
    )
    await budgets.set_budget(
        as_admin(request, session, resources),
        user_id=user_id,
        key_id=await _key_of(session, user_id=user_id, key_id=key_id),
        period=body.period,
        limit_micros=body.micros(),
        limit_tokens=body.limit_tokens,
        alert_percents=body.alert_percents,
    )
    return to(f"/console/users/{user_id}")


@router.post("/users/{user_id}/budget/delete")
async def delete_budget(
    request: Request,
    user_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    key_id: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Remove the budget of the user or of one of its keys."""
    check_csrf(request, me, csrf)
    key = await _key_of(session, user_id=user_id, key_id=key_id)
    scope = f"key:{key}" if key else f"user:{user_id}"
    await budgets.delete_budget(as_admin(request, session, resources), scope=scope)
    return to(f"/console/users/{user_id}")


@router.post("/users/{user_id}/limits")
async def set_limits(
    request: Request,
    user_id: str,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    create_rate_limit: Annotated[str, Form(max_length=64)] = "",
    read_rate_limit: Annotated[str, Form(max_length=64)] = "",
    max_tasks_in_flight: Annotated[str, Form(max_length=12)] = "",
    key_id: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """The limit overrides of the user or of one of its keys; an empty field restores the
    default (the gateway's for a user, the user's for a key)."""
    check_csrf(request, me, csrf)
    overrides = LimitOverrides.model_validate(
        {
            "create_rate_limit": create_rate_limit or None,
            "read_rate_limit": read_rate_limit or None,
            "max_tasks_in_flight": _whole(max_tasks_in_flight, "max_tasks_in_flight"),
        }
    )
    key = await _key_of(session, user_id=user_id, key_id=key_id)
    db = as_admin(request, session, resources)
    if key is None:
        await keys.update_user(db, user_id=user_id, changes=overrides.model_dump())
    else:
        await keys.update_key(db, key_id=key, changes=overrides.model_dump())
    return to(f"/console/users/{user_id}")


@router.get("/prices")
async def price_list(request: Request, me: AdminConsoleDep, session: SessionDep) -> HTMLResponse:
    """Every price, history included, and a form to add one."""
    found = await prices.list_prices(session)
    return page(request, "prices.html", me=me, prices=found, money=money)


@router.post("/prices")
async def add_price(
    request: Request,
    me: AdminConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    model: Annotated[str, Form(max_length=128)],
    price_per_million_tokens: Annotated[str, Form(max_length=40)],
    service_tier: Annotated[str, Form(max_length=16)] = "default",
    currency: Annotated[str, Form(max_length=8)] = "USD",
    resolution: Annotated[str, Form(max_length=8)] = "*",
    video_input: Annotated[str, Form(max_length=4)] = "*",
    audio: Annotated[str, Form(max_length=4)] = "*",
    draft: Annotated[str, Form(max_length=4)] = "*",
) -> Response:
    """Add a price from now on, for some dimensions or all (older tasks keep the price they
    had)."""
    check_csrf(request, me, csrf)
    dims = {"resolution": resolution, "video_input": video_input, "audio": audio, "draft": draft}
    body = PriceCreate.model_validate(
        {
            "model": model,
            "service_tier": service_tier,
            "currency": currency,
            "price_per_million_tokens": price_per_million_tokens,
            **dims,
        }
    )
    await prices.add_price(
        as_admin(request, session, resources),
        model=body.model,
        service_tier=body.service_tier,
        currency=body.currency,
        micros_per_million_tokens=body.micros(),
        effective_from=None,
        dims={name: getattr(body, name) for name in dims},
    )
    return to("/console/prices")


def _whole(text: str, param: str) -> int | None:
    """A form's whole number (empty: none); 400 naming the field for anything else."""
    if not text.strip():
        return None
    if not text.strip().isdigit() or len(text.strip()) > 12:
        raise InvalidParameter(param, "expected a whole number")
    return int(text)


@router.post("/my/keys")
async def create_my_key(
    request: Request,
    me: ConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
    name: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """A user makes a key of their own (if the admin allows it); shown once, on this page."""
    user_id = _own_keys_allowed(request, me, resources, csrf)
    db = as_user(request, session, resources, me)
    _, plaintext = await keys.create_key(db, user_id=user_id, name=name)
    return page(
        request,
        "my_keys.html",
        me=me,
        keys=await keys.list_keys(session, user_id=user_id),
        new_key=plaintext,
    )


@router.get("/my/keys")
async def my_keys(
    request: Request, me: ConsoleDep, session: SessionDep, resources: ResourcesDep
) -> HTMLResponse:
    """A user's keys, to create and revoke (if the admin allows it)."""
    if me.is_admin or me.user_id is None or not resources.settings.console_user_keys:
        raise AccessDenied("Users may not manage their own keys here.")
    found = await keys.list_keys(session, user_id=me.user_id)
    return page(request, "my_keys.html", me=me, keys=found, new_key=None)


@router.post("/my/keys/{key_id}/revoke")
async def revoke_my_key(
    request: Request,
    key_id: str,
    me: ConsoleDep,
    session: SessionDep,
    resources: ResourcesDep,
    csrf: CsrfField,
) -> Response:
    """A user revokes one of their own keys (404 for anyone else's); revoking the key they
    signed in with ends this session too."""
    user_id = _own_keys_allowed(request, me, resources, csrf)
    owned = {key.id for key in await keys.list_keys(session, user_id=user_id)}
    if key_id not in owned:
        raise NotFound(f"The key {key_id} does not exist.", param="key_id")
    await keys.revoke_key(as_user(request, session, resources, me), key_id=key_id)
    return to("/console/my/keys")


def _own_keys_allowed(request: Request, me: ConsoleSession, resources: Resources, csrf: str) -> str:
    check_csrf(request, me, csrf)
    if me.is_admin or me.user_id is None or not resources.settings.console_user_keys:
        raise AccessDenied("Users may not manage their own keys here.")
    return me.user_id
