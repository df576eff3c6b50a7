"""Settled spend rolled up per day, user, key, model and currency, kept as each task settles,
so the console's charts and overview read a few hundred rows instead of the whole ledger.

The day is the one the task was created on (UTC), as budgets and reports count it. The rollup is
written in the settlement's transaction; the ledger stays the record it is derived from (and the
migration that made the table filled it from the ledger).
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import BigInteger, Column, Index
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app.usage.models import LedgerEntry


class DailySpend(SQLModel, table=True):
    """What was settled for the tasks one key of one user created on one day, per model."""

    __tablename__ = "daily_spend"
    __table_args__ = (Index("ix_daily_spend_day", "day"),)

    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD, UTC
    user_id: str = Field(primary_key=True, max_length=32)
    key_id: str = Field(primary_key=True, max_length=32)
    model: str = Field(primary_key=True, max_length=128)
    currency: str = Field(primary_key=True, max_length=8)  # "" when unpriced
    tasks: int = Field(default=0)
    tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cost_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # What the users were charged, in the charge currency (the cost's, unless a plan's own
    # prices are in another).
    charge_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


async def add_settlement(
    session: AsyncSession, *, reserve: LedgerEntry, settle: LedgerEntry
) -> None:
    """Count one settled task in its day's row, in the caller's transaction."""
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = pg_insert if postgres else sqlite_insert
    table = DailySpend.__table__  # type: ignore[attr-defined]
    statement = insert(table).values(
        day=reserve.created_at.astimezone(UTC).date().isoformat(),
        user_id=reserve.user_id,
        key_id=reserve.key_id,
        model=reserve.model,
        currency=settle.currency or "",
        tasks=1,
        tokens=settle.tokens,
        cost_micros=settle.cost_micros,
        charge_micros=settle.charge_micros,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["day", "user_id", "key_id", "model", "currency"],
        set_={
            "tasks": table.c.tasks + 1,
            "tokens": table.c.tokens + statement.excluded.tokens,
            "cost_micros": table.c.cost_micros + statement.excluded.cost_micros,
            "charge_micros": table.c.charge_micros + statement.excluded.charge_micros,
        },
    )
    connection = await session.connection()
    await connection.execute(statement)
