"""Token-bucket rate limits: per API key, and per client address for failed authentication.

A limit is "N requests per period": a bucket holds at most N tokens and refills at N/period per second,
so bursts up to N are allowed and the long-run rate is N per period. Buckets live in process memory, or,
with a Redis URL, in Redis, so every worker and replica draws from the same bucket (one atomic Lua call
per request).

Redis is a shared counter, never a dependency of answering: with it away or frozen, `FailOpen` counts in
process memory within the Redis client's timeout (`DEFAULT_REDIS_TIMEOUT`), stops calling it for
`DEFAULT_COOLDOWN` seconds, then tries again; it logs each change, and says so in metrics and `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Protocol

from modeldex.catalog.callers import Caller, readable_limit
from modeldex.catalog.limits import Limit, parse_limit
from modeldex.ops import metrics

__all__ = ["Buckets", "FailOpen", "Limit", "MemoryBuckets", "RateLimiter", "RedisBuckets", "Verdict",
           "parse_limit"]

log = logging.getLogger("modeldex.ratelimit")
# A bucket call to a local Redis takes ~0.2 ms (measured); 50 ms is far above that and far below what a
# client notices. Connecting and each read are bounded by it, and the whole call by twice it.
DEFAULT_REDIS_TIMEOUT = 0.05
DEFAULT_COOLDOWN = 2.0  # seconds without calling Redis after it failed, before trying it again

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


ADDRESS_BUCKET = "auth:"  # a client address's failed authentications: "auth:" + the address


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
        self._state: dict[str, tuple[float, float, float]] = {}  # bucket: (tokens, updated, full again at)
        self._max_buckets = max_buckets

    def _refilled(self, bucket: str, limit: Limit, now: float) -> float:
        state = self._state.get(bucket)
        if state is None:
            return float(limit.requests)
        tokens, updated, _ = state
        return min(float(limit.requests), tokens + (now - updated) * limit.rate)

    async def take(self, bucket: str, limit: Limit) -> Verdict:
        now = time.monotonic()
        tokens = self._refilled(bucket, limit, now)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._state) >= self._max_buckets and bucket not in self._state:
            self._make_room(now)
        self._state[bucket] = (tokens, now, now + (limit.requests - tokens) / limit.rate)
        return _verdict(limit, tokens, allowed)

    def _make_room(self, now: float) -> None:
        """Bounded memory under address floods. Buckets full again go first (a bucket not kept starts full:
        nothing changes), then failed-attempt buckets (addresses, which any client can make up), and only
        then the rest. Clearing every bucket at once let a client with many addresses (an IPv6 /64) reset
        its own key's limit by failing from 100,000 of them."""
        self._state = {bucket: state for bucket, state in self._state.items() if state[2] > now}
        if len(self._state) >= self._max_buckets:
            self._state = {bucket: state for bucket, state in self._state.items()
                           if not bucket.startswith(ADDRESS_BUCKET)}
        if len(self._state) >= self._max_buckets:
            self._state.clear()  # as many callers as buckets: forgetting is the safe direction

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

    def __init__(self, url: str, prefix: str = "modeldex:ratelimit:", timeout: float = DEFAULT_REDIS_TIMEOUT
                 ) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries (redis-py retries 3 times with backoff by default: seconds): FailOpen decides.
        self._redis = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                     retry=Retry(NoBackoff(), 0))
        self._script = self._redis.register_script(_TAKE)
        self._prefix = prefix
        self._budget = 2 * timeout  # connect + one read; a new connection's handshake adds reads

    async def _call(self, bucket: str, limit: Limit, cost: int) -> Verdict:
        async with asyncio.timeout(self._budget):
            allowed, milli_tokens = await self._script(keys=[self._prefix + bucket],
                                                       args=[limit.requests, limit.rate, cost])
        return _verdict(limit, milli_tokens / 1000, bool(allowed))

    async def ping(self) -> None:
        async with asyncio.timeout(self._budget):
            await self._redis.ping()

    async def forget_connections(self) -> None:
        """Close the idle pooled connections: after a failure they may be dead (a restarted Redis), and
        each would fail one more request later. Closing a socket never waits on Redis."""
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    async def take(self, bucket: str, limit: Limit) -> Verdict:
        return await self._call(bucket, limit, 1)

    async def peek(self, bucket: str, limit: Limit) -> Verdict:
        return await self._call(bucket, limit, 0)

    async def close(self) -> None:
        await self._redis.aclose()


class FailOpen:
    """Shared buckets (Redis) that never make a request fail or wait: when a call fails or times out, the
    request is counted in this process's memory instead, and so are the next `cooldown` seconds' worth
    before one request tries the shared store again (a breaker). Limits stay enforced, per process, while
    degraded: each worker allows what the limit allows, so N workers and replicas may allow N times it.
    """

    def __init__(self, shared: RedisBuckets, cooldown: float = DEFAULT_COOLDOWN) -> None:
        self.shared = shared
        self.local = MemoryBuckets()
        self._cooldown = cooldown
        self._retry_at = 0.0  # monotonic time from which the shared store is tried again
        self._probing = False  # one request tries it; the others keep counting locally meanwhile
        self.degraded = False
        metrics.RATE_LIMIT_DEGRADED.set(0)

    async def take(self, bucket: str, limit: Limit) -> Verdict:
        return await self._either("take", bucket, limit)

    async def peek(self, bucket: str, limit: Limit) -> Verdict:
        return await self._either("peek", bucket, limit)

    async def _either(self, operation: str, bucket: str, limit: Limit) -> Verdict:
        if self.degraded and (self._probing or time.monotonic() < self._retry_at):
            metrics.RATE_LIMIT_FALLBACKS.inc()
            return await getattr(self.local, operation)(bucket, limit)  # type: ignore[no-any-return]
        self._probing = self.degraded
        try:
            verdict: Verdict = await getattr(self.shared, operation)(bucket, limit)
        except Exception as exc:  # any failure of the shared store: count here, never fail the request
            self._failed(exc)
            await self.shared.forget_connections()
            metrics.RATE_LIMIT_FALLBACKS.inc()
            return await getattr(self.local, operation)(bucket, limit)  # type: ignore[no-any-return]
        finally:
            self._probing = False
        self._answered()
        return verdict

    async def check(self) -> dict[str, Any]:
        """For /readyz: asks the shared store (unless it failed within the cooldown) and says how it is."""
        if not (self.degraded and (self._probing or time.monotonic() < self._retry_at)):
            try:
                await self.shared.ping()
            except Exception as exc:
                self._failed(exc)
                await self.shared.forget_connections()
            else:
                self._answered()
        if self.degraded:  # why (with Redis's address) is in the log, not told to unauthenticated callers
            return {"store": "redis", "status": "degraded",
                    "message": "Redis is unavailable; limits are counted in each process until it answers"}
        return {"store": "redis", "status": "ok"}

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._cooldown
        if not self.degraded:
            self.degraded = True
            metrics.RATE_LIMIT_DEGRADED.set(1)
            log.warning("rate limits degraded: Redis is unavailable (%s); counting in this process's memory "
                        "and trying Redis again every %gs", _describe(exc), self._cooldown)

    def _answered(self) -> None:
        if self.degraded:
            self.degraded = False
            metrics.RATE_LIMIT_DEGRADED.set(0)
            log.info("rate limits recovered: Redis answers again; buckets are shared again")

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()


def _describe(exc: BaseException) -> str:
    """The failure in one short line, e.g. `ConnectionError: Error 111 connecting to 127.0.0.1:6379.`
    (redis-py's messages name the host and port, never the password)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RateLimiter:
    """The two limits the API applies: requests per key, and failed authentications per client address."""

    def __init__(self, buckets: Buckets, default_limit: Limit | None, auth_failure_limit: Limit | None) -> None:
        self.buckets = buckets
        self.default_limit = default_limit
        self.auth_failure_limit = auth_failure_limit
        # Addresses that failed here lately: only they need their bucket checked, so the common case (no
        # failures) costs a dict lookup, not a bucket (or Redis) round trip.
        self._failed_recently: dict[str, float] = {}
        # Addresses whose allowance must be checked, asked with `in` on every Models request: the dict itself,
        # only ever changed in place, so a reference kept to it stays good. `address in suspects` is 14 ns
        # where the dict's bound __contains__ (a method-wrapper, whose call CPython 3.11 does not specialise)
        # was 30, and a method of this class more (timeit).
        self.suspects: Container[str] = self._failed_recently

    def limits(self, key_limit: str | None) -> bool:
        """Whether requests with a key of this limit are counted at all (unlimited keys skip the bucket)."""
        return key_limit is not None or self.default_limit is not None

    async def for_caller(self, caller: Caller) -> Verdict | None:
        """Take one request from the caller's bucket; None when the caller is unlimited."""
        limit = readable_limit(caller.rate_limit) if caller.rate_limit else self.default_limit
        if isinstance(limit, str):  # stored out of bounds before limits were checked: the default applies
            limit = self.default_limit
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
        verdict = await self.buckets.peek(ADDRESS_BUCKET + address, limit)
        return None if verdict.allowed else verdict

    async def record_auth_failure(self, address: str) -> None:
        if self.auth_failure_limit is not None:
            if len(self._failed_recently) > 100_000:
                self._failed_recently.clear()
            self._failed_recently[address] = time.monotonic()
            await self.buckets.take(ADDRESS_BUCKET + address, self.auth_failure_limit)
