"""A key's life after it is issued: rotation with a grace period, expiry, and the keys a user
manages itself (when its admin allows it).

A rotation keeps the key's id: its limits, budgets, in-flight count, tasks and ledger stay its
own. Only the secret changes; the former one works until the grace period ends, then stops on
every process within the auth cache's TTL (1 s). Rotating again during a grace period ends the
older one at once (a key has at most one former secret).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import AccessDenied, NotFound, TooManyRequests
from app.ids import new_secret_key
from app.keys.models import ApiKey, User
from app.keys.service import PREFIX_CHARS, AuthContext, create_key, hash_key, revoke_key

MAX_GRACE = timedelta(days=30)


async def rotate_key(session: AsyncSession, *, key_id: str, grace: timedelta) -> tuple[ApiKey, str]:
    """A new secret for the key; the former one stays valid for `grace`. Returns the row and
    the new plaintext (shown once)."""
    key = await session.get(ApiKey, key_id) if len(key_id) <= 32 else None
    if key is None or key.revoked_at is not None:
        raise NotFound(f"The key {key_id} does not exist.", param="key_id")
    plaintext = new_secret_key()
    key.previous_hash, key.previous_prefix = key.key_hash, key.prefix
    key.previous_valid_until = utcnow() + min(grace, MAX_GRACE)
    key.key_hash, key.prefix = hash_key(plaintext), plaintext[:PREFIX_CHARS]
    session.add(key)
    await session.commit()
    return key, plaintext


async def expiring_keys(session: AsyncSession, *, within: timedelta) -> list[ApiKey]:
    """Keys not revoked that expire within `within` from now (soonest first), or whose former
    secret after a rotation does."""
    now = utcnow()
    horizon = now + within
    expiring = or_(
        (col(ApiKey.expires_at) > now) & (col(ApiKey.expires_at) <= horizon),
        (col(ApiKey.previous_valid_until) > now) & (col(ApiKey.previous_valid_until) <= horizon),
    )
    result = await session.exec(
        select(ApiKey)
        .where(col(ApiKey.revoked_at).is_(None), expiring)
        .order_by(func.coalesce(col(ApiKey.expires_at), col(ApiKey.previous_valid_until)))
    )
    return list(result.all())


async def own_keys(session: AsyncSession, *, auth: AuthContext) -> list[ApiKey]:
    """The caller's user's keys, when its admin lets it manage them."""
    _allowed(auth)
    result = await session.exec(
        select(ApiKey).where(ApiKey.user_id == auth.user_id).order_by(col(ApiKey.created_at))
    )
    return list(result.all())


async def create_own_key(
    session: AsyncSession,
    *,
    auth: AuthContext,
    name: str,
    expires_at: datetime | None,
    networks: list[str] | None,
) -> tuple[ApiKey, str]:
    """A new key for the caller's user, within its `max_keys` valid keys (a 429 beyond)."""
    _allowed(auth)
    user = await session.get(User, auth.user_id)
    assert user is not None  # the caller was just authenticated as this user
    # The user's row lock: two creates at once cannot both take the last place.
    await session.exec(select(User.id).where(User.id == user.id).with_for_update())
    if user.max_keys is not None and await _valid_count(session, user.id) >= user.max_keys:
        raise TooManyRequests(
            f"This user may hold {user.max_keys} valid keys; revoke one first.",
            code="QuotaExceeded.Keys",
            retry_after=60,
            retryable=False,
        )
    return await create_key(
        session, user_id=user.id, name=name, expires_at=expires_at, allowed_networks=networks
    )


async def revoke_own_key(session: AsyncSession, *, auth: AuthContext, key_id: str) -> ApiKey:
    """Revoke one of the caller's user's keys; another user's is a 404, as an unknown id."""
    _allowed(auth)
    key = await session.get(ApiKey, key_id) if len(key_id) <= 32 else None
    if key is None or key.user_id != auth.user_id:
        raise NotFound(f"The key {key_id} does not exist.", param="key_id")
    return await revoke_key(session, key_id=key.id)


def _allowed(auth: AuthContext) -> None:
    if not auth.self_service_keys:
        raise AccessDenied("This user's keys are managed by its administrator.")


async def _valid_count(session: AsyncSession, user_id: str) -> int:
    now = utcnow()
    count = await session.exec(
        select(func.count()).where(
            ApiKey.user_id == user_id,
            col(ApiKey.revoked_at).is_(None),
            or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now),
        )
    )
    return int(count.one())
