"""Upstream accounts: where creates may go, with their own base URL, master key and limits.

The account of the `GATEWAY_UPSTREAM_*` settings is `default`; its key stays in the settings
and is never stored. Accounts added through the admin API or CLI keep their master key
encrypted at rest (Fernet, under `GATEWAY_ACCOUNT_KEYS_SECRET`); it is decrypted only to build
the account's HTTP client, and never returned or logged.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import UTCDateTime, utcnow
from app.errors import Conflict, InvalidParameter, NotFound, ServiceUnavailable

DEFAULT_ACCOUNT = "default"


class AccountState(StrEnum):
    """Whether an account takes new creates."""

    ACTIVE = "active"
    DRAINING = "draining"  # no new creates; its tasks finish on it
    DISABLED = "disabled"  # no new creates (its tasks are still refreshed on it)


class UpstreamAccount(SQLModel, table=True):
    """One upstream account the pool forwards through."""

    __tablename__ = "upstream_accounts"

    id: str = Field(primary_key=True, max_length=32)
    base_url: str = Field(max_length=512)
    # The master key, Fernet-encrypted; None for `default` (its key is in the settings).
    key_ciphertext: str | None = Field(default=None, max_length=1024)
    # Gateway model id → the account's own name for it; None: every model, under its own id.
    models: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    weight: int = Field(default=1, ge=0)
    max_queued: int = Field(default=120, ge=1)  # open tasks the account allows at once
    creates_per_minute: int = Field(default=600, ge=1)
    # The account's non-inference QPS: the poller and client refreshes share them.
    retrieves_per_second: int = Field(default=20, ge=1)
    lists_per_second: int = Field(default=1, ge=1)
    # Beyond this many open tasks of one model, a new one waits upstream: another account is
    # preferred while one has room.
    running_per_model: int = Field(default=10, ge=1)
    state: str = Field(default=AccountState.ACTIVE, max_length=16)
    # Out of rotation while its key is refused or it keeps failing; probed until it recovers.
    healthy: bool = Field(default=True)
    health_detail: str | None = Field(default=None, max_length=255)
    health_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    def serves(self, model: str) -> bool:
        """Whether it takes creates for this gateway model id."""
        return self.models is None or model in self.models

    def upstream_model(self, model: str) -> str:
        """Its name for a gateway model id."""
        return model if self.models is None else self.models.get(model, model)

    def public(self) -> dict[str, Any]:
        """What admins see: everything but the key."""
        return self.model_dump(exclude={"key_ciphertext"}) | {
            "key_stored": self.key_ciphertext is not None
        }


class KeyBox:
    """Encrypts master keys for storage, under a secret from the environment."""

    def __init__(self, secret: str | None) -> None:
        self._fernet = None
        if secret:
            digest = hashlib.sha256(secret.encode()).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, key: str) -> str:
        """The key, encrypted; 503 when no secret is configured."""
        if self._fernet is None:
            raise ServiceUnavailable(
                "Set GATEWAY_ACCOUNT_KEYS_SECRET to store upstream master keys.",
                code="AccountKeysSecretMissing",
            )
        return self._fernet.encrypt(key.encode()).decode()

    def open(self, ciphertext: str) -> str | None:
        """The key, or None when it cannot be decrypted (no or another secret)."""
        if self._fernet is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            return None


async def list_accounts(session: AsyncSession) -> list[UpstreamAccount]:
    """Every account, by id."""
    return list(
        (await session.exec(select(UpstreamAccount).order_by(col(UpstreamAccount.id)))).all()
    )


async def ensure_default(session: AsyncSession, *, base_url: str) -> None:
    """The settings' account exists (its base URL kept up to date with the settings)."""
    account = await session.get(UpstreamAccount, DEFAULT_ACCOUNT)
    if account is None:
        session.add(UpstreamAccount(id=DEFAULT_ACCOUNT, base_url=base_url))
    elif account.base_url != base_url:
        account.base_url, account.updated_at = base_url, utcnow()
        session.add(account)
    await session.commit()


async def add_account(
    session: AsyncSession, *, box: KeyBox, account_id: str, api_key: str, **fields: Any
) -> UpstreamAccount:
    """A new account; 409 if the id is taken."""
    if await session.get(UpstreamAccount, account_id) is not None:
        raise Conflict(f"The account {account_id} exists.", code="AccountAlreadyExists")
    account = UpstreamAccount(id=account_id, key_ciphertext=box.seal(api_key), **fields)
    session.add(account)
    await session.commit()
    return account


async def get_account(session: AsyncSession, *, account_id: str) -> UpstreamAccount:
    """One account; 404 if unknown."""
    account = await session.get(UpstreamAccount, account_id) if len(account_id) <= 32 else None
    if account is None:
        raise NotFound(f"The account {account_id} does not exist.", param="account_id")
    return account


async def update_account(
    session: AsyncSession, *, account_id: str, changes: dict[str, Any]
) -> UpstreamAccount:
    """Change an account's state, weight, limits or models (given fields only)."""
    account = await get_account(session, account_id=account_id)
    for name, value in changes.items():
        setattr(account, name, value)
    account.updated_at = utcnow()
    session.add(account)
    await session.commit()
    return account


async def rotate_key(
    session: AsyncSession, *, box: KeyBox, account_id: str, api_key: str
) -> UpstreamAccount:
    """Replace an account's master key (every replica uses the new one within seconds); the
    settings' account changes its key in the settings instead."""
    account = await get_account(session, account_id=account_id)
    if account.id == DEFAULT_ACCOUNT:
        raise InvalidParameter(
            "account_id", "the default account's key is GATEWAY_UPSTREAM_API_KEY"
        )
    account.key_ciphertext = box.seal(api_key)
    account.healthy, account.health_detail, account.health_changed_at = True, None, utcnow()
    account.updated_at = utcnow()
    session.add(account)
    await session.commit()
    return account
