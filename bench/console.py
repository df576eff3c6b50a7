"""Console pages with 100,000 tasks in PostgreSQL: the server time of each page, beside the
time of `/healthz` measured the same way (the baseline: what any answer costs).

Tasks, their ledger rows (reserve and settle), the daily rollup the ledger would have made and a
few hundred status events are seeded with
`generate_series` straight into a database of their own, spread over the last 60 days and 50
users; then each page is fetched 20 times by a signed-in admin and its median time reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.stack import ADMIN_TOKEN, bench_stack

TASKS = 100_000
USERS = 50
ROUNDS = 20

SEED = f"""
INSERT INTO users (id, name, allowed_models, disabled, created_at, updated_at)
SELECT 'usr_bench' || n, 'bench user ' || n, NULL, false, now(), now()
FROM generate_series(1, {USERS}) AS n;
INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at)
SELECT 'key_bench' || n, 'usr_bench' || n, 'bench', 'sgw-bench' || n, md5('k' || n), now()
FROM generate_series(1, {USERS}) AS n;
INSERT INTO tasks (id, user_id, key_id, model, service_tier, status, execution_expires_after,
    check_failures, archive, created_at, updated_at, total_tokens)
SELECT 'cgt-bench-' || n, 'usr_bench' || (n % {USERS} + 1), 'key_bench' || (n % {USERS} + 1),
    'seedance-1-0-pro-250528', 'default', 'succeeded', 172800, 0, false,
    now() - (n % 60) * interval '1 day' - (n % 997) * interval '1 second', now(), 246840
FROM generate_series(1, {TASKS}) AS n;
INSERT INTO ledger (task_id, user_id, key_id, kind, model, service_tier, tokens, total_tokens,
    cost_micros, currency, created_at)
SELECT t.id, t.user_id, t.key_id, k.kind, t.model, 'default', 246840, 246840, 617100, 'USD',
    t.created_at
FROM tasks AS t CROSS JOIN (VALUES ('reserve'), ('settle')) AS k(kind)
WHERE t.id LIKE 'cgt-bench-%';
INSERT INTO daily_spend (day, user_id, key_id, model, currency, tasks, tokens, cost_micros)
SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, key_id, model, currency,
    count(*), sum(tokens), sum(cost_micros)
FROM ledger WHERE kind = 'settle' AND task_id LIKE 'cgt-bench-%'
GROUP BY 1, user_id, key_id, model, currency;
INSERT INTO task_events (task_id, at, kind, from_status, to_status)
SELECT 'cgt-bench-' || n, now(), 'status', 'running', 'succeeded'
FROM generate_series(1, 500) AS n;
ANALYZE;
"""


async def run_console(database_url: str, workdir: Path) -> dict[str, Any]:
    """Median time of each console page (and of `/healthz`), in ms, with 100k tasks."""
    with bench_stack(database_url, workdir) as stack:  # migrated by its serve
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(SEED)
        finally:
            await connection.close()
        async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
            await client.post("/console/login", data={"credential": ADMIN_TOKEN})
            pages = {
                "healthz (baseline)": "/healthz",
                "overview": "/console",
                "costs, 30 days by model": "/console/costs",
                "costs, 30 days by user": "/console/costs?by=user",
                "costs CSV": "/console/costs.csv",
                "tasks explorer (newest 100)": "/console/tasks",
                "tasks of one user": "/console/tasks?user=usr_bench7",
                "task timeline": "/console/tasks/cgt-bench-7",
                "users": "/console/users",
                "audit": "/console/audit",
            }
            rows = []
            for name, path in pages.items():
                (await client.get(path)).raise_for_status()  # warm
                times = []
                for _ in range(ROUNDS):
                    began = time.perf_counter()
                    (await client.get(path)).raise_for_status()
                    times.append((time.perf_counter() - began) * 1000)
                rows.append({"page": name, "median_ms": round(statistics.median(times), 1)})
    base = rows[0]["median_ms"]
    for row in rows:
        row["x_baseline"] = round(row["median_ms"] / base, 1)
    return {"tasks": TASKS, "rows": rows}
