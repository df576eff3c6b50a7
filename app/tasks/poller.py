"""The poller: refreshes open tasks nobody polls, so every task settles even if never retrieved.

Each cycle first observes every open task through the upstream list (`app.tasks.observe`: one
call shows up to 150 tasks, so all are fresh within a cycle or two). It then claims the open
tasks still due, the ones the list could not answer for (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, and a lease: the claim pushes `next_check_at` forward, so replicas never work on the
same task at once), and refreshes them under the upstream query budget. The budget is the
account's, not a process's: on PostgreSQL one replica at a time runs a cycle (an advisory lock),
so N replicas never poll at N times the rate; the others take over when it stops. Tasks whose
create outcome is unknown are reconciled against the upstream list; tasks open long past their
expiry are expired. Client callbacks that are due go out during the cycle, and those it queued
at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.alerts import deliver_alerts
from app.db import exclusive_turn, utcnow
from app.errors import new_request_id
from app.metrics import Metrics
from app.pacing import Pacers
from app.tasks.callbacks import deliver_due
from app.tasks.models import OPEN_STATUSES, Task, TaskEvent, TaskStatus
from app.tasks.observe import observe_open_tasks
from app.tasks.reconcile import reconcile_unknowns
from app.tasks.render import OutputLinks
from app.tasks.reread import reread_settled
from app.tasks.states import apply_snapshot, next_check_at, refresh_task, transition
from app.upstream.accounts import DEFAULT_ACCOUNT
from app.upstream.pool import ListSlot, UpstreamPool

logger = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock that lets one replica's poller cycle run at a time.
POLLER_TURN_LOCK = 0x5365_6570  # "Seep"

# The upstream expires tasks itself; this much later, a task it no longer reports is expired here.
EXPIRY_GRACE = timedelta(minutes=10)


@dataclass
class PollerConfig:
    """How often and how fast the poller works."""

    interval_seconds: float = 5.0
    batch_size: int = 100
    lease_seconds: float = 60.0
    upstream_qps: float = 10.0
    concurrency: int = 8
    # Succeeded tasks are read once more this long after settling (None: never).
    reread_after_seconds: float | None = None


@dataclass
class Poller:
    """Claims due open tasks and refreshes them; run one per process (or as `worker`)."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    upstream: UpstreamPool
    callbacks: httpx.AsyncClient
    config: PollerConfig
    # The gateway's output links for callback payloads (the archive on), else None.
    links: OutputLinks | None = None
    metrics: Metrics | None = None
    alert_webhook_url: str | None = None
    # Sends creates waiting in the gateway's queue (`app.tasks.queue`), when it is on.
    dispatch: Callable[[], Awaitable[int]] | None = None
    # Each account's retrieves and list calls, at that account's own rates.
    pacers: Pacers = field(init=False)
    list_pacers: Pacers = field(init=False)
    # Set when the process is stopping: claimed tasks not yet refreshed are left, their leases
    # given back at once so another replica's poller takes them without waiting out the lease.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    leased: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pacers = Pacers(
            lambda account: self.upstream.poll_rate(account, self.config.upstream_qps)
        )
        self.list_pacers = Pacers(self.upstream.list_rate)

    async def pace(self, account_id: str | None) -> None:
        """Wait for a retrieve slot on the account."""
        await self.pacers.wait(account_id or DEFAULT_ACCOUNT)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until `stop` is set; a failed cycle is logged and the next one runs."""
        logger.info(
            "poller started: every %.1fs, %.1f upstream calls/s",
            self.config.interval_seconds,
            self.config.upstream_qps,
        )
        loop = asyncio.get_running_loop()
        self.stopping = stop
        try:
            while not stop.is_set():
                started = loop.time()
                try:
                    await self.run_once()
                except Exception:
                    logger.exception("poller cycle failed")
                # Cycles start an interval apart (a cycle that took longer is followed at once).
                pause = self.config.interval_seconds - (loop.time() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(pause, 0.01))
        finally:
            await asyncio.shield(self._give_back_leases())

    async def _give_back_leases(self) -> None:
        """Claimed tasks this poller did not get to: due again now, for another replica."""
        if not self.leased:
            return
        task_ids, self.leased = list(self.leased), set()
        try:
            async with self.sessionmaker() as session:
                await session.exec(
                    update(Task)
                    .where(col(Task.id).in_(task_ids), col(Task.status).in_(OPEN_STATUSES))
                    .where(col(Task.next_check_at) > utcnow())
                    .values(next_check_at=utcnow())
                )
                await session.commit()
            logger.info("poller stopping: gave back %d leases", len(task_ids))
        except Exception:
            logger.exception("poller stopping: giving back %d leases failed", len(task_ids))

    async def run_once(self) -> int:
        """One cycle, if no other replica is in one: returns how many tasks were checked (shown
        by the list or claimed for a retrieve)."""
        async with exclusive_turn(self.engine, POLLER_TURN_LOCK) as turn:
            if not turn.held:
                return 0
            # The last holder may have died just after a list call, before its gap ran out.
            self.list_pacers.hold_off(await turn.seconds_until_free())

            @contextlib.asynccontextmanager
            async def list_slot(account_id: str | None) -> AsyncIterator[None]:
                account = account_id or DEFAULT_ACCOUNT
                gap = 1.0 / self.upstream.list_rate(account)
                async with self.list_pacers.call(account):
                    # Booked as the call goes out, and again once its answer is in: a holder that
                    # dies mid-call has booked a gap all the same.
                    await turn.book(gap)
                    try:
                        yield
                    finally:
                        await turn.book(gap)

            started = time.monotonic()
            checked = await self._cycle(list_slot)
            if self.metrics is not None:
                self.metrics.poller_cycle.observe(time.monotonic() - started)
            # Keep the turn until the budget's next slot, so the next replica cannot burst.
            await asyncio.gather(self.pacers.drain(), self.list_pacers.drain())
            return checked

    async def _cycle(self, list_slot: ListSlot) -> int:
        observed = await self._observe(list_slot)
        task_ids = await self._claim()
        slots = asyncio.Semaphore(self.config.concurrency)

        async def look_at(task_id: str) -> Task | str | None:
            async with slots:
                return await self._look_at(task_id)

        looked_at = await asyncio.gather(*(look_at(task_id) for task_id in task_ids))
        unknown = [task for task in looked_at if isinstance(task, Task)]
        to_refresh = [task_id for task_id in looked_at if isinstance(task_id, str)]

        async def refresh(task_id: str) -> None:
            async with slots:
                if self.stopping.is_set():
                    return  # its lease is given back when the poller stops
                try:
                    await self._refresh(task_id)
                except Exception:
                    logger.exception("poller: checking task %s failed", task_id)
                self.leased.discard(task_id)  # stopping mid-cycle, this one need not be given back

        # Retrieves, the list scan for unknown creates and the callbacks due each have their own
        # budget: they run side by side, so none waits for another. Then the callbacks that this
        # cycle's changes queued.
        await asyncio.gather(
            *(refresh(task_id) for task_id in to_refresh),
            self._reconcile(unknown, list_slot),
            self._deliver_callbacks(),
            self._deliver_alerts(),
            self._reread(),
            self._probe_accounts(list_slot),
            self._dispatch(),
        )
        await self._deliver_callbacks()
        if not self.stopping.is_set():
            self.leased.clear()  # every claimed task was looked at
        return observed + len(task_ids)

    async def _dispatch(self) -> None:
        if self.dispatch is None:
            return
        try:
            await self.dispatch()
        except Exception:
            logger.exception("poller: sending the queued creates failed")

    async def _probe_accounts(self, list_slot: ListSlot) -> None:
        """A cheap list call to each account out of rotation: back in once it answers."""
        await self.upstream.refresh()
        for account in self.upstream.known():
            if account.row.healthy:
                continue
            try:
                async with list_slot(account.id):
                    await account.client.list_tasks([("page_size", 1)], request_id=new_request_id())
            except Exception as exc:
                logger.info("account %s still out of rotation: %s", account.id, type(exc).__name__)
                continue
            await self.upstream.set_health(account.id, healthy=True, detail="answered a probe")

    async def _reread(self) -> None:
        if self.config.reread_after_seconds is None:
            return
        try:
            await reread_settled(
                self.sessionmaker,
                upstream=self.upstream,
                pace=self.pace,
                after=timedelta(seconds=self.config.reread_after_seconds),
                batch=self.config.batch_size,
            )
        except Exception:
            logger.exception("poller: re-reading settled tasks failed")

    async def _deliver_alerts(self) -> None:
        if self.alert_webhook_url is None:
            return
        try:
            await deliver_alerts(
                sessionmaker=self.sessionmaker, http=self.callbacks, url=self.alert_webhook_url
            )
        except Exception:
            logger.exception("poller: delivering alerts failed")

    async def _deliver_callbacks(self) -> None:
        await deliver_due(
            sessionmaker=self.sessionmaker,
            http=self.callbacks,
            links=self.links,
            counter=self.metrics.callbacks if self.metrics is not None else None,
        )

    async def _observe(self, list_slot: ListSlot) -> int:
        try:
            return await observe_open_tasks(
                self.sessionmaker, upstream=self.upstream, list_slot=list_slot
            )
        except Exception:
            logger.exception("poller: observing the open tasks failed")
            return 0

    async def _reconcile(self, unknown: list[Task], list_slot: ListSlot) -> None:
        if not unknown:
            return
        try:
            await reconcile_unknowns(
                self.sessionmaker, upstream=self.upstream, tasks=unknown, list_slot=list_slot
            )
        except Exception:
            logger.exception("poller: reconciling %d unknown creates failed", len(unknown))

    async def _claim(self) -> list[str]:
        now = utcnow()
        async with self.sessionmaker() as session:
            due = await session.exec(
                select(Task.id, Task.next_check_at)
                .where(col(Task.status).in_(OPEN_STATUSES), col(Task.next_check_at) <= now)
                .order_by(col(Task.next_check_at))
                .limit(self.config.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list(due.all())
            task_ids = [task_id for task_id, _ in rows]
            if self.metrics is not None:  # how overdue the most overdue task is
                oldest = rows[0][1] if rows and rows[0][1] is not None else now
                self.metrics.poller_lag.set((now - oldest).total_seconds())
            if task_ids:
                self.leased.update(task_ids)
                lease = now + timedelta(seconds=self.config.lease_seconds)
                await session.exec(
                    update(Task).where(col(Task.id).in_(task_ids)).values(next_check_at=lease)
                )
            await session.commit()
        return task_ids

    async def _look_at(self, task_id: str) -> Task | str | None:
        """A claimed task: itself if its create's outcome is unknown (to reconcile), its id if
        it is to be refreshed, None if it is no longer open."""
        try:
            async with self.sessionmaker() as session:
                task = await session.get(Task, task_id)
                if task is None or task.status not in OPEN_STATUSES:
                    return None
                if task.status == TaskStatus.SUBMITTING:
                    # Its process died between recording and sending: the outcome is unknown.
                    await transition(session, task=task, to_status=TaskStatus.UNKNOWN, values={})
                    await session.commit()
                    await session.refresh(task)
                return task if task.create_in_doubt else task_id
        except Exception:
            logger.exception("poller: looking at task %s failed", task_id)
            return None

    async def _refresh(self, task_id: str) -> None:
        outcome = await refresh_task(
            sessionmaker=self.sessionmaker,
            upstream=self.upstream,
            task_id=task_id,
            request_id=new_request_id(),
            pace=self.pace,
        )
        if outcome in ("failed", "missing"):
            await self._after_failed_refresh(task_id, missing=outcome == "missing")

    async def _after_failed_refresh(self, task_id: str, *, missing: bool) -> None:
        async with self.sessionmaker() as session:
            task = await session.get(Task, task_id)
            if task is None or task.status not in OPEN_STATUSES:
                return
            now = utcnow()
            expires = task.created_at + timedelta(seconds=task.execution_expires_after)
            if missing and now > expires + EXPIRY_GRACE:
                expired = {
                    **(task.snapshot or {}),
                    "id": task.upstream_id,
                    "model": task.model,
                    "status": TaskStatus.EXPIRED,
                }
                await apply_snapshot(session, task=task, snapshot=expired)
                logger.warning("task %s: gone upstream past its expiry; expired", task.id)
                return
            failures = task.check_failures + 1
            await session.exec(
                update(Task)
                .where(col(Task.id) == task.id)
                .values(
                    check_failures=failures, next_check_at=next_check_at(now, failures=failures)
                )
            )
            detail = "not found upstream" if missing else f"failure {failures} in a row"
            session.add(TaskEvent(task_id=task.id, kind="refresh_failed", detail=detail))
            await session.commit()
