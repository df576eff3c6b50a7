"""Tables for users and their gateway keys (keys are stored only as hashes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime, utcnow
from app.ids import new_key_id, new_user_id


class User(SQLModel, table=True):
    """Someone (a person, an app, a team) who owns keys, tasks and usage."""

    __tablename__ = "users"

    id: str = Field(default_factory=new_user_id, primary_key=True, max_length=32)
    name: str = Field(max_length=200, unique=True)
    # None means every model the gateway knows; a list restricts the user to those ids.
    allowed_models: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    disabled: bool = Field(default=False)
    # Overrides of the gateway-wide limits (None: the default applies; a key's beats its user's).
    create_rate_limit: str | None = Field(default=None, max_length=64)
    read_rate_limit: str | None = Field(default=None, max_length=64)
    max_tasks_in_flight: int | None = Field(default=None, ge=0)
    # The price plan it is charged by (None: charged at cost).
    plan_id: int | None = Field(default=None, foreign_key="price_plans.id")
    # Whether its keys may list, create (up to `max_keys` valid ones) and revoke its own keys
    # through `/gateway/v1/keys`.
    self_service_keys: bool = Field(default=False)
    max_keys: int | None = Field(default=None, ge=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiKey(SQLModel, table=True):
    """A gateway key: its SHA-256 hash, a display prefix, and its lifecycle."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_key_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    name: str = Field(default="", max_length=200)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    # After a rotation: the former key's hash and prefix, valid until `previous_valid_until`.
    previous_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    previous_prefix: str | None = Field(default=None, max_length=16)
    previous_valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # CIDRs the key may be used from (None: anywhere); elsewhere it is a failed authentication.
    allowed_networks: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Overrides of the gateway-wide limits (None: the default applies; a key's beats its user's).
    create_rate_limit: str | None = Field(default=None, max_length=64)
    read_rate_limit: str | None = Field(default=None, max_length=64)
    max_tasks_in_flight: int | None = Field(default=None, ge=0)
