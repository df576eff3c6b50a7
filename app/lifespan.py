"""Opening and closing what a gateway process holds: used by the app's lifespan and by `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial

import httpx

from app.alerts import raise_alert
from app.coalesce import Coalescer
from app.config import Settings
from app.db import create_engine, create_sessionmaker, is_sqlite, utcnow
from app.db_direct import direct_statements
from app.keys.service import AuthCache
from app.keys.tokens import TokenSigner
from app.limits.clients import parse_networks
from app.limits.inflight import vacuum_open_changes
from app.limits.rates import RateLimiter
from app.metrics import Metrics
from app.resources import Resources
from app.storage import ObjectStore, open_store
from app.tasks.archive import Archiver, ArchiverConfig
from app.tasks.callbacks import create_callback_client
from app.tasks.poller import Poller, PollerConfig
from app.tasks.queue import dispatch_waiting
from app.tasks.service import output_links
from app.ttl_cache import TtlCache
from app.upstream.accounts import DEFAULT_ACCOUNT, KeyBox, ensure_default
from app.upstream.client import UpstreamClient, create_http_client
from app.upstream.content import create_content_client
from app.upstream.pool import OutcomeHook, UpstreamPool

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    callback_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Resources]:
    """Engine, upstream client and caches for one process; closed on exit."""
    # On PostgreSQL the pool is split: half for the request paths' direct statements, the rest
    # for sessions, plus one that the poller holds for its turn (`exclusive_turn`).
    direct_size = 0 if is_sqlite(settings.database_url) else settings.database_pool_size // 2
    engine = create_engine(
        settings.database_url,
        pool_size=max(1, settings.database_pool_size - direct_size) + 1,
        timeout_seconds=settings.database_timeout_seconds,
    )
    http = create_http_client(
        base_url=settings.effective_upstream_base_url(),
        api_key=settings.upstream_key(),
        timeout=settings.upstream_timeout_seconds,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        max_connections=settings.upstream_max_connections,
        transport=upstream_transport,
    )
    callbacks = create_callback_client(
        timeout=settings.callback_timeout_seconds,
        allowed_networks=parse_networks(settings.callback_allowed_networks),
        transport=callback_transport,
    )
    downloads = create_content_client(
        timeout=settings.upstream_timeout_seconds,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        transport=upstream_transport,
    )
    metrics = Metrics()
    sessionmaker = create_sessionmaker(engine, info={"metrics": metrics})

    async def master_key_refused() -> None:
        async with sessionmaker() as session:
            await raise_alert(
                session,
                dedupe=f"master-key:{utcnow():%Y-%m-%dT%H}",  # at most one an hour
                kind="master_key",
                message="The upstream refused the gateway's master key (401/403): creates and "
                "refreshes fail until GATEWAY_UPSTREAM_API_KEY is fixed.",
            )
            await session.commit()

    async def account_unhealthy(account_id: str, why: str) -> None:
        if account_id == DEFAULT_ACCOUNT and why == "refused":
            await master_key_refused()  # its own alert, at most hourly
            return
        cause = "refused its master key" if why == "refused" else "keeps failing"
        async with sessionmaker() as session:
            await raise_alert(
                session,
                dedupe=f"account:{account_id}:{utcnow():%Y-%m-%dT%H:%M}",
                kind="account",
                message=f"Upstream account {account_id} {cause}: out of rotation until it "
                "answers again.",
            )
            await session.commit()

    def account_client(
        account_id: str, base_url: str, api_key: str, on_outcome: OutcomeHook
    ) -> UpstreamClient:
        http = create_http_client(
            base_url=base_url,
            api_key=api_key,
            timeout=settings.upstream_timeout_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            max_connections=settings.upstream_max_connections,
            transport=upstream_transport,
        )
        return UpstreamClient(http, metrics, on_outcome=on_outcome, account_id=account_id)

    pool = UpstreamPool(
        default=UpstreamClient(
            http, metrics, on_outcome=lambda outcome: pool.report(DEFAULT_ACCOUNT, outcome)
        ),
        sessionmaker=sessionmaker,
        make_client=account_client,
        box=KeyBox(settings.account_keys_secret_value()),
        on_unhealthy=account_unhealthy,
    )
    with contextlib.suppress(Exception):  # a database not migrated yet: the pool waits for it
        async with sessionmaker() as session:
            await ensure_default(session, base_url=settings.effective_upstream_base_url())
    limiter = RateLimiter(
        redis_url=settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        timeout_seconds=settings.redis_timeout_seconds,
    )
    autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with direct_statements(
            autocommit_engine,
            pool_size=max(1, direct_size),
            timeout_seconds=settings.database_timeout_seconds,
        ) as statements:
            yield Resources(
                settings=settings,
                engine=engine,
                autocommit_engine=autocommit_engine,
                statements=statements,
                sessionmaker=sessionmaker,
                upstream=pool,
                callbacks=callbacks,
                downloads=downloads,
                store=open_store(settings),
                auth_cache=AuthCache(settings.auth_cache_seconds),
                token_signer=TokenSigner(settings.token_signing_secrets()),
                # The same ≤ 1 s bound as keys: a deletion on another replica shows within it.
                finished_tasks=TtlCache(settings.auth_cache_seconds),
                prices=TtlCache(settings.auth_cache_seconds),
                budgets=TtlCache(settings.auth_cache_seconds),
                refreshes=Coalescer(),
                limiter=limiter,
                metrics=metrics,
                trusted_proxies=parse_networks(settings.trusted_proxies),
            )
    finally:
        await pool.close()
        await limiter.close()
        await callbacks.aclose()
        await downloads.aclose()
        await http.aclose()
        await engine.dispose()


def poller_for(resources: Resources) -> Poller:
    """The poller configured from the settings."""
    settings = resources.settings
    return Poller(
        engine=resources.engine,
        sessionmaker=resources.sessionmaker,
        upstream=resources.upstream,
        callbacks=resources.callbacks,
        config=PollerConfig(
            interval_seconds=settings.poll_interval_seconds,
            batch_size=settings.poll_batch_size,
            lease_seconds=settings.poll_lease_seconds,
            upstream_qps=settings.upstream_poll_qps,
            reread_after_seconds=settings.usage_reread_seconds,
        ),
        # No request to take an address from: GATEWAY_PUBLIC_BASE_URL, else links are relative.
        links=output_links(resources, base_url=""),
        metrics=resources.metrics,
        alert_webhook_url=settings.alert_webhook_url,
        dispatch=partial(dispatch_waiting, resources) if settings.create_queue_size else None,
    )


def archiver_for(resources: Resources, store: ObjectStore) -> Archiver:
    """The archiver configured from the settings."""
    settings = resources.settings
    return Archiver(
        sessionmaker=resources.sessionmaker,
        store=store,
        downloads=resources.downloads,
        metrics=resources.metrics,
        config=ArchiverConfig(
            retention_days=settings.archive_retention_days,
            max_attempts=settings.archive_max_attempts,
        ),
    )


@contextlib.asynccontextmanager
async def running_background(resources: Resources) -> AsyncIterator[None]:
    """Run the process's background work for the duration of the block: the poller, and the
    archiver when the archive is on (if the poller is enabled); on PostgreSQL, the vacuum of the
    open-count notes always (every process that creates folds them)."""
    stop = asyncio.Event()
    tasks = []
    if not is_sqlite(resources.settings.database_url):
        vacuum = vacuum_open_changes(resources.autocommit_engine, stop)
        tasks.append(asyncio.create_task(vacuum, name="open-count vacuum"))
    if resources.settings.poller_enabled:
        tasks.append(asyncio.create_task(poller_for(resources).run(stop), name="poller"))
        if resources.store is not None:
            archiver = archiver_for(resources, resources.store)
            tasks.append(asyncio.create_task(archiver.run(stop), name="archiver"))
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except TimeoutError:
                logger.warning("%s did not stop in time; cancelled", task.get_name())
