"""The usage ledger: reserve at create, settle on success, release otherwise; exactly once each.

Rows are only ever inserted, in the caller's transaction. The unique (task, kind) constraint
backs the compare-and-swap on the task's status: a second settle cannot be written.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.alerts import raise_alert
from app.db import after_commit, new_row
from app.metrics import Metrics
from app.tasks.models import OPEN_STATUSES, Task, TaskStatus, status_in
from app.usage.models import LedgerEntry, LedgerKind, Price
from app.usage.pricing import Charge, PriceRow, Terms, priced
from app.usage.rollup import add_settlement

logger = logging.getLogger(__name__)


def reserve_entry(task: Task, *, tokens: int, terms: Terms) -> LedgerEntry:
    """The reserve row for a new task (added by the caller with the task, in one transaction):
    its cost and its charge by `terms`, both fixed from here on."""
    price = terms.price
    if price is None:
        logger.warning(
            "model %s (%s) has no price: task %s runs unpriced",
            task.model,
            task.service_tier,
            task.id,
        )
    task.price_id = price.id if price else None
    cost, charge = priced(
        tokens,
        price=price,
        plan_id=terms.plan_id,
        charge_price=terms.charge_price,
        ppm=terms.charge_ppm,
    )
    return _entry(
        task,
        LedgerKind.RESERVE,
        tokens=tokens,
        total_tokens=tokens,
        cost=cost,
        price=price,
        charge=charge,
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
        nothing = Charge(0, reserve.charge_currency, reserve.plan_id, None, None)
        entry = _entry(
            task,
            LedgerKind.RELEASE,
            tokens=0,
            total_tokens=0,
            cost=0,
            price=None,
            charge=nothing,
            currency=reserve.currency,
        )
    else:
        entry = await _settle_entry(session, task=task, reserve=reserve, snapshot=snapshot)
    session.add(entry)
    if entry.kind == LedgerKind.SETTLE:
        await add_settlement(session, reserve=reserve, settle=entry)
        if entry.tokens > reserve.tokens:
            await _record_overage(session, reserve=reserve, settle=entry)
    metrics = session.info.get("metrics")
    if isinstance(metrics, Metrics):
        account = task.account_id or "default"
        after_commit(session, partial(_count_outcome, metrics, status, entry, account))
    return entry


async def _settle_entry(
    session: AsyncSession, *, task: Task, reserve: LedgerEntry, snapshot: dict[str, Any] | None
) -> LedgerEntry:
    """The upstream's usage at the reserve's price and by the reserve's charge terms."""
    price = await session.get(Price, reserve.price_id) if reserve.price_id else None
    own = await session.get(Price, reserve.charge_price_id) if reserve.charge_price_id else None
    tokens, total = _usage_tokens(task, snapshot, fallback=reserve.tokens)
    cost, charge = priced(
        tokens, price=price, plan_id=reserve.plan_id, charge_price=own, ppm=reserve.charge_ppm
    )
    return _entry(
        task,
        LedgerKind.SETTLE,
        tokens=tokens,
        total_tokens=total,
        cost=cost,
        price=price,
        charge=charge,
        charge_price_id=reserve.charge_price_id,
    )


async def _record_overage(
    session: AsyncSession, *, reserve: LedgerEntry, settle: LedgerEntry
) -> None:
    """The upstream billed more than was reserved. The settle row already counts against every
    budget (spend reads it at once); ops hear of it through the log, the metric and an alert."""
    over = settle.tokens - reserve.tokens
    logger.warning(
        "task %s settled %d tokens over its reservation of %d", settle.task_id, over, reserve.tokens
    )
    metrics = session.info.get("metrics")
    if isinstance(metrics, Metrics):
        after_commit(session, partial(metrics.overage_tokens.labels(settle.model).inc, over))
    await raise_alert(
        session,
        dedupe=f"overage:{settle.task_id}",
        kind="overage",
        message=f"Task {settle.task_id} ({settle.model}) used {settle.tokens} tokens, "
        f"{over} more than its reservation of {reserve.tokens}.",
    )


def _count_outcome(metrics: Metrics, status: TaskStatus, entry: LedgerEntry, account: str) -> None:
    metrics.tasks_finished.labels(str(status)).inc()
    if entry.kind == LedgerKind.SETTLE:
        metrics.settled_tokens.labels(account, entry.model).inc(entry.tokens)
        metrics.settled_cost.labels(account, entry.currency or "none").inc(entry.cost_micros)


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
    charge: Charge,
    currency: str | None = None,
    charge_price_id: int | None = None,
) -> LedgerEntry:
    return new_row(
        LedgerEntry,
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
        charge_micros=charge.micros,
        charge_currency=charge.currency,
        charge_price_id=charge.price.id if charge.price else charge_price_id,
        charge_ppm=charge.ppm,
        plan_id=charge.plan_id,
    )


async def entries_of(session: AsyncSession, *, task_id: str) -> list[LedgerEntry]:
    """A task's ledger rows, oldest first."""
    query = select(LedgerEntry).where(LedgerEntry.task_id == task_id).order_by(col(LedgerEntry.id))
    return list((await session.exec(query)).all())


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
