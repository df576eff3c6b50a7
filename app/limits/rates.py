"""Request-rate limits: moving windows in Redis, or in this process without it.

slowapi's checks are synchronous: with Redis they would block the event loop on every request
(slowapi#130). Here one Lua script (`redis_windows`) checks, counts and reports all of a rate's
limits in one async round trip (shared by the checks that arrive together), with short Redis
timeouts; `local_windows` counts in this process.
A call that fails is counted in this process instead of failing the request; after
`BREAKER_FAILURES` failures in a row, all counting stays in this process for `BREAKER_SECONDS`
(logged, and shown by /readyz). One slow reply under load must not split the
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

from app.errors import TooManyRequests
from app.limits.local_windows import LocalWindows
from app.limits.redis_windows import RedisWindows, WindowState

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
    _local: LocalWindows = field(init=False, default_factory=LocalWindows)
    _redis: RedisWindows | None = field(init=False, default=None)
    _redis_down_until: float = field(init=False, default=0.0)
    _failures_in_a_row: int = field(init=False, default=0)
    _parsed: dict[str, list[RateLimitItem]] = field(init=False, default_factory=dict)
    last_redis_error: str | None = field(init=False, default=None)
    _last_failure: Exception | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.redis_url:
            self._redis = RedisWindows(
                self.redis_url, key_prefix=self.key_prefix, timeout_seconds=self.timeout_seconds
            )

    @property
    def backend(self) -> str:
        """Where counts live right now: `redis`, `memory`, or `memory (redis unavailable)`."""
        if self._redis is None:
            return "memory"
        return "redis" if self._redis_up() else "memory (redis unavailable)"

    async def hit(self, rate: str, name: str, *identifiers: str) -> RateDecision:
        """Count one request against every limit in `rate`; refused if any is exhausted."""
        return await self._check(self._items(rate), name, identifiers, hit=True)

    async def allow(self, rate: str, name: str, *identifiers: str) -> bool:
        """Count one hit against every limit in `rate`; False if any is exhausted."""
        return (await self.hit(rate, name, *identifiers)).allowed

    async def is_exhausted(self, rate: str, name: str, *identifiers: str) -> RateDecision | None:
        """The exhausted limit of `rate`, if any, without counting a hit."""
        decision = await self._check(self._items(rate), name, identifiers, hit=False)
        return None if decision.allowed else decision

    async def close(self) -> None:
        """Close the Redis connections, if any."""
        if self._redis is not None:
            await self._redis.close()

    async def _check(
        self, items: list[RateLimitItem], name: str, identifiers: tuple[str, ...], *, hit: bool
    ) -> RateDecision:
        keys = [item.key_for(name, *identifiers) for item in items]
        if self._redis is not None and hit:
            # This process's own count refuses what it has already used, whatever Redis says.
            refused = self._local_refusal(items, keys, name)
            if refused is not None:
                return refused
        if self._redis is not None and self._redis_up():
            try:
                allowed, states = await self._redis.run(items, name, identifiers, hit=hit)
            except Exception as exc:  # any storage failure: count locally, never fail the request
                self._record_failure(exc)
            else:
                self._failures_in_a_row = 0
                if allowed and hit:
                    for item, key in zip(items, keys, strict=True):
                        self._local.hit(item, key)
                return _decision(items, states, name, allowed=allowed)
        return self._in_memory(items, keys, name, hit=hit)

    def _in_memory(
        self, items: list[RateLimitItem], keys: list[str], name: str, *, hit: bool
    ) -> RateDecision:
        """As the Redis script decides: refused if any limit is full, and then nothing counts."""
        refused = self._local_refusal(items, keys, name)
        if refused is not None:
            return refused
        if hit:
            for item, key in zip(items, keys, strict=True):
                self._local.hit(item, key)
        states = [self._local.state(item, key) for item, key in zip(items, keys, strict=True)]
        return _decision(items, states, name, allowed=True)

    def _local_refusal(
        self, items: list[RateLimitItem], keys: list[str], name: str
    ) -> RateDecision | None:
        for item, key in zip(items, keys, strict=True):
            if not self._local.allows(item, key):
                return _decision([item], [self._local.state(item, key)], name, allowed=False)
        return None

    def _redis_up(self) -> bool:
        return time.monotonic() >= self._redis_down_until

    def _items(self, rate: str) -> list[RateLimitItem]:
        if rate not in self._parsed:
            self._parsed[rate] = parse_rate(rate)
        return self._parsed[rate]

    def _record_failure(self, exc: Exception) -> None:
        if exc is self._last_failure:
            return  # one failed call that carried several checks is one failure
        self._last_failure = exc
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


def _decision(
    items: list[RateLimitItem], states: list[WindowState], name: str, *, allowed: bool
) -> RateDecision:
    """The decision to report: the limit that refused, or the one with the least room."""
    now = time.time()
    decisions = [
        RateDecision(
            allowed=allowed,
            name=name,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=max(0, item.amount - state.count),
            reset_seconds=max(1, math.ceil(state.reset_at - now)),
        )
        for item, state in zip(items, states, strict=True)
    ]
    return min(decisions, key=lambda d: d.remaining)


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
