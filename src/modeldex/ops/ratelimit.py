"""Token-bucket rate limits: per API key, and per client address for failed authentication.

A limit is "N requests per period": a bucket holds at most N tokens and refills at N/period per second,
so bursts up to N are allowed and the long-run rate is N per period. Buckets live in process memory, or,
with a Redis URL, in Redis, so every worker and replica draws from the same bucket (one atomic Lua call
per request).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from modeldex.catalog.callers import Caller
from modeldex.catalog.limits import Limit, parse_limit

__all__ = ["Buckets", "Limit", "MemoryBuckets", "RateLimiter", "RedisBuckets", "Verdict", "parse_limit"]

def format_duration(seconds: float) -> str:
    """OpenAI's style for reset times: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the bucket is full again
    retry_after_seconds: float  # until one request is allowed (0 when allowed)

    def headers(self) -> list[tuple[str, str]]:
        """The OpenAI rate-limit headers, sent on every limited response."""
        return [
            ("x-ratelimit-limit-requests", str(self.limit)),
            ("x-ratelimit-remaining-requests", str(self.remaining)),
            ("x-ratelimit-reset-requests", format_duration(self.reset_seconds)),
        ]

    def retry_headers(self) -> list[tuple[str, str]]:
        return [
            ("retry-after", str(max(1, math.ceil(self.retry_after_seconds)))),
            ("retry-after-ms", str(max(1, math.ceil(self.retry_after_seconds * 1000)))),
        ]


def _verdict(limit: Limit, tokens: float, allowed: bool) -> Verdict:
    return Verdict(
        allowed=allowed,
        limit=limit.requests,
        remaining=max(0, int(tokens)),
        reset_seconds=(limit.requests - tokens) / limit.rate,
        retry_after_seconds=0.0 if allowed else (1 - tokens) / limit.rate,
    )


class Buckets(Protocol):
    async def take(self, bucket: str, limit: Limit) -> Verdict:
        """Take one token from `bucket` if there is one."""

    async def peek(self, bucket: str, limit: Limit) -> Verdict:
        """The bucket's state, taking nothing."""

    async def close(self) -> None: ...


class MemoryBuckets:
    """Buckets in this process: exact and nearly free, but each worker counts on its own."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._max_buckets = max_buckets

    def _refilled(self, bucket: str, limit: Limit, now: float) -> float:
        tokens, updated = self._state.get(bucket, (float(limit.requests), now))
        return min(float(limit.requests), tokens + (now - updated) * limit.rate)

    async def take(self, bucket: str, limit: Limit) -> Verdict:
        now = time.monotonic()
        tokens = self._refilled(bucket, limit, now)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._state) >= self._max_buckets and bucket not in self._state:
            self._state.clear()  # bounded memory under address floods: forgetting is the safe direction
        self._state[bucket] = (tokens, now)
        return _verdict(limit, tokens, allowed)

    async def peek(self, bucket: str, limit: Limit) -> Verdict:
        tokens = self._refilled(bucket, limit, time.monotonic())
        return _verdict(limit, tokens, tokens >= 1)

    async def close(self) -> None:
        self._state.clear()


# KEYS[1] bucket; ARGV: capacity, rate per second, cost (0 = peek). Uses Redis's clock, so every
# replica agrees on time. Returns {allowed, tokens * 1000}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - updated) * rate)
local allowed = 0
if tokens >= 1 then
  allowed = 1
  tokens = tokens - cost
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated', t)
  redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
end
return {allowed, math.floor(tokens * 1000)}
"""


class RedisBuckets:
    """Buckets in Redis: one bucket per key across every worker and replica."""

    def __init__(self, url: str, prefix: str = "modeldex:ratelimit:") -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._script = self._redis.register_script(_TAKE)
        self._prefix = prefix

    async def _call(self, bucket: str, limit: Limit, cost: int) -> Verdict:
        allowed, milli_tokens = await self._script(keys=[self._prefix + bucket],
                                                   args=[limit.requests, limit.rate, cost])
        return _verdict(limit, milli_tokens / 1000, bool(allowed))

    async def take(self, bucket: str, limit: Limit) -> Verdict:
        return await self._call(bucket, limit, 1)

    async def peek(self, bucket: str, limit: Limit) -> Verdict:
        return await self._call(bucket, limit, 0)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """The two limits the API applies: requests per key, and failed authentications per client address."""

    def __init__(self, buckets: Buckets, default_limit: Limit | None, auth_failure_limit: Limit | None) -> None:
        self.buckets = buckets
        self.default_limit = default_limit
        self.auth_failure_limit = auth_failure_limit
        # Addresses that failed here lately: only they need their bucket checked, so the common case (no
        # failures) costs a dict lookup, not a bucket (or Redis) round trip.
        self._failed_recently: dict[str, float] = {}

    def limits(self, key_limit: str | None) -> bool:
        """Whether requests with a key of this limit are counted at all (unlimited keys skip the bucket)."""
        return key_limit is not None or self.default_limit is not None

    def suspect(self, address: str) -> bool:
        """Whether the address failed to authenticate lately, so its allowance must be checked."""
        return bool(self._failed_recently) and address in self._failed_recently

    async def for_caller(self, caller: Caller) -> Verdict | None:
        """Take one request from the caller's bucket; None when the caller is unlimited."""
        limit = parse_limit(caller.rate_limit) if caller.rate_limit else self.default_limit
        if limit is None:
            return None
        # The limit is part of the bucket's name: a caller whose limit changes starts with a full bucket.
        return await self.buckets.take(f"{caller.bucket}:{limit}", limit)

    async def address_blocked(self, address: str) -> Verdict | None:
        """A verdict that refuses the address if it used up its failed authentications, else None."""
        limit = self.auth_failure_limit
        failed_at = self._failed_recently.get(address)
        if limit is None or failed_at is None:
            return None
        if time.monotonic() - failed_at > limit.period:
            del self._failed_recently[address]
            return None
        verdict = await self.buckets.peek("auth:" + address, limit)
        return None if verdict.allowed else verdict

    async def record_auth_failure(self, address: str) -> None:
        if self.auth_failure_limit is not None:
            if len(self._failed_recently) > 100_000:
                self._failed_recently.clear()
            self._failed_recently[address] = time.monotonic()
            await self.buckets.take("auth:" + address, self.auth_failure_limit)
