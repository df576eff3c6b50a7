"""Prometheus metrics (the official `prometheus-client`), made once per app in the lifespan.

Counters and histograms are bumped where things happen: requests in the request middleware,
upstream calls in the upstream client, ledger rows and finished tasks when their transaction
commits, poller cycles, callbacks and archive copies where they are made. What the database or
Redis knows now (tasks in each open state, open reservations, the Redis fallback) is read when
`/metrics` is scraped, by indexed queries bounded by the open tasks, never a table scan.

With `serve --workers N`, each worker writes its samples under `PROMETHEUS_MULTIPROC_DIR` (the
parent sets a fresh one) and `/metrics` adds them up, so any worker answers for all of them.
Labels carry routes, methods, statuses, error codes, models and outcomes: never a key, a token
or text a client chose.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

# What a scrape reads from the database now: {name: {labels: value}} per family.
LiveReadings = dict[str, dict[tuple[str, ...], float]]


@dataclass
class Metrics:
    """Every metric of one gateway app (its own registry, so test apps never collide)."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "sgw_requests", "Requests answered", ["route", "method", "status", "code"], registry=r
        )
        self.latency = Histogram(
            "sgw_request_duration_seconds",
            "Time to answer a request (until its last byte was sent)",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "sgw_limit_refusals", "Requests refused by a limit or budget", ["code"], registry=r
        )
        self.upstream_calls = Counter(
            "sgw_upstream_calls",
            "Calls to the upstream's task API",
            ["account", "call", "status"],
            registry=r,
        )
        self.tasks_finished = Counter(
            "sgw_tasks_finished", "Tasks that reached a final state", ["status"], registry=r
        )
        self.settled_tokens = Counter(
            "sgw_ledger_settled_tokens",
            "Tokens settled in the ledger",
            ["account", "model"],
            registry=r,
        )
        self.settled_cost = Counter(
            "sgw_ledger_settled_cost_micros",
            "Cost settled in the ledger, in micro-units of its currency",
            ["account", "currency"],
            registry=r,
        )
        self.overage_tokens = Counter(
            "sgw_ledger_overage_tokens",
            "Tokens settled beyond their task's reservation",
            ["model"],
            registry=r,
        )
        self.poller_cycle = Histogram(
            "sgw_poller_cycle_seconds",
            "Duration of a poller cycle",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.poller_lag = Gauge(
            "sgw_poller_lag_seconds",
            "How overdue the most overdue open task was at the last cycle",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.callbacks = Counter(
            "sgw_callback_deliveries", "Callback deliveries attempted", ["outcome"], registry=r
        )
        self.archive_copies = Counter(
            "sgw_archive_copies", "Archive copies attempted", ["outcome"], registry=r
        )


@dataclass(eq=False)  # registries keep collectors in a dict: hashed by identity
class LiveCollector:
    """Reads the current state when scraped (in the scraping process only)."""

    read: Callable[[], Awaitable[LiveReadings]]
    readings: LiveReadings = field(default_factory=dict)

    def collect(self) -> Iterable[Metric]:
        """The readings taken just before this scrape (see `render`)."""
        help_texts = {
            "sgw_tasks_open": ("Open tasks by state", ["status"]),
            "sgw_open_reservations_micros": ("Reserved and not yet settled", ["currency"]),
            "sgw_open_reservations": ("Tasks holding a reservation", []),
            "sgw_redis_fallback": ("1 while limits run in process (Redis unreachable)", []),
            "sgw_account_open_tasks": ("Open tasks per upstream account", ["account"]),
            "sgw_account_in_rotation": (
                "1 while an upstream account takes creates (active and healthy)",
                ["account", "state"],
            ),
        }
        for name, (text, labels) in help_texts.items():
            family = GaugeMetricFamily(name, text, labels=labels)
            for values, value in self.readings.get(name, {}).items():
                family.add_metric(list(values), value)
            yield family


async def render(metrics: Metrics, live: LiveCollector) -> bytes:
    """The exposition text: this app's metrics (all workers' when several serve) and the
    current readings."""
    live.readings = await live.read()
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    return generate_latest(registry) + generate_latest(_only(live))


def _only(collector: LiveCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
