"""What minting a browser token accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.admin.schemas import PRINTABLE, ModelIds
from app.keys.tokens import MAX_TTL_SECONDS


class TokenCreate(BaseModel):
    """A token for one browser session; it can only narrow what its key may do."""

    model_config = ConfigDict(extra="forbid")

    ttl_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_TTL_SECONDS)] = 900
    models: ModelIds | None = None
    max_tasks: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    label: Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)] | None = None


class TokenPublic(BaseModel):
    """The token (shown once; the gateway keeps no copy) and when it stops working."""

    id: str
    token: str
    expires_at: datetime
