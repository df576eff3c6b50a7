"""The current state a metrics scrape reads: open tasks, open reservations, the limiter."""

from __future__ import annotations

from app.metrics import LiveReadings
from app.resources import Resources
from app.tasks import repository
from app.usage.ledger import open_reservations


async def live_readings(resources: Resources) -> LiveReadings:
    """Open tasks by state and reservations not yet settled (indexed, bounded by the open
    tasks), and whether limits run in process because Redis is unreachable."""
    engine = resources.autocommit_engine
    by_status = await repository.open_counts(engine)
    reserved = await open_reservations(engine)
    fallback = resources.limiter.backend == "memory (redis unavailable)"
    return {
        "sgw_tasks_open": {(status,): float(count) for status, count in by_status.items()},
        "sgw_open_reservations_micros": {
            (currency,): float(micros) for currency, (micros, _) in reserved.items()
        },
        "sgw_open_reservations": {(): float(sum(n for _, n in reserved.values()))},
        "sgw_redis_fallback": {(): 1.0 if fallback else 0.0},
    }
