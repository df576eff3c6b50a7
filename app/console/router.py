"""The console's pages: sign-in, the admin's overview, costs, users and keys, audit; a user's own
tasks (with their videos) and usage. Server-rendered (Jinja2, escaped everywhere), no CDN."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.responses import StreamingResponse
from starlette.staticfiles import StaticFiles

from app.admin.audit import audit_log
from app.console import service
from app.console.manage import router as manage_router
from app.console.pages import CsrfField, page, to
from app.console.session import (
    COOKIE,
    SESSION_SECONDS,
    AdminConsoleDep,
    ConsoleDep,
    SignInRequired,
    check_csrf,
    cookie_value,
    new_session,
)
from app.db import SessionDep
from app.errors import AuthenticationFailed
from app.keys import service as keys
from app.keys.tokens import looks_like_token
from app.limits.auth_throttle import count_auth_failure, refuse_throttled_client
from app.resources import ResourcesDep
from app.tasks import content, explorer, repository
from app.tasks.content import ContentVariant
from app.tasks.schemas import TaskListQuery
from app.usage.reports import daily_costs, parse_instant, self_service_usage

router = APIRouter(prefix="/console", include_in_schema=False)
STATIC = Path(__file__).parents[1] / "static" / "console"


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    """The sign-in form: the admin token, or a gateway key."""
    return page(request, "login.html")


@router.post("/login")
async def login(
    request: Request,
    resources: ResourcesDep,
    credential: Annotated[str, Form(max_length=512)],
) -> Response:
    """Sign in; a wrong credential counts towards the failed-auth throttle, like on the API."""
    if not resources.token_signer.enabled:  # nothing to seal sessions with
        off = "The console is off: set GATEWAY_ADMIN_TOKEN or GATEWAY_BROWSER_TOKEN_SECRETS."
        return page(request, "login.html", status=403, error=off)
    address = await refuse_throttled_client(request, resources)
    admin = resources.settings.admin_token
    if admin is not None and secrets.compare_digest(
        credential.encode(), admin.get_secret_value().encode()
    ):
        signed_in = new_session(role="admin")
    else:
        try:
            if looks_like_token(credential):
                raise AuthenticationFailed()
            auth = await keys.authenticate(
                resources.statements, plaintext=credential, cache=resources.auth_cache
            )
        except AuthenticationFailed:
            await count_auth_failure(resources, address)
            return page(request, "login.html", status=401, error="That did not work.")
        signed_in = new_session(role="user", user_id=auth.user_id, key_id=auth.key_id)
    answer = to("/console")
    answer.set_cookie(
        COOKIE,
        cookie_value(resources, signed_in),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return answer


@router.post("/logout")
async def logout(request: Request, me: ConsoleDep, csrf: CsrfField) -> Response:
    """Sign out: the cookie is dropped."""
    check_csrf(request, me, csrf)
    answer = to("/console/login")
    answer.delete_cookie(COOKIE, path="/console")
    return answer


@router.get("")
async def home(
    request: Request, me: ConsoleDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """The admin's overview; a user's own page."""
    if not me.is_admin:
        return to("/console/my")
    overview = await service.overview(session, resources, now=datetime.now(UTC))
    return page(request, "overview.html", me=me, overview=overview)


@router.get("/costs")
async def costs(
    request: Request,
    me: AdminConsoleDep,
    session: SessionDep,
    by: service.By = "model",
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> HTMLResponse:
    """Cost by day, stacked by model, user or key, for a range (default: the last 30 days)."""
    since, until = _range(start, end)
    rows = await daily_costs(session, by=by, start=since, end=until)
    return page(
        request,
        "costs.html",
        me=me,
        by=by,
        since=since.date().isoformat(),
        until=(until - timedelta(days=1)).date().isoformat(),
        chart=service.chart(rows),
        rows=rows,
        money=service.money,
    )


@router.get("/costs.csv")
async def costs_csv(
    me: AdminConsoleDep,
    session: SessionDep,
    by: service.By = "model",
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> PlainTextResponse:
    """What the chart shows, as CSV (cost in currency units and in micro-units)."""
    since, until = _range(start, end)
    rows = await daily_costs(session, by=by, start=since, end=until)
    text = service.costs_csv(rows, by=by)
    headers = {"Content-Disposition": f'attachment; filename="costs-by-{by}.csv"'}
    return PlainTextResponse(text, media_type="text/csv", headers=headers)


def _range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = parse_instant(start, param="from") or today - timedelta(days=29)
    until = parse_instant(end, param="to")
    return since, (until + timedelta(days=1)) if until else today + timedelta(days=1)


@router.get("/tasks")
async def tasks(
    request: Request,
    me: AdminConsoleDep,
    session: SessionDep,
    user: Annotated[str | None, Query(max_length=64)] = None,
    key: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> HTMLResponse:
    """Every user's tasks, newest first (100), filtered by user, key, status, model and date."""
    since = parse_instant(start or None, param="from")
    until = parse_instant(end or None, param="to")
    filters = explorer.TaskFilter(
        user_id=user or None,
        key_id=key or None,
        status=status or None,
        model=model or None,
        since=since,
        until=until + timedelta(days=1) if until and end and len(end) == 10 else until,
    )
    found = await explorer.explore(session, filters=filters)
    return page(request, "tasks.html", me=me, tasks=found, filters=filters, start=start, end=end)


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request, task_id: str, me: AdminConsoleDep, session: SessionDep
) -> HTMLResponse:
    """One task and its timeline."""
    task, moments = await explorer.timeline(session, task_id=task_id)
    return page(request, "task.html", me=me, task=task, moments=moments)


@router.get("/accounts")
async def accounts(
    request: Request, me: AdminConsoleDep, session: SessionDep, resources: ResourcesDep
) -> HTMLResponse:
    """The upstream accounts: state, health, limits, open tasks, last 30 days' cost."""
    rows = await service.accounts(session, resources, now=datetime.now(UTC))
    return page(request, "accounts.html", me=me, rows=rows)


@router.get("/audit")
async def audit(request: Request, me: AdminConsoleDep, session: SessionDep) -> HTMLResponse:
    """The latest admin changes."""
    entries = await audit_log(session, entity=None, entity_id=None, limit=200)
    return page(request, "audit.html", me=me, entries=entries)


@router.get("/my")
async def my_page(
    request: Request, me: ConsoleDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """A user's latest tasks (videos playable) and this month's usage and budgets."""
    if me.is_admin or me.user_id is None or me.key_id is None:
        return to("/console")
    query = TaskListQuery.model_validate({"page_num": 1, "page_size": 50})
    total, tasks = await repository.task_page(
        resources.statements, user_id=me.user_id, token_id=None, query=query
    )
    usage = await self_service_usage(session, user_id=me.user_id, key_id=me.key_id)
    shown = json.dumps(usage, default=str, indent=2)  # escaped by the template
    return page(request, "my.html", me=me, tasks=tasks, total=total, usage=shown)


@router.get("/my/tasks/{task_id}/video")
async def my_video(
    request: Request,
    task_id: str,
    me: ConsoleDep,
    resources: ResourcesDep,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
) -> StreamingResponse:
    """A user's own task's video, for the page's `<video>` (byte ranges, as the API)."""
    auth = await keys.authenticate_by_id(
        resources.statements, key_id=me.key_id or "", cache=resources.auth_cache
    )
    download = await content.task_content(
        resources=resources,
        auth=auth,
        task_id=task_id,
        variant=ContentVariant.VIDEO,
        range_header=range_header,
        if_none_match=None,
        request_id=request.state.request_id,
    )
    return StreamingResponse(
        download.body, status_code=download.status_code, headers=download.headers
    )


def install_console(app: FastAPI) -> None:
    """The console's pages, its static assets, and the sign-in redirect."""
    app.include_router(router)
    app.include_router(manage_router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    async def sign_in(_request: Request, _exc: Exception) -> Response:
        return to("/console/login")

    app.add_exception_handler(SignInRequired, sign_in)
