"""Users and gateway keys: create, list, update, revoke, and authenticate a presented key."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.db_direct import DirectStatements
from app.errors import AuthenticationFailed, Conflict, InvalidParameter, NotFound
from app.ids import new_secret_key
from app.keys import repository
from app.keys.models import ApiKey, User
from app.keys.repository import KeyRow
from app.keys.tokens import BrowserToken
from app.limits.clients import Network, parse_networks
from app.ttl_cache import TtlCache

PREFIX_CHARS = 12


def hash_key(plaintext: str) -> str:
    """SHA-256 of a key: keys are 256-bit random, so a fast hash is safe and indexable."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the key and its user, as the request pipeline needs them."""

    key_id: str
    user_id: str
    allowed_models: list[str] | None
    key_prefix: str = ""  # what logs show of the key (its first characters, never enough to use)
    # Limit overrides (None: the gateway default); a key's own beats its user's.
    create_rate_limit: str | None = None
    read_rate_limit: str | None = None
    key_max_in_flight: int | None = None
    user_max_in_flight: int | None = None
    # A browser token acting for the key: it sees only the tasks made with it, and may make
    # at most `token_max_tasks` of them.
    token_id: str | None = None
    token_max_tasks: int | None = None
    plan_id: int | None = None  # the user's price plan (what it is charged)
    # Where the key may be used from (None: anywhere); a browser token acting for it is not
    # bound (browsers are wherever their users are).
    allowed_networks: tuple[Network, ...] | None = None
    self_service_keys: bool = False  # whether it may manage its user's keys

    def for_token(self, token: BrowserToken) -> AuthContext:
        """This key's context as narrowed by one of its browser tokens."""
        models = self.allowed_models
        if token.models is not None:
            models = [m for m in token.models if models is None or m in models]
        return replace(
            self, allowed_models=models, token_id=token.token_id, token_max_tasks=token.max_tasks
        )


@dataclass
class AuthCache:
    """A short-lived in-process cache of key lookups; its TTL (≤1 s) bounds revocation delay.

    It also remembers when this process last recorded each key's use, so a busy key costs one
    `last_used_at` write per resolution window rather than a database round trip per request.
    """

    ttl_seconds: float
    max_entries: int = 10_000
    _entries: TtlCache[AuthContext] = field(init=False)
    _touched: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._entries = TtlCache(self.ttl_seconds, self.max_entries)

    def get(self, key_hash: str) -> AuthContext | None:
        """The cached context, if still fresh."""
        return self._entries.get(key_hash)

    def put(self, key_hash: str, context: AuthContext) -> None:
        """Remember a successful lookup for `ttl_seconds`."""
        self._entries.put(key_hash, context)

    def get_by_id(self, key_id: str) -> AuthContext | None:
        """A key's cached context by its id (what browser tokens name), if still fresh."""
        return self._entries.get(f"id:{key_id}")

    def put_by_id(self, key_id: str, context: AuthContext) -> None:
        """Remember a key looked up by its id for `ttl_seconds`."""
        self._entries.put(f"id:{key_id}", context)

    def claim_touch(self, key_id: str, *, resolution: float) -> bool:
        """True (and noted) if this process has not recorded `key_id`'s use in `resolution` s."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -resolution - 1) < resolution:
            return False
        if len(self._touched) >= self.max_entries:
            self._touched.clear()
        self._touched[key_id] = now
        return True


async def create_user(
    session: AsyncSession, *, name: str, allowed_models: list[str] | None = None
) -> User:
    """Create a user; 409 if the name is taken."""
    user = User(name=name, allowed_models=allowed_models)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A user named {name!r} already exists.", code="UserAlreadyExists") from None
    return user


async def list_users(session: AsyncSession) -> list[User]:
    """All users, oldest first."""
    result = await session.exec(select(User).order_by(col(User.created_at), col(User.id)))
    return list(result.all())


async def get_user(session: AsyncSession, *, user_id: str) -> User:
    """One user, or 404."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"The user {user_id} does not exist.", param="user_id")
    return user


async def update_user(session: AsyncSession, *, user_id: str, changes: dict[str, object]) -> User:
    """Apply the given field changes (name, disabled, allowed_models) to a user."""
    user = await get_user(session, user_id=user_id)
    for name, value in changes.items():
        setattr(user, name, value)
    user.updated_at = utcnow()
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("A user with that name already exists.", code="UserAlreadyExists") from None
    return user


async def create_key(
    session: AsyncSession,
    *,
    user_id: str,
    name: str = "",
    expires_at: datetime | None = None,
    allowed_networks: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key for a user; returns the row and the plaintext, which is never stored."""
    await get_user(session, user_id=user_id)
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidParameter("expires_at", "must be in the future")
    plaintext = new_secret_key()
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=plaintext[:PREFIX_CHARS],
        key_hash=hash_key(plaintext),
        expires_at=expires_at,
        allowed_networks=allowed_networks,
    )
    session.add(key)
    await session.commit()
    return key, plaintext


async def list_keys(session: AsyncSession, *, user_id: str) -> list[ApiKey]:
    """A user's keys, oldest first (hashes are for the caller to leave out)."""
    await get_user(session, user_id=user_id)
    result = await session.exec(
        select(ApiKey).where(ApiKey.user_id == user_id).order_by(col(ApiKey.created_at))
    )
    return list(result.all())


async def update_key(session: AsyncSession, *, key_id: str, changes: dict[str, object]) -> ApiKey:
    """Apply the given field changes (name, limit overrides) to a key."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"The key {key_id} does not exist.", param="key_id")
    for name, value in changes.items():
        setattr(key, name, value)
    session.add(key)
    await session.commit()
    return key


async def revoke_key(session: AsyncSession, *, key_id: str) -> ApiKey:
    """Revoke a key (idempotent); every process stops accepting it within the auth cache TTL."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"The key {key_id} does not exist.", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        await session.commit()
    return key


async def authenticate(
    statements: DirectStatements, *, plaintext: str, cache: AuthCache
) -> AuthContext:
    """The caller behind a presented key, or 401 for an unknown, revoked or expired key."""
    key_hash = hash_key(plaintext)
    cached = cache.get(key_hash)
    if cached is not None:
        return cached
    row = await repository.key_by_hash(statements, key_hash=key_hash)
    context = _valid_key(row, presented=key_hash)
    cache.put(key_hash, context)
    return context


async def authenticate_token(
    statements: DirectStatements, *, token: BrowserToken, cache: AuthCache
) -> AuthContext:
    """The caller behind a verified browser token: its key's context (read at most once per
    cache TTL, so a revoked key or a disabled user stops its tokens as fast as itself), as the
    token narrows it; 401 once the key is no longer valid."""
    parent = await authenticate_by_id(statements, key_id=token.key_id, cache=cache)
    return parent.for_token(token)


async def authenticate_by_id(
    statements: DirectStatements, *, key_id: str, cache: AuthCache
) -> AuthContext:
    """A key's context by its id (what tokens and console sessions name), read at most once
    per cache TTL; 401 once the key is revoked, expired, or its user disabled."""
    context = cache.get_by_id(key_id)
    if context is None:
        context = _valid_key(await repository.key_by_id(statements, key_id=key_id))
        cache.put_by_id(key_id, context)
    return context


def _valid_key(key: KeyRow | None, *, presented: str | None = None) -> AuthContext:
    """The context of `key`, if it is valid; `presented` is the hash shown, which may be a
    rotated key's former one (valid until its grace ends)."""
    if key is None:
        raise AuthenticationFailed()
    now = utcnow()
    former = presented is not None and presented != key.key_hash
    if (
        key.revoked_at is not None
        or key.user_disabled
        or (key.expires_at and key.expires_at <= now)
        or (former and not (key.previous_valid_until and key.previous_valid_until > now))
    ):
        raise AuthenticationFailed()
    networks = key.allowed_networks
    return AuthContext(
        key_id=key.id,
        user_id=key.user_id,
        key_prefix=(key.previous_prefix or "") if former else key.prefix,
        allowed_models=key.allowed_models,
        create_rate_limit=key.create_rate_limit or key.user_create_rate_limit,
        read_rate_limit=key.read_rate_limit or key.user_read_rate_limit,
        key_max_in_flight=key.max_tasks_in_flight,
        user_max_in_flight=key.user_max_tasks_in_flight,
        plan_id=key.plan_id,
        allowed_networks=None if networks is None else tuple(parse_networks(networks)),
        self_service_keys=key.self_service_keys,
    )


async def touch_last_used(session: AsyncSession, *, key_id: str, resolution: float) -> None:
    """Record that a key served a request; at most one write per key per `resolution` seconds."""
    now = utcnow()
    stale_before = now - timedelta(seconds=resolution)
    await session.exec(
        update(ApiKey)
        .where(col(ApiKey.id) == key_id)
        .where(or_(col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) < stale_before))
        .values(last_used_at=now)
    )
    await session.commit()
