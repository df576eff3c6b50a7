"""Admin routes for upstream accounts: add, list, change (state, weight, limits, models) and
rotate a master key. Keys go in and are never returned."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.admin.accounts_schemas import AccountCreate, AccountKey, AccountUpdate
from app.admin.deps import AdminSessionDep, require_admin
from app.resources import ResourcesDep
from app.upstream import accounts

router = APIRouter(
    prefix="/admin/v1/accounts", tags=["admin"], dependencies=[Depends(require_admin)]
)


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
