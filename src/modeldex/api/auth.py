"""Who is calling: the request's API key, and what it may still do under its rate limit.

Shared by the Models hot path and the admin API, so both count failed keys and requests alike.
"""

from __future__ import annotations

from typing import Any

from modeldex.api import errors
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.keys import ApiKey
from modeldex.ops import metrics
from modeldex.ops.ratelimit import RateLimiter

Headers = list[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when no usable one was sent."""
    value = header(headers, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token.decode("latin-1") if token else None


async def authenticate(rendered: RenderedCatalog, scope: dict[str, Any], limiter: RateLimiter) -> ApiKey:
    """The key of the request (any scope), or the right 401/429. Shared by the hot path and the admin API.

    Failed attempts count against the client address, which is refused (429) once it used up its
    allowance, before any key is checked: guessing keys at speed gets nowhere."""
    client: str = scope.get("modeldex.client", "unknown")
    blocked = await limiter.address_blocked(client)
    if blocked is not None:
        metrics.RATE_LIMITED.labels("auth").inc()
        raise errors.too_many_auth_failures(blocked)
    token = bearer_token(scope["headers"])
    if token is None:
        raise errors.missing_key()
    key = rendered.authenticate(token)
    if key is None:
        await limiter.record_auth_failure(client)
        raise errors.invalid_key(token)
    return key


async def charge(key: ApiKey, scope: dict[str, Any], limiter: RateLimiter) -> Headers:
    """Count one request against the key's limit; returns the rate-limit headers its answer carries, or
    raises the 429 (with them). Records the key's name in the scope for the access log."""
    scope["modeldex.key"] = key.name
    verdict = await limiter.for_key(key.name, key.rate_limit)
    if verdict is None:
        return []
    if not verdict.allowed:
        metrics.RATE_LIMITED.labels("key").inc()
        raise errors.rate_limited(key.name, verdict)
    return verdict.headers()
