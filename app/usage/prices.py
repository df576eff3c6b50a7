"""Prices: listing and adding them (a new price applies to tasks created from its start on)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import Conflict, InvalidParameter
from app.usage.models import Price


async def list_prices(session: AsyncSession, *, model: str | None = None) -> list[Price]:
    """Every price row, by model and tier, newest first."""
    query = select(Price).order_by(
        col(Price.model), col(Price.service_tier), col(Price.effective_from).desc()
    )
    if model is not None:
        query = query.where(Price.model == model)
    return list((await session.exec(query)).all())


async def add_price(
    session: AsyncSession,
    *,
    model: str,
    service_tier: str,
    currency: str,
    micros_per_million_tokens: int,
    effective_from: datetime | None,
) -> Price:
    """Add a price; it never re-prices tasks created before `effective_from` (default: now)."""
    if micros_per_million_tokens < 0:
        raise InvalidParameter("price_per_million_tokens", "must not be negative")
    price = Price(
        model=model,
        service_tier=service_tier,
        currency=currency.upper(),
        micros_per_million_tokens=micros_per_million_tokens,
        effective_from=effective_from or utcnow(),
    )
    session.add(price)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "A price for this model and tier already starts at that time.",
            code="PriceAlreadyExists",
        ) from None
    return price
