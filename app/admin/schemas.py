"""Admin API shapes: what is accepted and what is shown (never a key's hash)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

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


Rate = Annotated[str, Field(max_length=64), AfterValidator(_valid_rate)]
InFlight = Annotated[int, Field(ge=0, le=100_000)]


class LimitOverrides(BaseModel):
    """Per-user or per-key overrides of the gateway's limits; null restores the default."""

    create_rate_limit: Rate | None = None
    read_rate_limit: Rate | None = None
    max_tasks_in_flight: InFlight | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    allowed_models: ModelIds | None = None


class UserUpdate(LimitOverrides):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    disabled: bool | None = None
    allowed_models: ModelIds | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    allowed_models: list[str] | None
    disabled: bool
    create_rate_limit: str | None
    read_rate_limit: str | None
    max_tasks_in_flight: int | None
    created_at: datetime
    updated_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=200, pattern=PRINTABLE)] = ""
    expires_at: AwareDatetime | None = None


class KeyUpdate(LimitOverrides):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=200, pattern=PRINTABLE)] | None = None


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


class KeyCreated(KeyPublic):
    """Returned once, at creation: the only time the plaintext key is shown."""

    key: str
