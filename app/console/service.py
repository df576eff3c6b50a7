"""What the console's pages show, gathered from the domains (nothing here writes but through
their services, in sessions the audit log follows)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from prometheus_client import Counter
from sqlmodel.ext.asyncio.session import AsyncSession

from app.resources import Resources
from app.tasks import explorer, repository
from app.upstream.accounts import list_accounts
from app.usage.ledger import open_reservations
from app.usage.models import MICROS
from app.usage.reports import DailyCost, daily_costs, usage_report

By = Literal["model", "user", "key"]


def money(micros: int) -> str:
    """Micro-units as a decimal amount with two places at least."""
    amount = Decimal(micros) / MICROS
    return (
        f"{amount:.2f}" if amount == amount.quantize(Decimal("0.01")) else str(amount.normalize())
    )


@dataclass(frozen=True)
class Overview:
    """The admin's first page: spend against the previous period, open work."""

    spend: list[dict[str, str]]  # per currency: today, yesterday, this month, last month
    open_tasks: dict[str, int]
    reservations: dict[str, tuple[int, int]]
    # Open tasks against the gateway-wide cap: how much of the account's queue is in use.
    in_flight: int
    in_flight_cap: int
    trouble: dict[str, int]  # upstream trouble in the last hour, from the task events
    refusals: dict[str, int]  # limit refusals by code since this process started


async def overview(session: AsyncSession, resources: Resources, *, now: datetime) -> Overview:
    """Spend by day for this month and the last, open tasks by state, open reservations."""
    today = now.astimezone(UTC).date()
    month_start = today.replace(day=1)
    last_month_start = (month_start - timedelta(days=1)).replace(day=1)
    rows = await daily_costs(
        session,
        by="model",
        start=_midnight(last_month_start),
        end=_midnight(today) + timedelta(days=1),
    )
    by_currency: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        day = date.fromisoformat(row.day)
        spent = by_currency[row.currency or "-"]
        if day == today:
            spent["today"] += row.cost_micros
        if day == today - timedelta(days=1):
            spent["yesterday"] += row.cost_micros
        spent["this month" if day >= month_start else "last month"] += row.cost_micros
    spend = [
        {"currency": currency, **{name: money(micros) for name, micros in spent.items()}}
        for currency, spent in sorted(by_currency.items())
    ]
    open_tasks = await repository.open_counts(resources.autocommit_engine)
    return Overview(
        spend=spend,
        open_tasks=open_tasks,
        reservations=await open_reservations(resources.autocommit_engine),
        in_flight=sum(open_tasks.values()),
        in_flight_cap=resources.settings.max_tasks_in_flight_global,
        trouble=await explorer.recent_trouble(session, since=now - timedelta(hours=1)),
        refusals=_refusals(resources),
    )


def _refusals(resources: Resources) -> dict[str, int]:
    """429s by code, as this process's metrics have counted them (a refused request writes
    nothing, so no replica-wide record of them exists but the metrics scrape)."""
    return {labels["code"]: count for labels, count in _counted(resources.metrics.refusals)}


def chart(rows: list[DailyCost]) -> dict[str, Any]:
    """Chart.js data: one stacked bar series per group, a bar per day, in currency units."""
    days = sorted({row.day for row in rows})
    series: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        series[row.label][row.day] = series[row.label].get(row.day, 0.0) + row.cost_micros / MICROS
    return {
        "labels": days,
        "datasets": [
            {"label": label, "data": [values.get(day, 0.0) for day in days]}
            for label, values in sorted(series.items())
        ],
    }


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def costs_csv(rows: list[DailyCost], *, by: By) -> str:
    """What the costs chart shows, as CSV (cost in currency units and in micro-units)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["day", by, "name", "currency", "cost", "cost_micros", "tokens"])
    for row in rows:
        cost = money(row.cost_micros)
        writer.writerow(
            [row.day, row.group, row.label, row.currency or "", cost, row.cost_micros, row.tokens]
        )
    return out.getvalue()


@dataclass(frozen=True)
class AccountRow:
    """One upstream account as the console shows it: state, health, load and spend."""

    account: dict[str, Any]  # its public fields (never its key)
    open_tasks: int
    tasks: int  # created in the window
    cost: dict[str, str]  # settled, per currency
    calls: dict[str, int]  # upstream calls by kind, as this replica counted them


async def accounts(
    session: AsyncSession, resources: Resources, *, now: datetime
) -> list[AccountRow]:
    """Every account with its open tasks, and its tasks and settled cost of the last 30 days."""
    open_by_model = await repository.open_tasks_by_account(resources.autocommit_engine)
    spend = await usage_report(
        session, group_by="account", start=now - timedelta(days=30), end=None
    )
    calls = _calls_by_account(resources)
    rows = []
    for account in await list_accounts(session):
        mine = [row for row in spend if row.group == account.id]
        rows.append(
            AccountRow(
                account=account.public(),
                open_tasks=sum(n for (a, _), n in open_by_model.items() if a == account.id),
                tasks=sum(row.tasks for row in mine),
                cost={row.currency or "-": money(row.cost_micros) for row in mine},
                calls=calls.get(account.id, {}),
            )
        )
    return rows


def _calls_by_account(resources: Resources) -> dict[str, dict[str, int]]:
    """Upstream calls by account and kind, from this process's metrics."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for labels, count in _counted(resources.metrics.upstream_calls):
        counts[labels["account"]][labels["call"]] += count
    return counts


def _counted(counter: Counter) -> Iterator[tuple[dict[str, str], int]]:
    """A counter's non-zero totals in this process, with their labels."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                yield sample.labels, int(sample.value)
