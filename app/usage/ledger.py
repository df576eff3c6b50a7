"""The usage ledger: reserve at create, settle on success, release otherwise; exactly once each.

Rows are only ever inserted, in the caller's transaction. The unique (task, kind) constraint
backs the compare-and-swap on the task's status: a second settle cannot be written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import after_commit
from app.metrics import Metrics
from app.tasks.catalog import ModelSpec
from app.tasks.models import OPEN_STATUSES, Task, TaskStatus, status_in
from app.ttl_cache import TtlCache
from app.usage.models import MICROS, LedgerEntry, LedgerKind, Price
from app.usage.rollup import add_settlement

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PriceRow:
    """A price as creates use it: kept for a second in the process (`Resources.prices`)."""

    id: int | None
    currency: str
    micros_per_million_tokens: int
    effective_from: datetime


def cost_micros(tokens: int, price: Price | PriceRow | None) -> int:
    """Cost of `tokens` at `price`, in micro-units, rounded half up; 0 when unpriced."""
    if price is None:
        return 0
    return (tokens * price.micros_per_million_tokens + MICROS // 2) // MICROS


def estimate_tokens(task: Task, spec: ModelSpec) -> int:
    """Reserved tokens: W×H×(24·d+1)/1024 from the effective resolution, ratio and length."""
    return spec.tokens(
        resolution=task.resolution or spec.default_resolution,
        ratio=task.ratio or "adaptive",
        frame_count=spec.frame_count(duration=task.duration, frames=task.frames),
    )


async def price_in_force(
    session: AsyncSession,
    *,
    models: list[str],
    service_tier: str,
    at: datetime,
    cache: TtlCache[tuple[PriceRow, ...]],
) -> PriceRow | None:
    """The newest price effective at `at` for the first of `models` that has one.

    Every price row of a model and tier (past and scheduled) is read at most once a second per
    process (`cache`): a new price reaches every replica within that second, and a scheduled
    one takes effect at its exact moment.
    """
    for model in dict.fromkeys(models):
        in_force = [
            price
            for price in await _price_rows(session, model, service_tier, cache)
            if price.effective_from <= at
        ]
        if in_force:
            return max(in_force, key=lambda price: price.effective_from)
    return None


async def _price_rows(
    session: AsyncSession, model: str, service_tier: str, cache: TtlCache[tuple[PriceRow, ...]]
) -> tuple[PriceRow, ...]:
    key = f"{model}\n{service_tier}"
    rows = cache.get(key)
    if rows is None:
        found = await session.exec(
            select(Price).where(Price.model == model, Price.service_tier == service_tier)
        )
        rows = tuple(
            PriceRow(p.id, p.currency, p.micros_per_million_tokens, p.effective_from)
            for p in found.all()
        )
        cache.put(key, rows)
    return rows


def reserve_entry(task: Task, *, tokens: int, price: PriceRow | None) -> LedgerEntry:
    """The reserve row for a new task (added by the caller with the task, in one transaction)."""
    if price is None:
        logger.warning(
            "model %s (%s) has no price: task %s runs unpriced",
            task.model,
            task.service_tier,
            task.id,
        )
    return _entry(
        task,
        LedgerKind.RESERVE,
        tokens=tokens,
        total_tokens=tokens,
        cost=cost_micros(tokens, price),
        price=price,
    )


async def record_outcome(
    session: AsyncSession, *, task: Task, status: TaskStatus, snapshot: dict[str, Any] | None
) -> LedgerEntry:
    """Settle a succeeded task at its reserve's price, or release any other terminal one."""
    reserve = (
        await session.exec(
            select(LedgerEntry).where(
                LedgerEntry.task_id == task.id, LedgerEntry.kind == LedgerKind.RESERVE
            )
        )
    ).one()
    if status != TaskStatus.SUCCEEDED:
        entry = _entry(
            task,
            LedgerKind.RELEASE,
            tokens=0,
            total_tokens=0,
            cost=0,
            price=None,
            currency=reserve.currency,
        )
    else:
        price = await session.get(Price, reserve.price_id) if reserve.price_id else None
        tokens, total = _usage_tokens(task, snapshot, fallback=reserve.tokens)
        entry = _entry(
            task,
            LedgerKind.SETTLE,
            tokens=tokens,
            total_tokens=total,
            cost=cost_micros(tokens, price),
            price=price,
        )
    session.add(entry)
    if entry.kind == LedgerKind.SETTLE:
        await add_settlement(session, reserve=reserve, settle=entry)
    metrics = session.info.get("metrics")
    if isinstance(metrics, Metrics):
        after_commit(session, partial(_count_outcome, metrics, status, entry))
    return entry


def _count_outcome(metrics: Metrics, status: TaskStatus, entry: LedgerEntry) -> None:
    metrics.tasks_finished.labels(str(status)).inc()
    if entry.kind == LedgerKind.SETTLE:
        metrics.settled_tokens.labels(entry.model).inc(entry.tokens)
        metrics.settled_cost.labels(entry.currency or "none").inc(entry.cost_micros)


def _usage_tokens(task: Task, snapshot: dict[str, Any] | None, *, fallback: int) -> tuple[int, int]:
    usage = (snapshot or {}).get("usage")
    usage = usage if isinstance(usage, dict) else {}
    completion, total = usage.get("completion_tokens"), usage.get("total_tokens")
    if not isinstance(completion, int) and isinstance(total, int):
        completion = total
    if not isinstance(completion, int):
        # Should not happen; bill the estimate rather than nothing, and say so loudly.
        logger.error("task %s succeeded without usage tokens; settling the estimate", task.id)
        return fallback, fallback
    return completion, total if isinstance(total, int) else completion


def _entry(
    task: Task,
    kind: LedgerKind,
    *,
    tokens: int,
    total_tokens: int,
    cost: int,
    price: Price | PriceRow | None,
    currency: str | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        task_id=task.id,
        kind=kind,
        user_id=task.user_id,
        key_id=task.key_id,
        model=task.model,
        service_tier=task.service_tier,
        tokens=tokens,
        total_tokens=total_tokens,
        cost_micros=cost,
        currency=price.currency if price else currency,
        price_id=price.id if price else None,
    )


async def open_reservations(engine: AsyncEngine) -> dict[str, tuple[int, int]]:
    """By currency: the reserved cost of open tasks and how many hold one (bounded by the open
    tasks, found through the status index)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(_OPEN_RESERVATIONS)).all()
    return {str(currency or "none"): (int(micros or 0), int(n)) for currency, micros, n in rows}


_RESERVES = LedgerEntry.__table__  # type: ignore[attr-defined]
_OPEN_RESERVATIONS = (
    sa_select(_RESERVES.c.currency, func.sum(_RESERVES.c.cost_micros), func.count())
    .select_from(_RESERVES.join(Task.__table__, Task.__table__.c.id == _RESERVES.c.task_id))  # type: ignore[attr-defined]
    .where(_RESERVES.c.kind == LedgerKind.RESERVE, status_in(OPEN_STATUSES))
    .group_by(_RESERVES.c.currency)
)
