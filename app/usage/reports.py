"""Usage reports read from the ledger: per user, key, model or day, as JSON rows or CSV.

A task counts in the period it was created in (its reservation's time), as budgets count it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import String, case, cast, func
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import InvalidParameter
from app.keys.models import ApiKey, User
from app.tasks.models import Task, TaskArchive
from app.usage.budgets import (
    RELEASE,
    RESERVE,
    SETTLE,
    budgets_of,
    period_bounds,
    spend,
    with_outcomes,
)
from app.usage.models import MICROS
from app.usage.prices import list_prices_by_id, price_label
from app.usage.rollup import DailySpend

GroupBy = Literal["user", "key", "model", "day", "task", "price", "account"]


def parse_instant(value: str | None, *, param: str) -> datetime | None:
    """A report bound: a date is UTC midnight, a datetime without a zone is UTC; else 400."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(
            param, "expected a date (2026-11-01) or a datetime (2026-11-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class UsageRow:
    """Totals of one group: settled usage and cost, open reservations, counts by outcome.

    `name` is the user's or the key's name when grouped by user or key (`user_name`: the key's
    owner), so people can read a report without looking ids up; grouped by task, `name` is its
    model, `user_name` its owner and `archive` its archive copy's state; grouped by price, the
    group is the cost price row and `name` says what it is for.
    """

    group: str
    currency: str | None
    tasks: int
    settled_tasks: int
    released_tasks: int
    open_tasks: int
    tokens: int
    cost_micros: int
    reserved_micros: int
    unpriced_tasks: int
    # What the users were charged (settled), and tokens the upstream billed beyond reservations.
    charge_micros: int
    overage_tokens: int
    charge_currency: str | None = field(default=None, kw_only=True)
    name: str | None = field(default=None, kw_only=True)
    user_name: str | None = field(default=None, kw_only=True)
    # Grouped by task: where its archive copy stands (None: not archived, archive off).
    archive: str | None = field(default=None, kw_only=True)

    @property
    def cost(self) -> str:
        """Settled cost in currency units, exactly (micro-units have six decimals)."""
        return str(Decimal(self.cost_micros) / MICROS)

    @property
    def margin_micros(self) -> int | None:
        """Charge less cost, where both are in one currency."""
        if self.charge_currency != self.currency:
            return None
        return self.charge_micros - self.cost_micros

    def as_dict(self) -> dict[str, Any]:
        """The row with its decimal cost, charge and margin."""
        margin = self.margin_micros
        return {
            **asdict(self),
            "cost": self.cost,
            "charge": str(Decimal(self.charge_micros) / MICROS),
            "margin_micros": margin,
            "margin": None if margin is None else str(Decimal(margin) / MICROS),
        }


def _group_column(group_by: GroupBy, dialect: str) -> Any:
    if group_by == "user":
        return col(RESERVE.user_id)
    if group_by == "key":
        return col(RESERVE.key_id)
    if group_by == "model":
        return col(RESERVE.model)
    if group_by == "task":
        return col(RESERVE.task_id)
    if group_by == "price":
        return func.coalesce(cast(col(RESERVE.price_id), String), "none")
    if group_by == "account":  # the upstream account the task ran on
        return func.coalesce(col(Task.account_id), "default")
    if dialect == "sqlite":  # stored as naive UTC text
        return func.strftime("%Y-%m-%d", col(RESERVE.created_at))
    return func.to_char(func.timezone("UTC", col(RESERVE.created_at)), "YYYY-MM-DD")


async def usage_report(
    session: AsyncSession,
    *,
    group_by: GroupBy,
    start: datetime | None,
    end: datetime | None,
    user_id: str | None = None,
) -> list[UsageRow]:
    """One row per group (and currency) of tasks created in [start, end)."""
    group = _group_column(group_by, session.get_bind().dialect.name).label("group")
    open_ = col(SETTLE.id).is_(None) & col(RELEASE.id).is_(None)
    over = col(SETTLE.tokens) - col(RESERVE.tokens)
    query = (
        with_outcomes(
            sa_select(
                group,
                col(RESERVE.currency),
                col(RESERVE.charge_currency),
                func.count(col(RESERVE.id)),
                func.count(col(SETTLE.id)),
                func.count(col(RELEASE.id)),
                func.sum(case((open_, 1), else_=0)),
                func.coalesce(func.sum(col(SETTLE.tokens)), 0),
                func.coalesce(func.sum(col(SETTLE.cost_micros)), 0),
                func.sum(case((open_, col(RESERVE.cost_micros)), else_=0)),
                func.sum(case((col(RESERVE.price_id).is_(None), 1), else_=0)),
                func.coalesce(func.sum(col(SETTLE.charge_micros)), 0),
                func.coalesce(func.sum(case((over > 0, over), else_=0)), 0),
            )
        )
        .group_by(group, col(RESERVE.currency), col(RESERVE.charge_currency))
        .order_by(group)
    )
    if group_by == "account":
        query = query.join(Task, col(Task.id) == col(RESERVE.task_id))
    if start is not None:
        query = query.where(col(RESERVE.created_at) >= start)
    if end is not None:
        query = query.where(col(RESERVE.created_at) < end)
    if user_id is not None:
        query = query.where(col(RESERVE.user_id) == user_id)
    # SQLModel types select() up to four columns; this is SQLAlchemy's, which it runs as well.
    rows = (await session.exec(query)).all()  # type: ignore[call-overload]
    report = [
        UsageRow(str(r[0]), r[1], *(int(v or 0) for v in r[3:]), charge_currency=r[2]) for r in rows
    ]
    return await _with_names(session, report, group_by=group_by)


@dataclass(frozen=True)
class DailyCost:
    """Settled cost and tokens of one day and one group (of tasks created that day, UTC)."""

    day: str
    group: str
    label: str
    currency: str | None
    cost_micros: int
    tokens: int


async def daily_costs(
    session: AsyncSession,
    *,
    by: Literal["model", "user", "key"],
    start: datetime,
    end: datetime,
    user_id: str | None = None,
) -> list[DailyCost]:
    """Per day and per model, user or key: what was settled for tasks created in [start, end)
    (whole UTC days), from the rollup kept as tasks settle (`app.usage.rollup`)."""
    group = {"model": DailySpend.model, "user": DailySpend.user_id, "key": DailySpend.key_id}[by]
    query = (
        sa_select(
            col(DailySpend.day),
            col(group),
            col(DailySpend.currency),
            func.sum(col(DailySpend.cost_micros)),
            func.sum(col(DailySpend.tokens)),
        )
        .where(
            col(DailySpend.day) >= start.date().isoformat(),
            col(DailySpend.day) < end.date().isoformat(),
        )
        .group_by(col(DailySpend.day), col(group), col(DailySpend.currency))
        .order_by(col(DailySpend.day), col(group))
    )
    if user_id is not None:
        query = query.where(col(DailySpend.user_id) == user_id)
    rows = (await session.exec(query)).all()  # type: ignore[call-overload]
    labels = await _labels(session, by, {str(row[1]) for row in rows})
    return [
        DailyCost(str(d), str(g), labels.get(str(g), str(g)), c or None, int(micros), int(tokens))
        for d, g, c, micros, tokens in rows
    ]


async def _labels(session: AsyncSession, by: str, ids: set[str]) -> dict[str, str]:
    """Names to show for user or key ids (a key without a name: its prefix)."""
    if by == "user" and ids:
        users = await session.exec(select(User.id, User.name).where(col(User.id).in_(ids)))
        return dict(users.all())
    if by == "key" and ids:
        keys = await session.exec(
            select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(col(ApiKey.id).in_(ids))
        )
        return {key_id: name or f"{prefix}…" for key_id, name, prefix in keys.all()}
    return {}


async def _with_names(
    session: AsyncSession, rows: list[UsageRow], *, group_by: GroupBy
) -> list[UsageRow]:
    ids = [row.group for row in rows]
    if group_by == "user" and ids:
        users = await session.exec(select(User.id, User.name).where(col(User.id).in_(ids)))
        names = dict(users.all())
        return [replace(row, name=names.get(row.group)) for row in rows]
    if group_by == "key" and ids:
        keys = await session.exec(
            select(ApiKey.id, ApiKey.name, ApiKey.prefix, User.name)
            .join(User, col(User.id) == col(ApiKey.user_id))
            .where(col(ApiKey.id).in_(ids))
        )
        found = {key_id: (name or prefix, owner) for key_id, name, prefix, owner in keys.all()}
        labelled = []
        for row in rows:
            name, owner = found.get(row.group, (None, None))
            labelled.append(replace(row, name=name, user_name=owner))
        return labelled
    if group_by == "task" and ids:
        return await _with_task_details(session, rows)
    if group_by == "price" and ids:
        return await _with_price_labels(session, rows)
    return rows


async def _with_price_labels(session: AsyncSession, rows: list[UsageRow]) -> list[UsageRow]:
    ids = [int(row.group) for row in rows if row.group.isdigit()]
    found = {price.id: price for price in await list_prices_by_id(session, ids)}
    labelled = []
    for row in rows:
        price = found.get(int(row.group)) if row.group.isdigit() else None
        labelled.append(replace(row, name=price_label(price) if price else "unpriced"))
    return labelled


async def _with_task_details(session: AsyncSession, rows: list[UsageRow]) -> list[UsageRow]:
    tasks = await session.exec(
        select(Task.id, Task.model, User.name, TaskArchive.status)
        .join(User, col(User.id) == col(Task.user_id))
        .outerjoin(TaskArchive, col(TaskArchive.task_id) == col(Task.id))
        .where(col(Task.id).in_([row.group for row in rows]))
    )
    found = {task_id: (model, owner, archive) for task_id, model, owner, archive in tasks.all()}
    detailed = []
    for row in rows:
        model, owner, archive = found.get(row.group, (None, None, None))
        detailed.append(replace(row, name=model, user_name=owner, archive=archive))
    return detailed


def to_csv(rows: list[UsageRow], *, group_by: GroupBy) -> str:
    """The rows as CSV for finance, with the cost in currency units and in micro-units."""
    out = io.StringIO()
    fields = [
        "tasks",
        "settled_tasks",
        "released_tasks",
        "open_tasks",
        "tokens",
        "cost",
        "cost_micros",
        "reserved_micros",
        "unpriced_tasks",
        "overage_tokens",
        "charge_currency",
        "charge",
        "charge_micros",
        "margin",
        "margin_micros",
    ]
    names = {
        "user": ["name"],
        "key": ["name", "user_name"],
        "task": ["name", "user_name", "archive"],
        "price": ["name"],
    }.get(group_by, [])
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([group_by, *names, "currency", *fields])
    for row in rows:
        data = row.as_dict()
        labels = [data[name] or "" for name in names]
        values = ["" if data[name] is None else data[name] for name in fields]
        writer.writerow([row.group, *labels, row.currency or "", *values])
    return out.getvalue()


async def self_service_usage(session: AsyncSession, *, user_id: str, key_id: str) -> dict[str, Any]:
    """A key's view of its user: this month's usage by model, and each budget's room left."""
    now = utcnow()
    month_start, month_end = period_bounds("monthly", now)
    rows = await usage_report(
        session, group_by="model", start=month_start, end=month_end, user_id=user_id
    )
    budgets = []
    for budget in await budgets_of(session, user_id=user_id):
        if budget.key_id not in (None, key_id):
            continue  # another key's budget is not this key's business
        start, end = period_bounds(budget.period, now)
        used = await spend(session, user_id=user_id, key_id=budget.key_id, since=start)
        budgets.append(
            {
                "scope": "key" if budget.key_id else "user",
                "period": budget.period,
                "resets_at": end,
                "limit_micros": budget.limit_micros,
                "spent_micros": used.micros,
                "remaining_micros": _left(budget.limit_micros, used.micros),
                "limit_tokens": budget.limit_tokens,
                "spent_tokens": used.tokens,
                "remaining_tokens": _left(budget.limit_tokens, used.tokens),
                "limit_charge_micros": budget.limit_charge_micros,
                "charged_micros": used.charge_micros,
                "remaining_charge_micros": _left(budget.limit_charge_micros, used.charge_micros),
            }
        )
    return {
        "user_id": user_id,
        "key_id": key_id,
        "from": month_start,
        "to": month_end,
        "usage": [row.as_dict() for row in rows],
        "budgets": budgets,
    }


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(0, limit - used)
