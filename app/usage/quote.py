"""Quotes: what a create would reserve and cost, worked out exactly as the create does it, with
nothing written and nothing sent upstream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.tasks.models import Task
from app.tasks.validation import CreateRequest
from app.ttl_cache import TtlCache
from app.usage.ledger import reserve_entry
from app.usage.models import MICROS
from app.usage.pricing import Estimate, PriceRow, terms_for


def _units(micros: int | None) -> str | None:
    return None if micros is None else str(Decimal(micros) / MICROS)


def _per_million(price: PriceRow | None) -> str | None:
    return None if price is None else _units(price.micros_per_million_tokens)


async def quote(
    session: AsyncSession,
    *,
    request: CreateRequest,
    user_id: str,
    key_id: str,
    plan_id: int | None,
    cache: TtlCache[Any],
) -> dict[str, Any]:
    """The reservation a create with this body would make now, and how it is made up."""
    task = Task(
        id="quote",
        user_id=user_id,
        key_id=key_id,
        **request.task_fields(),
        created_at=utcnow(),
    )
    estimate = Estimate.of(task, request.spec)
    terms = await terms_for(session, task=task, spec=request.spec, plan_id=plan_id, cache=cache)
    entry = reserve_entry(task, tokens=estimate.tokens, terms=terms)
    return {
        "model": request.model,
        "service_tier": request.service_tier,
        "estimated_tokens": estimate.tokens,
        "estimated_cost": _units(entry.cost_micros),
        "currency": entry.currency,
        "price_id": entry.price_id,
        "estimated_charge": _units(entry.charge_micros),
        "charge_currency": entry.charge_currency,
        "breakdown": {
            **terms.dims.as_dict(),
            "ratio": task.ratio,
            "width": estimate.width,
            "height": estimate.height,
            "output_frames": estimate.output_frames,
            "input_video_seconds": estimate.input_video_seconds,
            "input_frames": estimate.input_frames,
            "draft_percent": estimate.draft_percent,
            "price_per_million_tokens": _per_million(terms.price),
            "price_approximate": terms.price.approximate if terms.price else None,
            "plan_id": terms.plan_id,
            "charge_price_id": terms.charge_price.id if terms.charge_price else None,
            "charge_price_per_million_tokens": _per_million(terms.charge_price),
            "charge_multiplier": _units(terms.charge_ppm),
        },
    }
