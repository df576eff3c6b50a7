"""Identifiers the gateway hands out: unguessable, and shaped like what clients expect."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime, timedelta, timezone

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits
# Upstream task ids carry the creation time in UTC+8 (see the ids in the create-task API
# examples, https://docs.byteplus.com/en/docs/ModelArk/1520757); ours do too.
_UTC8 = timezone(timedelta(hours=8))


def random_string(length: int, alphabet: str = _LOWER_ALNUM) -> str:
    """`length` characters drawn uniformly from `alphabet` by the system CSPRNG: one number
    below len(alphabet) ** length, written in that base (one draw, not one per character)."""
    base = len(alphabet)
    number = secrets.randbelow(base**length)
    characters = []
    for _ in range(length):
        number, digit = divmod(number, base)
        characters.append(alphabet[digit])
    return "".join(characters)


def new_task_id(now: datetime | None = None) -> str:
    """A gateway task id: `cgt-YYYYMMDDhhmmss-` and 20 random [a-z0-9] (about 103 bits)."""
    stamp = (now or datetime.now(UTC)).astimezone(_UTC8).strftime("%Y%m%d%H%M%S")
    return f"cgt-{stamp}-{random_string(20)}"


def new_user_id() -> str:
    """A user id such as `usr_k3j9x0m2q8ab`."""
    return f"usr_{random_string(12)}"


def new_key_id() -> str:
    """A key's public id (for listing and revoking), never the secret itself."""
    return f"key_{random_string(12)}"


def new_secret_key() -> str:
    """A plaintext gateway key: `sgw-` and 43 random [A-Za-z0-9] (about 256 bits)."""
    return f"sgw-{random_string(43, _ALNUM)}"
