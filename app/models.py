"""Imports every table so `SQLModel.metadata` is complete (Alembic and tests read it)."""

from sqlmodel import SQLModel

from app.admin.audit import AuditEntry
from app.alerts import Alert
from app.db import TurnSlot
from app.keys.models import ApiKey, User
from app.tasks.models import (
    CallbackDelivery,
    OpenTaskChange,
    OpenTaskCount,
    Task,
    TaskArchive,
    TaskEvent,
)
from app.upstream.accounts import UpstreamAccount
from app.usage.models import Budget, LedgerEntry, Price
from app.usage.rollup import DailySpend

metadata = SQLModel.metadata

__all__ = [
    "Alert",
    "ApiKey",
    "AuditEntry",
    "Budget",
    "CallbackDelivery",
    "DailySpend",
    "LedgerEntry",
    "OpenTaskChange",
    "OpenTaskCount",
    "Price",
    "Task",
    "TaskArchive",
    "TaskEvent",
    "TurnSlot",
    "UpstreamAccount",
    "User",
    "metadata",
]
