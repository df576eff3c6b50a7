"""Prices and plans: listing and adding them (a new price applies to tasks created from its
start on), and the plan a user is charged by."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import Conflict, InvalidParameter, NotFound
from app.keys.models import User
from app.usage.models import PRICE_DIMENSIONS, Price, PricePlan


async def list_prices(
    session: AsyncSession, *, model: str | None = None, plan_id: int | None = None
) -> list[Price]:
    """Every cost price row (or a plan's own), by model, tier and dimensions, newest first."""
    query = select(Price).where(Price.plan_key == (plan_id or 0))
    query = query.order_by(
        col(Price.model),
        col(Price.service_tier),
        *(col(getattr(Price, name)) for name in PRICE_DIMENSIONS),
        col(Price.effective_from).desc(),
    )
    if model is not None:
        query = query.where(Price.model == model)
    return list((await session.exec(query)).all())


async def create_plan(session: AsyncSession, *, name: str, multiplier_ppm: int) -> PricePlan:
    """A new price plan; 409 if the name is taken."""
    plan = PricePlan(name=name, multiplier_ppm=multiplier_ppm)
    session.add(plan)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("A plan with this name exists.", code="PlanAlreadyExists") from None
    return plan


async def list_plans(session: AsyncSession) -> list[PricePlan]:
    """Every plan, by name."""
    return list((await session.exec(select(PricePlan).order_by(col(PricePlan.name)))).all())


async def assign_plan(session: AsyncSession, *, user_id: str, plan_id: int | None) -> User:
    """Charge a user by a plan from its next create on (None: at cost); tasks already created
    keep the terms they were reserved with."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"The user {user_id} does not exist.", param="user_id")
    if plan_id is not None and await session.get(PricePlan, plan_id) is None:
        raise NotFound(f"The plan {plan_id} does not exist.", param="plan_id")
    user.plan_id = plan_id
    user.updated_at = utcnow()
    session.add(user)
    await session.commit()
    return user


async def add_price(
    session: AsyncSession,
    *,
    model: str,
    service_tier: str,
    currency: str,
    micros_per_million_tokens: int,
    effective_from: datetime | None,
    dims: dict[str, str] | None = None,
    plan_id: int | None = None,
    approximate: bool = False,
) -> Price:
    """Add a price (for some dimensions, or a plan's own); it never re-prices tasks created
    before `effective_from` (default: now)."""
    if micros_per_million_tokens < 0:
        raise InvalidParameter("price_per_million_tokens", "must not be negative")
    if plan_id is not None and await session.get(PricePlan, plan_id) is None:
        raise NotFound(f"The plan {plan_id} does not exist.", param="plan_id")
    price = Price(
        model=model,
        service_tier=service_tier,
        currency=currency.upper(),
        micros_per_million_tokens=micros_per_million_tokens,
        effective_from=effective_from or utcnow(),
        plan_id=plan_id,
        plan_key=plan_id or 0,
        approximate=approximate,
    )
    for name, value in (dims or {}).items():
        setattr(price, name, value)
    session.add(price)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "A price for this model, tier and dimensions already starts at that time.",
            code="PriceAlreadyExists",
        ) from None
    return price


async def list_prices_by_id(session: AsyncSession, ids: list[int]) -> list[Price]:
    """The price rows with these ids."""
    if not ids:
        return []
    return list((await session.exec(select(Price).where(col(Price.id).in_(ids)))).all())


def price_label(price: Price) -> str:
    """What a price row is for, for people: model, tier and the dimensions it names."""
    named = [f"{name}={getattr(price, name)}" for name in PRICE_DIMENSIONS]
    dims = [part for part in named if not part.endswith("=*")]
    return " ".join([price.model, price.service_tier, *dims])
