"""Admin API shapes: what is accepted and what is shown (never a key's hash)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from app.limits.rates import parse_rate

# Names and ids are printable text: no control characters (PostgreSQL refuses NUL outright).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
ModelIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]],
    Field(max_length=200),
]


def _valid_rate(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_rate(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '60/minute'") from None
    return value


# The published pattern is the documented form ("60/minute", "10/second;500/hour"); the
# limiter's parser then decides.
_ONE_RATE = r"(0|[1-9][0-9]{0,8})/([1-9][0-9]{0,3} )?(second|minute|hour|day)s?"
Rate = Annotated[
    str, Field(max_length=64, pattern=f"^{_ONE_RATE}(;{_ONE_RATE})*$"), AfterValidator(_valid_rate)
]


def whole(value: object) -> object:
    """JSON Schema's integer includes 5.0; strict models would refuse it, so it becomes 5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 datetime with a zone, e.g. 2026-12-01T00:00:00Z")
    return value


InFlight = Annotated[int, Field(ge=0, le=100_000), BeforeValidator(whole)]


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an address or a CIDR range") from None


# Addresses or CIDR ranges a key may be used from.
Networks = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_network)]],
    Field(min_length=1, max_length=100),
]


# A zoned ISO 8601 text (strict models take no text for datetimes, and no numbers here).
def _in_utc_range(moment: datetime) -> datetime:
    """A moment is stored in UTC: one that falls outside the years 1-9999 there is refused."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the datetime falls outside the years 1-9999 in UTC") from None


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_text_only),
    AfterValidator(_in_utc_range),
    Field(strict=False),
]


class LimitOverrides(BaseModel):
    """Per-user or per-key overrides of the gateway's limits; null restores the default."""

    # Strict: a JSON value of the wrong type is refused, not coerced ("5" is not 5).
    model_config = ConfigDict(extra="forbid", strict=True)

    create_rate_limit: Rate | None = None
    read_rate_limit: Rate | None = None
    max_tasks_in_flight: InFlight | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    allowed_models: ModelIds | None = None


class UserUpdate(LimitOverrides):
    name: Name | None = None
    disabled: bool | None = None
    allowed_models: ModelIds | None = None
    # Whether its keys may manage its keys (`/gateway/v1/keys`), and how many valid ones it
    # may then hold (null: no maximum).
    self_service_keys: bool | None = None
    max_keys: Annotated[int, Field(ge=0, le=10_000), BeforeValidator(whole)] | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    allowed_models: list[str] | None
    disabled: bool
    create_rate_limit: str | None
    read_rate_limit: str | None
    max_tasks_in_flight: int | None
    self_service_keys: bool
    max_keys: int | None
    created_at: datetime
    updated_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(max_length=200, pattern=PRINTABLE)] = ""
    expires_at: Instant | None = None
    allowed_networks: Networks | None = None


class KeyUpdate(LimitOverrides):
    name: Annotated[str, Field(max_length=200, pattern=PRINTABLE)] | None = None
    # Null: never expires; null networks: usable from anywhere.
    expires_at: Instant | None = None
    allowed_networks: Networks | None = None


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # How long the former secret keeps working (0: it stops now); at most 30 days.
    grace_seconds: Annotated[int, Field(ge=0, le=30 * 86_400), BeforeValidator(whole)] = 0


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    create_rate_limit: str | None
    read_rate_limit: str | None
    max_tasks_in_flight: int | None
    allowed_networks: list[str] | None
    # After a rotation: the former key's prefix, and until when it works.
    previous_prefix: str | None
    previous_valid_until: datetime | None


class KeyCreated(KeyPublic):
    """Returned once, at creation or rotation: the only time the plaintext key is shown."""

    key: str

    @classmethod
    def shown_once(cls, row: object, plaintext: str) -> KeyCreated:
        """The key's public fields and, this once, its plaintext."""
        return cls.model_validate({**KeyPublic.model_validate(row).model_dump(), "key": plaintext})
