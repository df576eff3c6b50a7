"""The current state a metrics scrape reads: open tasks, open reservations, the limiter."""

from __future__ import annotations

from app.metrics import LiveReadings
from app.resources import Resources
from app.tasks import repository
from app.usage.ledger import open_reservations


async def live_readings(resources: Resources) -> LiveReadings:
    """Open tasks by state and by account, reservations not yet settled (indexed, bounded by
    the open tasks), whether each account is in rotation, and whether limits run in process
    because Redis is unreachable."""
    engine = resources.autocommit_engine
    by_status = await repository.open_counts(engine)
    reserved = await open_reservations(engine)
    fallback = resources.limiter.backend == "memory (redis unavailable)"
    by_account: dict[str, int] = {}
    for (account_id, _), count in (await repository.open_tasks_by_account(engine)).items():
        by_account[account_id] = by_account.get(account_id, 0) + count
    await resources.upstream.refresh()
    accounts = resources.upstream.known()
    return {
        "sgw_tasks_open": {(status,): float(count) for status, count in by_status.items()},
        "sgw_open_reservations_micros": {
            (currency,): float(micros) for currency, (micros, _) in reserved.items()
        },
        "sgw_open_reservations": {(): float(sum(n for _, n in reserved.values()))},
        "sgw_redis_fallback": {(): 1.0 if fallback else 0.0},
        "sgw_account_open_tasks": {(a.id,): float(by_account.get(a.id, 0)) for a in accounts},
        "sgw_account_in_rotation": {
            (a.id, a.row.state): 1.0 if a.row.state == "active" and a.row.healthy else 0.0
            for a in accounts
        },
    }
