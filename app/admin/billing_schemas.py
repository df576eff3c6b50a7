"""Admin shapes for prices, budgets and usage reports."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.admin.schemas import PRINTABLE
from app.usage.models import MICROS

# Amounts are stored in 64-bit integer columns.
Int64 = Annotated[int, Field(ge=0, le=2**63 - 1)]


class PriceCreate(BaseModel):
    """A new price; give it per million tokens in currency units (exact decimal) or micro-units."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    service_tier: Literal["default", "flex"] = "default"
    currency: Annotated[str, Field(min_length=3, max_length=8, pattern=r"^[A-Za-z]+$")] = "USD"
    price_per_million_tokens: (
        Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)] | None
    ) = None
    micros_per_million_tokens: Int64 | None = None
    effective_from: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_price(self) -> PriceCreate:
        if (self.price_per_million_tokens is None) == (self.micros_per_million_tokens is None):
            raise ValueError(
                "give exactly one of price_per_million_tokens, micros_per_million_tokens"
            )
        return self

    def micros(self) -> int:
        """The price in micro-units per million tokens."""
        if self.micros_per_million_tokens is not None:
            return self.micros_per_million_tokens
        assert self.price_per_million_tokens is not None
        return int(self.price_per_million_tokens * MICROS)


class PricePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model: str
    service_tier: str
    currency: str
    micros_per_million_tokens: int
    effective_from: datetime


class BudgetSet(BaseModel):
    """A budget: a cost limit (currency units or micro-units) and/or a token limit, per period."""

    model_config = ConfigDict(extra="forbid")

    period: Literal["daily", "monthly", "total"] = "monthly"
    limit: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)] | None = None
    limit_micros: Int64 | None = None
    limit_tokens: Int64 | None = None

    def micros(self) -> int | None:
        """The cost limit in micro-units, if any."""
        if self.limit_micros is not None:
            return self.limit_micros
        return None if self.limit is None else int(self.limit * MICROS)


class BudgetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    scope: str
    user_id: str
    key_id: str | None
    period: str
    limit_micros: int | None
    limit_tokens: int | None
