"""`POST /gateway/v1/tokens`: a backend mints a browser token with its gateway key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from app.limits.deps import KeyReadCaller
from app.resources import ResourcesDep
from app.tokens import service
from app.tokens.schemas import TokenCreate, TokenPublic

router = APIRouter(prefix="/gateway/v1", tags=["browser tokens"])


@router.post("/tokens", status_code=201)
async def mint_token(
    resources: ResourcesDep,
    auth: KeyReadCaller,
    request: Annotated[TokenCreate | None, Body()] = None,
) -> TokenPublic:
    """Mint a short-lived token for one browser session (a key is needed; a token cannot).
    Without a body: 15 minutes, the key's own models, no task allowance."""
    return service.mint_token(
        signer=resources.token_signer,
        auth=auth,
        request=request or TokenCreate(),
        aliases=resources.settings.model_aliases,
    )
