"""The reconciliation report: per model, the tokens the ledger settled beside what the upstream
reports for the same tasks when re-read after settlement (`app.tasks.reread`), and every task
whose usage changed since it was settled.

The ledger is never rewritten: a change is a finding for ops to take up with the upstream (or to
correct by hand), not something the gateway bills silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.tasks.models import Task
from app.usage.budgets import SETTLE
from app.usage.models import LedgerKind

_FLAGGED_LIMIT = 1000


async def reconciliation_report(
    session: AsyncSession, *, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    """Settled tasks created in [start, end): totals per model and the tasks that changed."""
    reread, gone = col(Task.reread_at).is_not(None), col(Task.reread_tokens).is_(None)
    upstream = case((reread & ~gone, col(Task.reread_tokens)), else_=col(SETTLE.tokens))
    changed = reread & ~gone & (col(Task.reread_tokens) != col(SETTLE.tokens))
    settled = (
        sa_select()
        .select_from(SETTLE)
        .join(Task, col(Task.id) == col(SETTLE.task_id))
        .where(col(SETTLE.kind) == LedgerKind.SETTLE)
    )
    if start is not None:
        settled = settled.where(col(Task.created_at) >= start)
    if end is not None:
        settled = settled.where(col(Task.created_at) < end)
    # SQLModel types select() up to four columns; these are SQLAlchemy's, which it runs as well.
    totals = await session.exec(  # type: ignore[call-overload]
        settled.add_columns(
            col(SETTLE.model),
            func.count(),
            func.sum(col(SETTLE.tokens)),
            func.sum(upstream),
            func.sum(case((~reread, 1), else_=0)),
            func.sum(case((reread & gone, 1), else_=0)),
            func.sum(case((changed, 1), else_=0)),
        )
        .group_by(col(SETTLE.model))
        .order_by(col(SETTLE.model))
    )
    flagged = await session.exec(  # type: ignore[call-overload]
        settled.add_columns(
            col(Task.id),
            col(Task.model),
            col(Task.user_id),
            col(SETTLE.tokens),
            col(Task.reread_tokens),
            col(Task.reread_at),
        )
        .where(changed)
        .order_by(col(Task.created_at))
        .limit(_FLAGGED_LIMIT)
    )
    return {
        "from": start,
        "to": end,
        "models": [
            {
                "model": model,
                "settled_tasks": int(tasks),
                "settled_tokens": int(tokens or 0),
                "upstream_tokens": int(reported or 0),
                "difference_tokens": int(reported or 0) - int(tokens or 0),
                "not_reread_tasks": int(pending or 0),
                "gone_tasks": int(missing or 0),
                "changed_tasks": int(moved or 0),
            }
            for model, tasks, tokens, reported, pending, missing, moved in totals.all()
        ],
        "changed": [
            {
                "task_id": task_id,
                "model": model,
                "user_id": user_id,
                "settled_tokens": int(tokens),
                "upstream_tokens": int(now),
                "reread_at": reread_at,
            }
            for task_id, model, user_id, tokens, now, reread_at in flagged.all()
        ],
    }
