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


ANY = "*"  # a price dimension that matches every value
PRICE_DIMENSIONS = ("resolution", "video_input", "audio", "draft")


class PricePlan(SQLModel, table=True):
    """What users on it are charged: a multiplier on cost, or prices of its own (`prices` rows
    with its id), the multiplier covering what those do not."""

    __tablename__ = "price_plans"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    # Charge = cost × multiplier_ppm / 1,000,000 (1,000,000: at cost) where no own price matches.
    multiplier_ppm: int = Field(default=MICROS, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Price(SQLModel, table=True):
    """A price per million tokens from `effective_from` on, for a model and service tier and the
    dimensions that change it (each a value or `*`); the most specific matching row wins.

    Rows without a plan are what the upstream charges the account (cost); a plan's rows are
    what its users are charged.
    """

    __tablename__ = "prices"
    __table_args__ = (
        UniqueConstraint(
            "plan_key",
            "model",
            "service_tier",
            *PRICE_DIMENSIONS,
            "effective_from",
            name="uq_prices_effective",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    service_tier: str = Field(default="default", max_length=16)
    resolution: str = Field(default=ANY, max_length=8)
    video_input: str = Field(default=ANY, max_length=4)  # yes | no | *
    audio: str = Field(default=ANY, max_length=4)  # on | off | *
    draft: str = Field(default=ANY, max_length=4)  # yes | no | *
    plan_id: int | None = Field(default=None, foreign_key="price_plans.id")
    # The plan's id, 0 for cost prices: a key the unique constraint can compare (NULLs differ).
    plan_key: int = Field(default=0)
    currency: str = Field(default="USD", max_length=8)
    micros_per_million_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    approximate: bool = Field(default=False)  # seeded from public figures not yet confirmed
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
    # What the user is billed: at its plan's own price (`charge_price_id`), else cost ×
    # `charge_ppm` / 1,000,000; fixed at reserve, so a later plan change re-prices nothing.
    charge_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    charge_currency: str | None = Field(default=None, max_length=8)
    charge_price_id: int | None = Field(default=None, foreign_key="prices.id")
    charge_ppm: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    plan_id: int | None = Field(default=None, foreign_key="price_plans.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BudgetPeriod(StrEnum):
    """How often a budget starts again (UTC calendar)."""

    DAILY = "daily"
    MONTHLY = "monthly"
    TOTAL = "total"


class Budget(SQLModel, table=True):
    """A spending limit for a user, or for one of its keys: cost, charge and/or tokens per
    period."""

    __tablename__ = "budgets"

    id: int | None = Field(default=None, primary_key=True)
    # "user:<id>" or "key:<id>": one budget per scope.
    scope: str = Field(max_length=48, unique=True)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    key_id: str | None = Field(default=None, foreign_key="api_keys.id", max_length=32)
    period: str = Field(default=BudgetPeriod.MONTHLY, max_length=16)
    limit_micros: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    limit_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    limit_charge_micros: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    # Percentages of a limit whose crossing notifies the alert webhook, once per period.
    alert_percents: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
