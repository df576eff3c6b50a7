"""Moving windows in Redis, all of a rate's limits checked, counted and reported in one round
trip (one Lua script), so a request's rate check costs one call and its headers come free.

Checks that arrive while a call is in flight go together in the next call: one script runs
them one after another, atomically, exactly as separate calls would, so under load many
requests share one round trip (and the client's per-call CPU) without changing any verdict.

Each limit keeps the list of its hits' times within its window, newest first: the moving window
of `limits`, whose in-process counterpart the limiter keeps beside this one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem
from redis.asyncio import Redis

# KEYS: one list per limit, request after request. ARGV: now, then per request: its number of
# keys, hit (1 or 0), then limit and window seconds per key. Each request is refused if any of
# its limits is full, and only then is nothing counted for it. Returns, per request, the
# verdict, then each limit's count in its window and the time of its oldest hit in it. Hits
# that have left the window are dropped first, so a list holds only its window's hits (never
# more than the limit): its length is the count, its tail the oldest.
WINDOWS_SCRIPT = """
-- The expired hits are the list's tail: popped one by one, or, past a few (a list written
-- before hits were dropped, up to the limit long), cut in one LTRIM found by bisection, so
-- no call holds Redis for long.
local function drop_expired(name, cutoff)
    for _ = 1, 16 do
        local oldest = redis.call('lindex', name, -1)
        if not oldest or tonumber(oldest) > cutoff then
            return
        end
        redis.call('rpop', name)
    end
    local low, high = 0, redis.call('llen', name) - 1
    local first = high + 1
    while low <= high do
        local mid = math.floor((low + high) / 2)
        if tonumber(redis.call('lindex', name, mid)) <= cutoff then
            first, high = mid, mid - 1
        else
            low = mid + 1
        end
    end
    if first == 0 then
        redis.call('del', name)
    else
        redis.call('ltrim', name, 0, first - 1)
    end
end

local now = tonumber(ARGV[1])
local reply = {}
local key, arg = 1, 2
while arg <= #ARGV do
    local count = tonumber(ARGV[arg])
    local hit = ARGV[arg + 1] == '1'
    local allowed = 1
    for i = 0, count - 1 do
        local name = KEYS[key + i]
        local limit = tonumber(ARGV[arg + 2 + 2 * i])
        local expiry = tonumber(ARGV[arg + 3 + 2 * i])
        drop_expired(name, now - expiry)
        if redis.call('llen', name) >= limit then
            allowed = 0
        end
    end
    table.insert(reply, allowed)
    for i = 0, count - 1 do
        local name = KEYS[key + i]
        local limit = tonumber(ARGV[arg + 2 + 2 * i])
        local expiry = tonumber(ARGV[arg + 3 + 2 * i])
        if hit and allowed == 1 then
            redis.call('lpush', name, ARGV[1])
            redis.call('ltrim', name, 0, limit - 1)
            redis.call('expire', name, expiry)
        end
        local held = redis.call('llen', name)
        local at = now
        if held > 0 then
            at = tonumber(redis.call('lindex', name, -1))
        end
        table.insert(reply, held)
        table.insert(reply, tostring(at))
    end
    key = key + count
    arg = arg + 2 + 2 * count
end
return reply
"""


@dataclass(frozen=True)
class WindowState:
    """One limit after the call: hits in its window, and when the oldest of them expires."""

    count: int
    reset_at: float


@dataclass
class _Check:
    """One request's check, waiting for the call that carries it."""

    keys: list[str]
    items: list[RateLimitItem]
    hit: bool
    answer: asyncio.Future[tuple[bool, list[WindowState]]]


@dataclass
class RedisWindows:
    """The script on one Redis connection pool, with short timeouts; checks batched per call."""

    url: str
    key_prefix: str
    timeout_seconds: float
    client: Redis = field(init=False)
    _waiting: list[_Check] = field(init=False, default_factory=list)
    _busy: bool = field(init=False, default=False)
    _sender: asyncio.Task[None] | None = field(init=False, default=None)  # kept: tasks are weak

    def __post_init__(self) -> None:
        # No socket timeout (redis-py's default is 5 s): with one, every write goes through
        # `asyncio.wait_for`, which on Python 3.11 makes a task of it: the command leaves a turn
        # of the event loop late, for 20-25 us more CPU a check. `_call` bounds the whole call.
        self.client = Redis.from_url(
            self.url, socket_timeout=None, socket_connect_timeout=self.timeout_seconds
        )
        self.script = self.client.register_script(WINDOWS_SCRIPT)

    async def run(
        self, items: list[RateLimitItem], name: str, identifiers: tuple[str, ...], *, hit: bool
    ) -> tuple[bool, list[WindowState]]:
        """Check (and with `hit`, count) every limit at once; a failed call raises its error,
        the same error object for every check it carried."""
        keys = [f"{self.key_prefix}:window:{item.key_for(name, *identifiers)}" for item in items]
        answer: asyncio.Future[tuple[bool, list[WindowState]]]
        answer = asyncio.get_running_loop().create_future()
        check = _Check(keys, items, hit, answer)
        if self._busy:  # a call is in flight: this check goes with the next one
            self._waiting.append(check)
            return await answer
        self._busy = True  # nothing in flight: this request makes the call itself
        try:
            await self._send([check])
        finally:
            if self._waiting:  # what queued meanwhile goes at once, in a call of its own
                self._sender = asyncio.get_running_loop().create_task(self._send_waiting())
            else:
                self._busy = False
        return await answer

    async def _send_waiting(self) -> None:
        """Send what waits, one call at a time, until nothing does."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._send(batch)
        finally:
            self._busy = False
            self._sender = None

    async def _send(self, batch: list[_Check]) -> None:
        keys: list[str] = []
        args: list[str | float | int] = [repr(time.time())]
        for check in batch:
            keys += check.keys
            args += [len(check.items), int(check.hit)]
            for item in check.items:
                args += [item.amount, item.get_expiry()]
        try:
            reply = await self._call(keys, args)
        except Exception as exc:  # every check of the call fails alike (the caller counts locally)
            for check in batch:
                if not check.answer.done():
                    check.answer.set_exception(exc)
            return
        at = 0
        for check in batch:
            states = [
                WindowState(
                    count=int(reply[at + 1 + 2 * i]),
                    reset_at=float(reply[at + 2 + 2 * i]) + item.get_expiry(),
                )
                for i, item in enumerate(check.items)
            ]
            if not check.answer.done():  # its request may have been cancelled meanwhile
                check.answer.set_result((bool(reply[at]), states))
            at += 1 + 2 * len(check.items)

    async def _call(self, keys: list[str], args: list[str | float | int]) -> list[Any]:
        """The script's reply, or TimeoutError after `timeout_seconds` (a call cut short closes
        its connection: redis-py drops a connection whose read was interrupted)."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reply: list[Any] = await self.script(keys=keys, args=args)
                return reply
        except TimeoutError:
            raise TimeoutError(f"Redis did not answer within {self.timeout_seconds} s") from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
