"""Key SQL of the request hot path: the key (with its user) that authenticates a request, by
its hash or by its id, as a Core statement built once and run on the direct statements (one
round trip, no ORM objects)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, or_, select

from app.db_direct import DirectStatements
from app.keys.models import ApiKey, User

_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
_USERS = User.__table__  # type: ignore[attr-defined]


class KeyRow(NamedTuple):
    """What deciding on a key needs of it and of its user."""

    id: str
    user_id: str
    key_hash: str
    prefix: str
    previous_prefix: str | None
    previous_valid_until: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    allowed_networks: list[str] | None
    create_rate_limit: str | None
    read_rate_limit: str | None
    max_tasks_in_flight: int | None
    user_disabled: bool
    allowed_models: list[str] | None
    user_create_rate_limit: str | None
    user_read_rate_limit: str | None
    user_max_tasks_in_flight: int | None
    plan_id: int | None
    self_service_keys: bool


_KEY_WITH_USER = select(
    _KEYS.c.id,
    _KEYS.c.user_id,
    _KEYS.c.key_hash,
    _KEYS.c.prefix,
    _KEYS.c.previous_prefix,
    _KEYS.c.previous_valid_until,
    _KEYS.c.expires_at,
    _KEYS.c.revoked_at,
    _KEYS.c.allowed_networks,
    _KEYS.c.create_rate_limit,
    _KEYS.c.read_rate_limit,
    _KEYS.c.max_tasks_in_flight,
    _USERS.c.disabled,
    _USERS.c.allowed_models,
    _USERS.c.create_rate_limit,
    _USERS.c.read_rate_limit,
    _USERS.c.max_tasks_in_flight,
    _USERS.c.plan_id,
    _USERS.c.self_service_keys,
).join_from(_KEYS, _USERS, _USERS.c.id == _KEYS.c.user_id)
# A rotated key's former hash finds it too, until its grace ends (the caller checks when).
_BY_HASH = _KEY_WITH_USER.where(
    or_(_KEYS.c.key_hash == bindparam("key_hash"), _KEYS.c.previous_hash == bindparam("key_hash"))
)
_BY_ID = _KEY_WITH_USER.where(_KEYS.c.id == bindparam("key_id"))


async def key_by_hash(statements: DirectStatements, *, key_hash: str) -> KeyRow | None:
    """The key whose hash, or former hash, is `key_hash`, with its user; or None."""
    row = await statements.first(_BY_HASH, {"key_hash": key_hash})
    return None if row is None else KeyRow(*row)


async def key_by_id(statements: DirectStatements, *, key_id: str) -> KeyRow | None:
    """The key `key_id`, with its user; or None."""
    row = await statements.first(_BY_ID, {"key_id": key_id})
    return None if row is None else KeyRow(*row)
