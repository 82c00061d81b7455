"""Who is calling: the request's API key, and what it may still do under its rate limit.

Shared by the Models hot path and the admin API, so both count failed keys and requests alike.
"""

from __future__ import annotations

from modeldex.api import errors
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.keys import ApiKey
from modeldex.ops import metrics
from modeldex.ops.ratelimit import RateLimiter

Headers = list[tuple[str, str]]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when no usable one was sent."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def known_key(rendered: RenderedCatalog, authorization: str | None) -> ApiKey | None:
    """The active key the header names, or None: the hot path's whole check when all goes well."""
    token = bearer_token(authorization)
    return rendered.authenticate(token) if token is not None else None


async def authenticate(rendered: RenderedCatalog, authorization: str | None, client: str,
                       limiter: RateLimiter) -> ApiKey:
    """The key of the request (any scope), or the right 401/429.

    Failed attempts count against the client address, which is refused (429) once it used up its
    allowance, before any key is checked: guessing keys at speed gets nowhere."""
    if limiter.suspect(client):
        blocked = await limiter.address_blocked(client)
        if blocked is not None:
            metrics.RATE_LIMITED.labels("auth").inc()
            raise errors.too_many_auth_failures(blocked)
    token = bearer_token(authorization)
    if token is None:
        raise errors.missing_key()
    key = rendered.authenticate(token)
    if key is None:
        await limiter.record_auth_failure(client)
        raise errors.invalid_key(token)
    return key


async def charge(key: ApiKey, limiter: RateLimiter) -> Headers:
    """Count one request against the key's limit; returns the rate-limit headers its answer carries, or
    raises the 429 (with them)."""
    verdict = await limiter.for_key(key.name, key.rate_limit)
    if verdict is None:
        return []
    if not verdict.allowed:
        metrics.RATE_LIMITED.labels("key").inc()
        raise errors.rate_limited(key.name, verdict)
    return verdict.headers()
