"""Moving windows in Redis, all of a rate's limits checked, counted and reported in one round
trip (one Lua script), so a request's rate check costs one call and its headers come free.

Each limit keeps the list of its hits' times, newest first, trimmed to the limit: the moving
window of `limits`, whose in-process counterpart the limiter keeps beside this one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem
from redis.asyncio import Redis

# KEYS: one list per limit. ARGV: now, hit (1 or 0), then limit and window seconds per key.
# Refused if any limit is full; only then is nothing counted. Returns the verdict, then each
# limit's count in its window and the time of its oldest hit in it.
WINDOWS_SCRIPT = """
local now = tonumber(ARGV[1])
local hit = ARGV[2] == '1'
local allowed = 1
for i = 1, #KEYS do
    local limit = tonumber(ARGV[1 + 2 * i])
    local expiry = tonumber(ARGV[2 + 2 * i])
    local last = redis.call('lindex', KEYS[i], limit - 1)
    if last and tonumber(last) > now - expiry then
        allowed = 0
    end
end
local reply = {allowed}
for i = 1, #KEYS do
    local limit = tonumber(ARGV[1 + 2 * i])
    local expiry = tonumber(ARGV[2 + 2 * i])
    if hit and allowed == 1 then
        redis.call('lpush', KEYS[i], ARGV[1])
        redis.call('ltrim', KEYS[i], 0, limit - 1)
        redis.call('expire', KEYS[i], expiry)
    end
    local low, high, oldest = 0, redis.call('llen', KEYS[i]) - 1, -1
    while low <= high do
        local mid = math.floor((low + high) / 2)
        if tonumber(redis.call('lindex', KEYS[i], mid)) > now - expiry then
            oldest = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    local at = now
    if oldest >= 0 then
        at = tonumber(redis.call('lindex', KEYS[i], oldest))
    end
    table.insert(reply, oldest + 1)
    table.insert(reply, tostring(at))
end
return reply
"""


@dataclass(frozen=True)
class WindowState:
    """One limit after the call: hits in its window, and when the oldest of them expires."""

    count: int
    reset_at: float


class RedisWindows:
    """The script on one Redis connection pool, with short timeouts."""

    def __init__(self, url: str, *, key_prefix: str, timeout_seconds: float) -> None:
        self.client = Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.key_prefix = key_prefix
        self.script = self.client.register_script(WINDOWS_SCRIPT)

    async def run(
        self, items: list[RateLimitItem], name: str, identifiers: tuple[str, ...], *, hit: bool
    ) -> tuple[bool, list[WindowState]]:
        """Check (and with `hit`, count) every limit at once."""
        keys = [f"{self.key_prefix}:window:{item.key_for(name, *identifiers)}" for item in items]
        args: list[str | float | int] = [repr(time.time()), int(hit)]
        for item in items:
            args += [item.amount, item.get_expiry()]
        reply = await self.script(keys=keys, args=args)
        return bool(reply[0]), [
            WindowState(
                count=int(reply[1 + 2 * i]), reset_at=float(reply[2 + 2 * i]) + item.get_expiry()
            )
            for i, item in enumerate(items)
        ]

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
