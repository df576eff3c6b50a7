"""Admin routes for money: prices, budgets and usage reports (JSON or CSV)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, Response

from app.admin.billing_schemas import (
    BudgetPublic,
    BudgetSet,
    PlanCreate,
    PlanPublic,
    PriceCreate,
    PricePublic,
    UserPlanSet,
)
from app.admin.deps import AdminSessionDep, require_admin
from app.usage import budgets, prices, reports
from app.usage.models import PRICE_DIMENSIONS
from app.usage.reconciliation import reconciliation_report

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/prices")
async def list_prices(
    session: AdminSessionDep,
    model: Annotated[str | None, Query(max_length=128)] = None,
    plan_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[PricePublic]:
    """Every cost price (or with `plan_id`, the plan's own), history included, newest first
    per model, tier and dimensions."""
    found = await prices.list_prices(session, model=model, plan_id=plan_id)
    return [PricePublic.model_validate(p) for p in found]


@router.post("/prices", status_code=201)
async def add_price(body: PriceCreate, session: AdminSessionDep) -> PricePublic:
    """Add a price from `effective_from` (default now); older tasks keep the price they had."""
    price = await prices.add_price(
        session,
        model=body.model,
        service_tier=body.service_tier,
        currency=body.currency,
        micros_per_million_tokens=body.micros(),
        effective_from=body.effective_from,
        dims={name: getattr(body, name) for name in PRICE_DIMENSIONS},
        plan_id=body.plan_id,
        approximate=body.approximate,
    )
    return PricePublic.model_validate(price)


@router.get("/plans")
async def list_plans(session: AdminSessionDep) -> list[PlanPublic]:
    """Every price plan."""
    return [PlanPublic.model_validate(p) for p in await prices.list_plans(session)]


@router.post("/plans", status_code=201)
async def create_plan(body: PlanCreate, session: AdminSessionDep) -> PlanPublic:
    """A price plan: a multiplier on cost, and prices of its own added with its `plan_id`."""
    plan = await prices.create_plan(session, name=body.name, multiplier_ppm=body.multiplier_ppm())
    return PlanPublic.model_validate(plan)


@router.put("/users/{user_id}/plan")
async def assign_plan(user_id: str, body: UserPlanSet, session: AdminSessionDep) -> UserPlanSet:
    """The plan a user is charged by from its next create on (null: at cost)."""
    user = await prices.assign_plan(session, user_id=user_id, plan_id=body.plan_id)
    return UserPlanSet(plan_id=user.plan_id)


@router.put("/users/{user_id}/budget")
async def set_user_budget(user_id: str, body: BudgetSet, session: AdminSessionDep) -> BudgetPublic:
    """Set or replace a user's budget."""
    budget = await budgets.set_budget(
        session,
        user_id=user_id,
        key_id=None,
        period=body.period,
        limit_micros=body.micros(),
        limit_tokens=body.limit_tokens,
        alert_percents=body.alert_percents,
        limit_charge_micros=body.charge_micros(),
    )
    return BudgetPublic.model_validate(budget)


@router.put("/keys/{key_id}/budget")
async def set_key_budget(key_id: str, body: BudgetSet, session: AdminSessionDep) -> BudgetPublic:
    """Set or replace one key's budget (on top of its user's)."""
    budget = await budgets.set_budget(
        session,
        user_id="",
        key_id=key_id,
        period=body.period,
        limit_micros=body.micros(),
        limit_tokens=body.limit_tokens,
        alert_percents=body.alert_percents,
        limit_charge_micros=body.charge_micros(),
    )
    return BudgetPublic.model_validate(budget)


@router.get("/users/{user_id}/budgets")
async def list_budgets(user_id: str, session: AdminSessionDep) -> list[BudgetPublic]:
    """A user's budget and its keys' budgets."""
    return [
        BudgetPublic.model_validate(b) for b in await budgets.budgets_of(session, user_id=user_id)
    ]


@router.delete("/users/{user_id}/budget", status_code=204)
async def delete_user_budget(user_id: str, session: AdminSessionDep) -> Response:
    """Remove a user's budget."""
    await budgets.delete_budget(session, scope=f"user:{user_id}")
    return Response(status_code=204)


@router.delete("/keys/{key_id}/budget", status_code=204)
async def delete_key_budget(key_id: str, session: AdminSessionDep) -> Response:
    """Remove a key's budget."""
    await budgets.delete_budget(session, scope=f"key:{key_id}")
    return Response(status_code=204)


@router.get(
    "/usage",
    response_model=None,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def usage(
    session: AdminSessionDep,
    group_by: Annotated[reports.GroupBy, Query()] = "user",
    start_text: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end_text: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    user_id: Annotated[str | None, Query(max_length=32)] = None,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | PlainTextResponse:
    """Per group: tasks, settled tokens and cost, open reservations (tasks created in range).

    `from` and `to` take a date (UTC midnight) or a datetime (UTC unless it names a zone).
    """
    start = reports.parse_instant(start_text, param="from")
    end = reports.parse_instant(end_text, param="to")
    rows = await reports.usage_report(
        session, group_by=group_by, start=start, end=end, user_id=user_id
    )
    if format == "csv":
        return PlainTextResponse(reports.to_csv(rows, group_by=group_by), media_type="text/csv")
    return {"group_by": group_by, "from": start, "to": end, "rows": [r.as_dict() for r in rows]}


@router.get("/usage/reconciliation")
async def reconciliation(
    session: AdminSessionDep,
    start_text: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end_text: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> dict[str, Any]:
    """Per model, settled tokens beside what the upstream reported when each task was re-read
    after settlement (`GATEWAY_USAGE_REREAD_SECONDS`), and the tasks whose usage changed."""
    return await reconciliation_report(
        session,
        start=reports.parse_instant(start_text, param="from"),
        end=reports.parse_instant(end_text, param="to"),
    )
