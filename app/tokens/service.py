"""Minting browser tokens: checked against the minting key, signed, nothing stored."""

from __future__ import annotations

from app.errors import AccessDenied, InvalidParameter
from app.keys.service import AuthContext
from app.keys.tokens import TokenSigner
from app.tasks.catalog import find_model
from app.tokens.schemas import TokenCreate, TokenPublic


def mint_token(
    *, signer: TokenSigner, auth: AuthContext, request: TokenCreate, aliases: dict[str, str]
) -> TokenPublic:
    """A token acting for `auth`'s key within `request`'s narrower rules; 400 for a model the
    gateway does not know, 403 for one the key may not use (a token never does more)."""
    if not signer.enabled:
        raise AccessDenied(
            "Browser tokens are off: set GATEWAY_BROWSER_TOKEN_SECRETS (or an admin token).",
            code="BrowserTokensDisabled",
        )
    for model in request.models or []:
        if find_model(model, aliases) is None:
            raise InvalidParameter("models", f"the model {model} does not exist")
        if auth.allowed_models is not None and model not in auth.allowed_models:
            raise AccessDenied(f"This key may not use the model {model}.", param="models")
    token, claims = signer.mint(
        key_id=auth.key_id,
        ttl_seconds=request.ttl_seconds,
        models=request.models,
        max_tasks=request.max_tasks,
        label=request.label,
    )
    return TokenPublic(id=claims.token_id, token=token, expires_at=claims.expires_at)
