"""Admin shapes for upstream accounts: keys go in (printable ASCII) and never come out."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)

from app.admin.schemas import whole

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
    retrieves_per_second: Annotated[int, Field(ge=1, le=10_000), BeforeValidator(whole)] | None = (
        None
    )
    lists_per_second: Annotated[int, Field(ge=1, le=1_000), BeforeValidator(whole)] | None = None
    running_per_model: Annotated[int, Field(ge=1, le=10_000), BeforeValidator(whole)] | None = None
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


# A host name (letters, digits, hyphens and underscores between dots) or an IP address:
# httpx would take `http://a]`, percent-encoding the host, and urllib refuses it.
_HOSTNAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?", re.ASCII)


def _usable_url(value: str) -> str:
    """A base URL an HTTP client can use: http(s), a host name or address, a valid port."""
    try:
        url = httpx.URL(value)
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port  # reading the port checks it
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"not a usable URL ({exc})") from None
    if url.scheme not in ("http", "https") or not host or not _is_host(host):
        raise ValueError("an http or https URL with a host")
    return value


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


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
