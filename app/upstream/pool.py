"""The pool of upstream accounts: one client per account, the choice of account for a create,
and each account's health.

Routing: a create goes to an account that serves its model, is active and healthy, and has room
under its queued maximum. Among those, an account where the task starts at once (fewer open
tasks of the model than its `running_per_model`) comes first; then the one with the fewest open
tasks per unit of weight, then the least full, then by id. Accounts of weight 0 are standbys:
tried after all the others. Creates per minute are checked as an account is chosen
(`app.tasks.routing`). Every later call for a task goes to the account that created it.
Accounts are read from the database at most once a `refresh_seconds`, so an account added,
drained, rotated or taken out of rotation on one replica is seen by all within that time.

Call budgets: the settings' retrieve shares (`GATEWAY_UPSTREAM_REFRESH_RATE` for client
refreshes, `GATEWAY_POLLER_UPSTREAM_QPS` for the poller) are those of an account allowing the
published 20 retrieves a second; each account's are scaled by its own `retrieves_per_second`.
The poller lists an account at 0.8 of its `lists_per_second` (a margin for network jitter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from limits import parse_many
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
from app.upstream.client import Outcome, UpstreamClient

logger = logging.getLogger(__name__)

PUBLISHED_RETRIEVES_PER_SECOND = 20  # what the settings' retrieve shares are shares of
LIST_MARGIN = 0.8
# A call that fails this many times in a row (5xx, unreachable, unreadable) on one account takes
# it out of rotation; the poller's probe puts it back.
FAILURES_OUT_OF_ROTATION = 5

# Awaited before a call on an account (None: `default`), to keep to that account's rate.
AccountPace = Callable[[str | None], Awaitable[None]]

# Held around a list call on an account (None: `default`): list calls go one at a time, each a
# whole gap after the answer to the one before (a list a second leaves no room for jitter).
ListSlot = Callable[[str | None], AbstractAsyncContextManager[None]]

# Builds the client of an account from its id, base URL and master key, with the hook it tells
# each call's outcome.
OutcomeHook = Callable[[Outcome], Awaitable[None]]
ClientMaker = Callable[[str, str, str, OutcomeHook], UpstreamClient]


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

    @property
    def retrieve_share(self) -> float:
        """Its retrieves a second over the published 20 the settings' shares are of."""
        return self.row.retrieves_per_second / PUBLISHED_RETRIEVES_PER_SECOND

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
    # Told an account that just left rotation, and why: `refused` (its key) or `failing`.
    on_unhealthy: Callable[[str, str], Awaitable[None]]
    refresh_seconds: float = 1.0
    accounts: dict[str, PoolAccount] = field(default_factory=dict)
    # Calls failed in a row per account, in this process.
    failures: dict[str, int] = field(default_factory=dict)
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

        async def outcome(result: Outcome) -> None:
            await self.report(row.id, result)

        client = self.make_client(row.id, row.base_url, key, outcome)
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
        self,
        model: str,
        open_tasks: Callable[[], Awaitable[dict[tuple[str, str], int]]],
        *,
        always_count: bool = False,
    ) -> list[PoolAccount]:
        """The accounts a create for `model` may go to, best first. `open_tasks` counts open
        tasks by account and model; it is asked only when there is a choice to make, or when
        `always_count` (a lone account's queued maximum matters: the create could wait). When
        no healthy account serves the model, the unhealthy ones that do are tried (the create
        is their probe): no create is refused that an account might serve."""
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
        if len(usable) == 1 and not always_count:
            return usable  # its own 429 says when it is full
        by_model = await open_tasks()
        counts: dict[str, int] = {}
        for (account_id, _), count in by_model.items():
            counts[account_id] = counts.get(account_id, 0) + count

        def order(account: PoolAccount) -> tuple[bool, bool, float, float, str]:
            used, row = counts.get(account.id, 0), account.row
            waits = by_model.get((account.id, model), 0) >= row.running_per_model
            load = used / row.weight if row.weight else 0.0
            return row.weight == 0, waits, load, used / row.max_queued, account.id

        return sorted((a for a in usable if counts.get(a.id, 0) < a.row.max_queued), key=order)

    def serves(self, model: str) -> bool:
        """Whether an active account (healthy or not) serves the model."""
        return (
            any(
                a.row.state == AccountState.ACTIVE and a.row.serves(model)
                for a in self.accounts.values()
            )
            or not self.accounts
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

    def refresh_rate(self, account_id: str, base: str) -> str:
        """The client refreshes a second an account allows, `base` being an account of 20's."""
        found = self.accounts.get(account_id)
        if found is None or found.retrieve_share == 1:
            return base
        return ";".join(
            f"{max(1, int(item.amount * found.retrieve_share))} per {item.multiples} "
            f"{item.GRANULARITY.name}"
            for item in parse_many(base)
        )

    def poll_rate(self, account_id: str, base: float) -> float:
        """The poller's retrieves a second on an account, `base` being an account of 20's."""
        found = self.accounts.get(account_id)
        return base if found is None else base * found.retrieve_share

    def list_rate(self, account_id: str) -> float:
        """The poller's list calls a second on an account."""
        found = self.accounts.get(account_id)
        return LIST_MARGIN * (found.row.lists_per_second if found is not None else 1)

    def known(self) -> list[PoolAccount]:
        """Every account, as last read."""
        return list(self.accounts.values())

    async def report(self, account_id: str, outcome: Outcome) -> None:
        """One call's outcome on an account: a refused key takes it out of rotation at once,
        `FAILURES_OUT_OF_ROTATION` failures in a row too; any answer resets the count."""
        if outcome == "answered":
            if self.failures.get(account_id):
                self.failures[account_id] = 0
            return
        if outcome == "refused":
            detail, why = "the upstream refused its master key", "refused"
        else:
            failed = self.failures.get(account_id, 0) + 1
            self.failures[account_id] = failed % FAILURES_OUT_OF_ROTATION
            if failed < FAILURES_OUT_OF_ROTATION:
                return
            detail, why = f"{failed} calls in a row failed (5xx, unreachable, timeout)", "failing"
        changed = await self.set_health(account_id, healthy=False, detail=detail)
        # The settings' account keeps its own hourly master-key alert, raised on every refusal.
        if changed or (why == "refused" and account_id == DEFAULT_ACCOUNT):
            await self.on_unhealthy(account_id, why)

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
