"""Admin shapes for prices, budgets and usage reports."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)

from app.admin.schemas import PRINTABLE, Instant, whole
from app.usage.models import MICROS

# Stored in 64-bit columns, and bounded to what every JSON parser keeps exact (2**53 - 1).
Amount = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(whole)]


PlanId = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(whole)]

_MONEY = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$"


def _exact_amount(value: object) -> Decimal:
    """An exact amount in currency units: a decimal string or a whole number (not a float)."""
    value = whole(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return Decimal(value)
    if isinstance(value, str) and re.fullmatch(_MONEY, value):
        return Decimal(value)
    raise ValueError(
        'give an exact amount: a string such as "12.50" (up to 6 decimals), or a whole number'
    )


# Money in currency units; floats are refused, as they are not exact.
Money = Annotated[
    Decimal,
    BeforeValidator(_exact_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 10**12 - 1},
                {"type": "string", "pattern": _MONEY},
            ]
        }
    ),
]


def _given_one_of(*names: str) -> list[JsonValue]:
    """JSON Schema alternatives, one per field, each saying "this one is given, not null"."""
    return [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names]


class PriceCreate(BaseModel):
    """A new price; give it per million tokens in currency units (exact decimal) or micro-units."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": _given_one_of("price_per_million_tokens", "micros_per_million_tokens")
        },
    )

    model: Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    service_tier: Literal["default", "flex"] = "default"
    currency: Annotated[str, Field(min_length=3, max_length=8, pattern=r"^[A-Za-z]+$")] = "USD"
    price_per_million_tokens: Money | None = None
    micros_per_million_tokens: Amount | None = None
    effective_from: Instant | None = None
    # The dimensions it applies to (`*`: any); the most specific matching price wins.
    resolution: Literal["*", "480p", "720p", "1080p", "4k"] = "*"
    video_input: Literal["*", "yes", "no"] = "*"
    audio: Literal["*", "on", "off"] = "*"
    draft: Literal["*", "yes", "no"] = "*"
    # A plan's own price (what its users are charged); none: what the upstream charges.
    plan_id: PlanId | None = None
    approximate: bool = False

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
    resolution: str
    video_input: str
    audio: str
    draft: str
    plan_id: int | None
    approximate: bool


AlertPercents = Annotated[
    list[Annotated[int, Field(ge=1, le=100), BeforeValidator(whole)]], Field(max_length=5)
]


class BudgetSet(BaseModel):
    """A budget: a cost limit (currency units or micro-units) and/or a token limit, per period."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "anyOf": _given_one_of(
                "limit", "limit_micros", "limit_tokens", "limit_charge", "limit_charge_micros"
            )
        },
    )

    period: Literal["daily", "monthly", "total"] = "monthly"
    limit: Money | None = None
    limit_micros: Amount | None = None
    limit_tokens: Amount | None = None
    # A limit on what the user is charged (its plan's prices), rather than on cost.
    limit_charge: Money | None = None
    limit_charge_micros: Amount | None = None
    # Percentages of a limit whose crossing notifies GATEWAY_ALERT_WEBHOOK_URL, once per period.
    alert_percents: AlertPercents | None = None

    def micros(self) -> int | None:
        """The cost limit in micro-units, if any."""
        if self.limit_micros is not None:
            return self.limit_micros
        return None if self.limit is None else int(self.limit * MICROS)

    def charge_micros(self) -> int | None:
        """The charge limit in micro-units, if any."""
        if self.limit_charge_micros is not None:
            return self.limit_charge_micros
        return None if self.limit_charge is None else int(self.limit_charge * MICROS)


class BudgetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    scope: str
    user_id: str
    key_id: str | None
    period: str
    limit_micros: int | None
    limit_tokens: int | None
    limit_charge_micros: int | None = None
    alert_percents: list[int] | None = None


class PlanCreate(BaseModel):
    """A price plan: a multiplier on cost (exact decimal, e.g. "1.25"; 1 is at cost), and
    optionally prices of its own (`POST /admin/v1/prices` with its `plan_id`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
    multiplier: Money = Decimal(1)

    def multiplier_ppm(self) -> int:
        """The multiplier in parts per million."""
        return int(self.multiplier * MICROS)


class PlanPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    multiplier_ppm: int
    created_at: datetime


class UserPlanSet(BaseModel):
    """The plan a user is charged by; null: at cost."""

    model_config = ConfigDict(extra="forbid", strict=True)

    plan_id: PlanId | None
