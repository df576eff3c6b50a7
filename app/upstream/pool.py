"""The pool of upstream accounts: one client per account, the choice of account for a create,
and each account's health.

Routing: a create goes to an account that serves its model, is active and healthy, and has room
under its queued maximum, the one with the fewest open tasks per unit of weight first (then the
least full, then by id). Every later call for a task goes to the account that created it.
Accounts are read from the database at most once a `refresh_seconds`, so an account added,
drained, rotated or taken out of rotation on one replica is seen by all within that time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.upstream.accounts import (
    DEFAULT_ACCOUNT,
    AccountState,
    KeyBox,
    UpstreamAccount,
    list_accounts,
)
from app.upstream.client import UpstreamClient

logger = logging.getLogger(__name__)

# Builds the client of an account from its base URL and master key, with the hook it calls when
# the upstream refuses that key.
ClientMaker = Callable[[str, str, Callable[[], Awaitable[None]]], UpstreamClient]


@dataclass
class PoolAccount:
    """An account as the pool routes to it."""

    row: UpstreamAccount
    client: UpstreamClient
    fingerprint: tuple[str, str | None]  # base URL and key ciphertext the client was made with

    @property
    def id(self) -> str:
        """The account's id."""
        return self.row.id

    def takes_creates(self, model: str) -> bool:
        """Active, healthy, and serving the model."""
        row = self.row
        return row.state == AccountState.ACTIVE and row.healthy and row.serves(model)


@dataclass
class UpstreamPool:
    """Every account's client, refreshed from the database."""

    default: UpstreamClient
    sessionmaker: async_sessionmaker[AsyncSession]
    make_client: ClientMaker
    box: KeyBox
    on_refused: Callable[[str], Awaitable[None]]  # told the account whose key was refused
    refresh_seconds: float = 1.0
    accounts: dict[str, PoolAccount] = field(default_factory=dict)
    _loaded_at: float = -1e9
    _made: list[UpstreamClient] = field(default_factory=list)

    async def refresh(self, *, force: bool = False) -> None:
        """Read the accounts again if the last read is older than `refresh_seconds`."""
        now = time.monotonic()
        if not force and now - self._loaded_at < self.refresh_seconds:
            return
        self._loaded_at = now
        async with self.sessionmaker() as session:
            rows = await list_accounts(session)
        routed = {}
        for row in rows:
            try:
                routed[row.id] = self._routed(row)
            except Exception:  # one unusable account must not stop the others
                logger.exception("upstream account %s cannot be used", row.id)
        self.accounts = routed

    def _routed(self, row: UpstreamAccount) -> PoolAccount:
        fingerprint = (row.base_url, row.key_ciphertext)
        known = self.accounts.get(row.id)
        if known is not None and known.fingerprint == fingerprint:
            known.row = row
            return known
        client = self.default if row.id == DEFAULT_ACCOUNT else self._client_for(row)
        return PoolAccount(row, client, fingerprint)

    def _client_for(self, row: UpstreamAccount) -> UpstreamClient:
        key = self.box.open(row.key_ciphertext) if row.key_ciphertext else None
        if key is None:
            logger.error("account %s: its master key cannot be decrypted", row.id)
            key = ""  # the upstream refuses it: the account leaves rotation

        async def refused() -> None:
            await self.on_refused(row.id)

        client = self.make_client(row.base_url, key, refused)
        self._made.append(client)
        return client

    async def client(self, account_id: str | None) -> UpstreamClient:
        """The client of the account a task was created on (None: the default)."""
        if account_id is None or account_id == DEFAULT_ACCOUNT:
            return self.default
        if account_id not in self.accounts:
            await self.refresh(force=True)
        found = self.accounts.get(account_id)
        if found is None:  # deleted from the database: its tasks cannot be reached elsewhere
            raise LookupError(f"unknown upstream account {account_id}")
        return found.client

    async def routes(
        self, model: str, open_tasks: Callable[[], Awaitable[dict[str, int]]]
    ) -> list[PoolAccount]:
        """The accounts a create for `model` may go to, best first. `open_tasks` counts each
        account's open tasks; it is asked only when there is a choice to make. When no healthy
        account serves the model, the unhealthy ones that do are tried (the create is their
        probe): no create is refused that an account might serve."""
        await self.refresh()
        if not self.accounts:  # the settings' account, before its row exists
            row = UpstreamAccount(id=DEFAULT_ACCOUNT, base_url="")
            return [PoolAccount(row, self.default, ("", None))]
        usable = [a for a in self.accounts.values() if a.takes_creates(model)]
        if not usable:
            return [
                a
                for a in self.accounts.values()
                if a.row.state == AccountState.ACTIVE and a.row.serves(model)
            ]
        if len(usable) == 1:
            return usable
        counts = await open_tasks()

        def order(account: PoolAccount) -> tuple[float, float, str]:
            used = counts.get(account.id, 0)
            return used / account.row.weight, used / account.row.max_queued, account.id

        return sorted(
            (a for a in usable if a.row.weight > 0 and counts.get(a.id, 0) < a.row.max_queued),
            key=order,
        )

    async def pinned(self, account_id: str | None) -> list[PoolAccount]:
        """The one route of a create that must go where another task lives (a draft's final
        render: the draft exists on its account only)."""
        client = await self.client(account_id)
        found = self.accounts.get(account_id or DEFAULT_ACCOUNT)
        if found is not None:
            return [found]
        return [PoolAccount(UpstreamAccount(id=DEFAULT_ACCOUNT, base_url=""), client, ("", None))]

    def upstream_model(self, account_id: str | None, model: str) -> str:
        """An account's own name for a gateway model id."""
        found = self.accounts.get(account_id or DEFAULT_ACCOUNT)
        return found.row.upstream_model(model) if found is not None else model

    def known(self) -> list[PoolAccount]:
        """Every account, as last read."""
        return list(self.accounts.values())

    async def set_health(self, account_id: str, *, healthy: bool, detail: str | None) -> bool:
        """Take an account out of rotation or put it back, for every replica; True if this
        changed it."""
        async with self.sessionmaker() as session:
            result = await session.exec(
                update(UpstreamAccount)
                .where(col(UpstreamAccount.id) == account_id)
                .where(col(UpstreamAccount.healthy) != healthy)
                .values(healthy=healthy, health_detail=detail, health_changed_at=utcnow())
            )
            await session.commit()
        changed = bool(result.rowcount)
        if account_id in self.accounts:
            self.accounts[account_id].row.healthy = healthy
        if changed:
            moved = "back in rotation" if healthy else "out of rotation"
            log = logger.info if healthy else logger.error
            log("upstream account %s %s: %s", account_id, moved, detail or "-")
        return changed

    async def close(self) -> None:
        """Close the clients the pool made (the default one belongs to the lifespan)."""
        for client in self._made:
            await client.aclose()
