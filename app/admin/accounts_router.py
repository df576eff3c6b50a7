"""Admin routes for upstream accounts: add, list, change (state, weight, limits, models) and
rotate a master key. Keys go in and are never returned."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)

from app.admin.deps import AdminSessionDep, require_admin
from app.admin.schemas import whole
from app.resources import ResourcesDep
from app.upstream import accounts

router = APIRouter(
    prefix="/admin/v1/accounts", tags=["admin"], dependencies=[Depends(require_admin)]
)

ModelMap = Annotated[
    dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=128)]],
    Field(max_length=64),
]


class AccountLimits(BaseModel):
    """What may change on an account (given fields only)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    weight: Annotated[int, Field(ge=0, le=1000), BeforeValidator(whole)] | None = None
    max_queued: Annotated[int, Field(ge=1, le=100_000), BeforeValidator(whole)] | None = None
    creates_per_minute: Annotated[int, Field(ge=1, le=100_000), BeforeValidator(whole)] | None = (
        None
    )
    # Gateway model id → the account's name for it; null: every model under its own id.
    models: ModelMap | None = None


def _printable(key: SecretStr) -> SecretStr:
    """A key travels in an HTTP header: printable ASCII, no spaces."""
    if not all(0x21 <= ord(char) <= 0x7E for char in key.get_secret_value()):
        raise ValueError("a master key is printable ASCII without spaces")
    return key


MasterKey = Annotated[
    SecretStr,
    Field(min_length=8, max_length=512, json_schema_extra={"pattern": "^[!-~]+$"}),
    AfterValidator(_printable),
]


def _usable_url(value: str) -> str:
    """A base URL an HTTP client can use: http(s), a host, a valid port."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a usable URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("an http or https URL with a host")
    return value


class AccountCreate(AccountLimits):
    """A new account: its id, base URL and master key."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
    base_url: Annotated[
        str, Field(max_length=512, pattern=r"^https?://[!-~]+$"), AfterValidator(_usable_url)
    ]
    api_key: MasterKey


class AccountUpdate(AccountLimits):
    state: Literal["active", "draining", "disabled"] | None = None


class AccountKey(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    api_key: MasterKey


@router.get("")
async def list_accounts(session: AdminSessionDep) -> list[dict[str, Any]]:
    """Every account, with its state, health, limits and models (never its key)."""
    return [account.public() for account in await accounts.list_accounts(session)]


@router.post("", status_code=201)
async def add_account(
    body: AccountCreate, session: AdminSessionDep, resources: ResourcesDep
) -> dict[str, Any]:
    """Add an account; its key is stored encrypted (`GATEWAY_ACCOUNT_KEYS_SECRET`)."""
    fields = body.model_dump(exclude={"id", "api_key"}, exclude_none=True)
    account = await accounts.add_account(
        session,
        box=resources.upstream.box,
        account_id=body.id,
        api_key=body.api_key.get_secret_value(),
        **fields,
    )
    return account.public()


@router.patch("/{account_id}")
async def update_account(
    account_id: str, body: AccountUpdate, session: AdminSessionDep
) -> dict[str, Any]:
    """Drain (no new creates, its tasks finish), disable, re-activate, or change its weight,
    limits or models; every replica follows within a second."""
    # Null clears the model map (every model); elsewhere it means "unchanged".
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name == "models"
    }
    account = await accounts.update_account(session, account_id=account_id, changes=changes)
    return account.public()


@router.put("/{account_id}/key")
async def rotate_key(
    account_id: str, body: AccountKey, session: AdminSessionDep, resources: ResourcesDep
) -> dict[str, Any]:
    """Replace the master key (and put the account back in rotation to try it)."""
    account = await accounts.rotate_key(
        session,
        box=resources.upstream.box,
        account_id=account_id,
        api_key=body.api_key.get_secret_value(),
    )
    return account.public()
