"""Budgets: spend limits per user or key and period, checked and reserved in one atomic step.

Spend counts each task in the period it was created in: its settled cost once settled, 0 once
released, and its reservation while still open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, case, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.alerts import raise_alert
from app.db import utcnow
from app.db_direct import DirectStatements
from app.errors import InvalidParameter, NotFound, TooManyRequests
from app.keys.models import ApiKey, User
from app.ttl_cache import TtlCache
from app.usage.models import Budget, BudgetPeriod, LedgerEntry, LedgerKind

RESERVE = aliased(LedgerEntry, name="reserve")
SETTLE = aliased(LedgerEntry, name="settle")
RELEASE = aliased(LedgerEntry, name="release_")


QueryT = TypeVar("QueryT", bound=Select[Any])


def with_outcomes(query: QueryT) -> QueryT:
    """`query` over reserve rows, each joined to its task's settle and release rows if any."""
    return (
        query.select_from(RESERVE)
        .outerjoin(
            SETTLE,
            and_(
                col(SETTLE.task_id) == col(RESERVE.task_id), col(SETTLE.kind) == LedgerKind.SETTLE
            ),
        )
        .outerjoin(
            RELEASE,
            and_(
                col(RELEASE.task_id) == col(RESERVE.task_id),
                col(RELEASE.kind) == LedgerKind.RELEASE,
            ),
        )
        .where(col(RESERVE.kind) == LedgerKind.RESERVE)
    )


def effective_totals() -> tuple[Any, Any, Any]:
    """Summed cost, tokens and charge: settled if settled, 0 if released, else the
    reservation."""
    settled, released = col(SETTLE.id).is_not(None), col(RELEASE.id).is_not(None)

    def effective(settle: Any, reserve: Any) -> Any:
        return func.coalesce(func.sum(case((settled, settle), (released, 0), else_=reserve)), 0)

    return (
        effective(col(SETTLE.cost_micros), col(RESERVE.cost_micros)),
        effective(col(SETTLE.tokens), col(RESERVE.tokens)),
        effective(col(SETTLE.charge_micros), col(RESERVE.charge_micros)),
    )


@dataclass(frozen=True)
class Spend:
    """What a scope has used in a period."""

    micros: int
    tokens: int
    charge_micros: int = 0


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Start and end (UTC) of the budget period containing `now`; None for `total`."""
    if period == BudgetPeriod.DAILY:
        start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == BudgetPeriod.MONTHLY:
        start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, (start + timedelta(days=32)).replace(day=1)
    return None, None


async def lock_user(session: AsyncSession, *, user_id: str) -> None:
    """Serialise one user's creates until commit: checks that read, then insert, cannot interleave.

    A row lock on PostgreSQL; the database write lock on SQLite.
    """
    await session.exec(
        update(User).where(col(User.id) == user_id).values(updated_at=User.updated_at)
    )


async def spend(
    session: AsyncSession, *, user_id: str, key_id: str | None, since: datetime | None
) -> Spend:
    """Effective spend of a user (or one of its keys) on tasks created since `since`."""
    query = with_outcomes(select(*effective_totals())).where(col(RESERVE.user_id) == user_id)
    if key_id is not None:
        query = query.where(col(RESERVE.key_id) == key_id)
    if since is not None:
        query = query.where(col(RESERVE.created_at) >= since)
    micros, tokens, charge = (await session.exec(query)).one()
    return Spend(micros=int(micros), tokens=int(tokens), charge_micros=int(charge))


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A budget as creates check it: kept for a second in the process (`Resources.budgets`)."""

    key_id: str | None
    period: str
    limit_micros: int | None
    limit_tokens: int | None
    scope: str = ""
    alert_percents: tuple[int, ...] = ()
    limit_charge_micros: int | None = None

    def limits(self, used: Spend) -> tuple[tuple[int | None, int, str], ...]:
        """Each limit with what is used of it and its name."""
        return (
            (self.limit_micros, used.micros, "cost"),
            (self.limit_tokens, used.tokens, "tokens"),
            (self.limit_charge_micros, used.charge_micros, "charge"),
        )


_BUDGETS = Budget.__table__  # type: ignore[attr-defined]
# A user's budget and one of its key's, as creates check them (one round trip, no ORM objects).
_RULES = sa_select(
    _BUDGETS.c.key_id,
    _BUDGETS.c.period,
    _BUDGETS.c.limit_micros,
    _BUDGETS.c.limit_tokens,
    _BUDGETS.c.scope,
    _BUDGETS.c.alert_percents,
    _BUDGETS.c.limit_charge_micros,
).where(
    or_(_BUDGETS.c.scope == bindparam("user_scope"), _BUDGETS.c.scope == bindparam("key_scope"))
)


async def budgets_for(
    statements: DirectStatements,
    *,
    user_id: str,
    key_id: str,
    cache: TtlCache[tuple[BudgetRule, ...]],
) -> tuple[BudgetRule, ...]:
    """The budgets of a user and one of its keys, read at most once a second per process: a new
    budget applies on every replica within that second."""
    scopes = {"user_scope": f"user:{user_id}", "key_scope": f"key:{key_id}"}
    cache_key = "\n".join(scopes.values())
    rules = cache.get(cache_key)
    if rules is None:
        rules = tuple(
            BudgetRule(
                key, period, micros, tokens, scope, tuple(alert_percents or ()), charge_micros
            )
            for key, period, micros, tokens, scope, alert_percents, charge_micros in (
                await statements.rows(_RULES, scopes)
            )
        )
        cache.put(cache_key, rules)
    return rules


async def enforce_budgets(
    session: AsyncSession,
    *,
    user_id: str,
    budgets: tuple[BudgetRule, ...],
    add: LedgerEntry,
) -> None:
    """429 `QuotaExceeded.Budget` if the reservation `add` would take any budget over a limit.

    When there is a budget, the user's lock is taken before the spend is read, and held until
    the caller commits the reservation with it: concurrent creates cannot overshoot. Users
    without budgets take no lock.
    """
    if not budgets:
        return
    await lock_user(session, user_id=user_id)
    now = utcnow()
    for budget in budgets:
        start, end = period_bounds(budget.period, now)
        used = await spend(session, user_id=user_id, key_id=budget.key_id, since=start)
        added = Spend(add.cost_micros, add.tokens, add.charge_micros)
        over = any(
            limit is not None and before + after > limit
            for (limit, before, _), (_, after, _) in zip(
                budget.limits(used), budget.limits(added), strict=True
            )
        )
        if not over:
            await _alert_crossings(session, budget, start, used, added)
        if over:
            scope = "key" if budget.key_id else "user"
            retry_after = int((end - now).total_seconds()) if end else 86_400
            raise TooManyRequests(
                f"The {budget.period} budget of this {scope} does not cover this task.",
                code="QuotaExceeded.Budget",
                retry_after=retry_after,
                retryable=False,
            )


async def _alert_crossings(
    session: AsyncSession,
    budget: BudgetRule,
    start: datetime | None,
    used: Spend,
    add: Spend,
) -> None:
    """Queue an alert for each threshold this reservation takes the budget across (once per
    period: the alert's key names the period)."""
    period = start.date().isoformat() if start is not None else "total"
    for (limit, before, unit), (_, added, _) in zip(
        budget.limits(used), budget.limits(add), strict=True
    ):
        for percent in budget.alert_percents:
            if limit and before * 100 < percent * limit <= (before + added) * 100:
                await raise_alert(
                    session,
                    dedupe=f"budget:{budget.scope}:{period}:{unit}:{percent}",
                    kind="budget",
                    message=f"Budget {budget.scope} ({budget.period}) passed {percent}% of its "
                    f"{unit} limit: {before + added} of {limit}.",
                )


async def set_budget(
    session: AsyncSession,
    *,
    user_id: str,
    key_id: str | None,
    period: str,
    limit_micros: int | None,
    limit_tokens: int | None,
    alert_percents: list[int] | None = None,
    limit_charge_micros: int | None = None,
) -> Budget:
    """Create or replace the budget of a user or one of its keys (with the percentages of its
    limits whose crossing raises an alert)."""
    if limit_micros is None and limit_tokens is None and limit_charge_micros is None:
        raise InvalidParameter("limit", "give a cost, charge or token limit (or several)")
    if key_id is not None:
        key = await session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"The key {key_id} does not exist.", param="key_id")
        user_id = key.user_id
    elif await session.get(User, user_id) is None:
        raise NotFound(f"The user {user_id} does not exist.", param="user_id")
    scope = f"key:{key_id}" if key_id else f"user:{user_id}"
    budget = (await session.exec(select(Budget).where(Budget.scope == scope))).first()
    if budget is None:
        budget = Budget(scope=scope, user_id=user_id, key_id=key_id)
    budget.period, budget.limit_micros, budget.limit_tokens = period, limit_micros, limit_tokens
    budget.limit_charge_micros = limit_charge_micros
    budget.alert_percents = sorted(set(alert_percents)) if alert_percents else None
    budget.updated_at = utcnow()
    session.add(budget)
    await session.commit()
    return budget


async def delete_budget(session: AsyncSession, *, scope: str) -> None:
    """Remove a budget; 404 if there is none."""
    budget = (await session.exec(select(Budget).where(Budget.scope == scope))).first()
    if budget is None:
        raise NotFound("There is no budget here.", param="budget")
    await session.delete(budget)
    await session.commit()


async def budgets_of(session: AsyncSession, *, user_id: str) -> list[Budget]:
    """A user's own budget and its keys' budgets; 404 for a user that does not exist."""
    if await session.get(User, user_id) is None:
        raise NotFound(f"The user {user_id} does not exist.", param="user_id")
    return await list_budgets(session, user_id=user_id)


async def list_budgets(session: AsyncSession, *, user_id: str | None = None) -> list[Budget]:
    """Every budget (or one user's and its keys'), by scope."""
    query = select(Budget).order_by(col(Budget.scope))
    if user_id is not None:
        query = query.where(Budget.user_id == user_id)
    return list((await session.exec(query)).all())
