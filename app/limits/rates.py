"""Request-rate limits on `limits.aio`: moving windows in Redis, or in this process without it.

slowapi's checks are synchronous: with Redis they would block the event loop on every request
(slowapi#130). The same `limits` library's async API does the counting here instead, with short
Redis timeouts. A call that fails is counted in this process instead of failing the request;
after `BREAKER_FAILURES` failures in a row, all counting stays in this process for
`BREAKER_SECONDS` (logged, and shown by /readyz). One slow reply under load must not split the
shared counters, so a single timeout does not trip the breaker.

With Redis, every hit it accepts is also counted in this process, and a hit this process's own
count refuses is refused: a Redis that restarts empty (or an outage) cannot hand out a fresh
allowance to a process that has already used its share.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from app.errors import TooManyRequests

logger = logging.getLogger(__name__)

BREAKER_SECONDS = 5.0
BREAKER_FAILURES = 3


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one hit: allowed or not, and what the rate headers should say."""

    allowed: bool
    name: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int


def parse_rate(text: str) -> list[RateLimitItem]:
    """`"60/minute"` or `"10/second;500/hour"` as limit items; ValueError if malformed."""
    items = parse_many(text)
    if not items:
        raise ValueError(f"no rate limit in {text!r}")
    return list(items)


@dataclass
class RateLimiter:
    """Moving-window counters shared through Redis when configured, else per process."""

    redis_url: str | None = None
    key_prefix: str = "sgw"
    timeout_seconds: float = 1.0
    _memory: MovingWindowRateLimiter = field(init=False)
    _redis: MovingWindowRateLimiter | None = field(init=False, default=None)
    _redis_down_until: float = field(init=False, default=0.0)
    _failures_in_a_row: int = field(init=False, default=0)
    _parsed: dict[str, list[RateLimitItem]] = field(init=False, default_factory=dict)
    last_redis_error: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        if self.redis_url:
            storage = RedisStorage(
                "async+" + self.redis_url,
                implementation="redispy",
                key_prefix=self.key_prefix,
                socket_timeout=self.timeout_seconds,
                socket_connect_timeout=self.timeout_seconds,
            )
            self._redis = MovingWindowRateLimiter(storage)

    @property
    def backend(self) -> str:
        """Where counts live right now: `redis`, `memory`, or `memory (redis unavailable)`."""
        if self._redis is None:
            return "memory"
        return (
            "redis" if time.monotonic() >= self._redis_down_until else "memory (redis unavailable)"
        )

    async def hit(self, rate: str, name: str, *identifiers: str) -> RateDecision:
        """Count one request against every limit in `rate`; refused if any is exhausted."""
        items = self._items(rate)
        decisions = []
        for item in items:
            allowed = await self._hit(item, name, identifiers)
            decisions.append(await self._decision(item, name, identifiers, allowed=allowed))
            if not allowed:
                return decisions[-1]
        return min(decisions, key=lambda d: d.remaining)

    async def allow(self, rate: str, name: str, *identifiers: str) -> bool:
        """Count one hit against every limit in `rate`; False if any is exhausted (no stats)."""
        for item in self._items(rate):
            if not await self._hit(item, name, identifiers):
                return False
        return True

    async def is_exhausted(self, rate: str, name: str, *identifiers: str) -> RateDecision | None:
        """The exhausted limit of `rate`, if any, without counting a hit."""
        for item in self._items(rate):
            if not await self._run("test", item, name, *identifiers):
                return await self._decision(item, name, identifiers, allowed=False)
        return None

    async def _hit(self, item: RateLimitItem, name: str, identifiers: tuple[str, ...]) -> bool:
        shadowed = self._redis is not None
        if shadowed and not await self._memory.test(item, name, *identifiers):
            return False
        allowed, counted_in_redis = await self._run_where("hit", item, name, *identifiers)
        if allowed and shadowed and counted_in_redis:
            await self._memory.hit(item, name, *identifiers)
        return bool(allowed)

    def _items(self, rate: str) -> list[RateLimitItem]:
        if rate not in self._parsed:
            self._parsed[rate] = parse_rate(rate)
        return self._parsed[rate]

    async def _decision(
        self, item: RateLimitItem, name: str, identifiers: tuple[str, ...], *, allowed: bool
    ) -> RateDecision:
        stats = await self._run("get_window_stats", item, name, *identifiers)
        return RateDecision(
            allowed=allowed,
            name=name,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=max(0, stats.remaining),
            reset_seconds=max(1, math.ceil(stats.reset_time - time.time())),
        )

    async def _run(self, method: str, *args: Any) -> Any:
        """`method` of the Redis limiter, or of the in-process one while Redis is out."""
        return (await self._run_where(method, *args))[0]

    async def _run_where(self, method: str, *args: Any) -> tuple[Any, bool]:
        """`_run`'s result, and whether Redis gave it."""
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                result = await getattr(self._redis, method)(*args)
            except Exception as exc:  # any storage failure: count locally, never fail the request
                self._record_failure(exc)
            else:
                self._failures_in_a_row = 0
                return result, True
        return await getattr(self._memory, method)(*args), False

    def _record_failure(self, exc: Exception) -> None:
        self.last_redis_error = f"{type(exc).__name__}: {exc}"[:200]
        self._failures_in_a_row += 1
        if self._failures_in_a_row < BREAKER_FAILURES:
            logger.info(
                "redis call for rate limits failed (%s); counted locally", type(exc).__name__
            )
            return
        self._failures_in_a_row = 0
        self._redis_down_until = time.monotonic() + BREAKER_SECONDS
        logger.warning(
            "redis unavailable for rate limits (%s); counting in this process for %.0fs",
            type(exc).__name__,
            BREAKER_SECONDS,
        )


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """IETF RateLimit / RateLimit-Policy headers, and the common X-RateLimit-* ones."""
    return {
        "RateLimit-Policy": f'"{decision.name}";q={decision.limit};w={decision.window_seconds}',
        "RateLimit": f'"{decision.name}";r={decision.remaining};t={decision.reset_seconds}',
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset_seconds),
    }


def refusal(decision: RateDecision, message: str, code: str) -> TooManyRequests:
    """The 429 for an exhausted limit, with Retry-After and the rate headers."""
    return TooManyRequests(
        message, code=code, retry_after=decision.reset_seconds, headers=rate_headers(decision)
    )


def describe(limiter: RateLimiter) -> dict[str, Any]:
    """The limiter's state for /readyz."""
    details: dict[str, Any] = {"backend": limiter.backend}
    if limiter.last_redis_error and limiter.backend != "redis":
        details["redis_error"] = limiter.last_redis_error
    return details
