"""Tables for money: prices, the append-only usage ledger, and budgets."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime, utcnow

MICROS = 1_000_000  # costs are integers in millionths of the price's currency unit


class LedgerKind(StrEnum):
    """What a ledger row records for its task."""

    RESERVE = "reserve"  # the estimate, held against budgets while the task is open
    SETTLE = "settle"  # the upstream's usage of a succeeded task, at the reserve's price
    RELEASE = "release"  # the task ended without success: the reservation is void, cost 0


class Price(SQLModel, table=True):
    """The price of a model and service tier from `effective_from` on."""

    __tablename__ = "prices"
    __table_args__ = (
        UniqueConstraint("model", "service_tier", "effective_from", name="uq_prices_effective"),
    )

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    service_tier: str = Field(default="default", max_length=16)
    currency: str = Field(default="USD", max_length=8)
    micros_per_million_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    effective_from: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerEntry(SQLModel, table=True):
    """One usage fact about one task; never updated, at most one row per (task, kind)."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("task_id", "kind", name="uq_ledger_task_kind"),
        Index("ix_ledger_user_created", "user_id", "created_at"),
        Index("ix_ledger_key_created", "key_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="tasks.id", max_length=64)
    kind: str = Field(max_length=16)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    key_id: str = Field(foreign_key="api_keys.id", max_length=32)
    model: str = Field(max_length=128)
    service_tier: str = Field(default="default", max_length=16)
    tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    total_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cost_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    currency: str | None = Field(default=None, max_length=8)
    price_id: int | None = Field(default=None, foreign_key="prices.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BudgetPeriod(StrEnum):
    """How often a budget starts again (UTC calendar)."""

    DAILY = "daily"
    MONTHLY = "monthly"
    TOTAL = "total"


class Budget(SQLModel, table=True):
    """A spending limit for a user, or for one of its keys; cost and/or tokens per period."""

    __tablename__ = "budgets"

    id: int | None = Field(default=None, primary_key=True)
    # "user:<id>" or "key:<id>": one budget per scope.
    scope: str = Field(max_length=48, unique=True)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    key_id: str | None = Field(default=None, foreign_key="api_keys.id", max_length=32)
    period: str = Field(default=BudgetPeriod.MONTHLY, max_length=16)
    limit_micros: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    limit_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Percentages of a limit whose crossing notifies the alert webhook, once per period.
    alert_percents: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
