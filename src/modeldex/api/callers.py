"""Who is calling: the one place where a request's credential becomes a `Caller`, for every route (the
Models hot path, the admin API, `/metrics`, and whatever comes next).

The bearer token is parsed and checked once. API keys come from the key table of the catalog version
being served; another kind of credential (tokens from an identity provider) is one more `Credentials`
given to `Callers`, and no route changes. Failed attempts count against the client address, which is
refused (429) once it used up its allowance, before any key is looked at: guessing keys at speed gets
nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from modeldex.api import errors
from modeldex.catalog.callers import Caller, Credentials, RefreshingCredentials
from modeldex.ops import metrics
from modeldex.ops.ratelimit import RateLimiter

Headers = list[tuple[str, str]]
MEMO_LIMIT = 10_000  # accepted Authorization headers remembered per key table
# Only headers up to this long are remembered: a key's is 66 characters ("Bearer sk-mdx-..."). Headers of
# up to 16 KB each, different every time (padded, or made up), filled the memo with ~300 MB per worker in
# 2 s, from a client with no key at all (refused, and blocked, it still was remembered).
MAX_REMEMBERED_HEADER = 256


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when no usable one was sent."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class Callers:
    def __init__(self, limiter: RateLimiter, other_credentials: Sequence[Credentials] = ()) -> None:
        self.limiter = limiter
        self._others = tuple(other_credentials)  # tried after the key table, in order
        # Those that may accept a refused token after a wait (a key-set refresh): asked in `resolve`.
        self._refreshing: tuple[RefreshingCredentials, ...] = tuple(
            c for c in self._others if hasattr(c, "second_chance"))  # type: ignore[misc]
        # Whether any other kind could ever accept a token (identity providers' take JWTs only): a token
        # none could is refused as when there are no others, remembered and answered without a wait.
        checks = [getattr(c, "might_accept", None) for c in self._others]
        self._might_accept: Callable[[str], bool] | None = (
            None if None in checks else lambda token: any(check(token) for check in checks))  # type: ignore[misc]
        # Authorization headers already checked against the key table in use, and whom they stand for:
        # a known key is then one dict lookup, not a parse, a SHA-256 and a comparison (~1 µs, measured).
        # Only accepted headers are kept, at most a few per key, and all are forgotten when the table
        # changes (a revoked key is refused from the next catalog version on, as without the memo).
        self._memo_table: Credentials | None = None
        self._memo: dict[str, Caller] = {}
        # Refused headers too, when no other kind of credential could accept them later (a token from an
        # identity provider may become valid): a client repeating a bad key costs one lookup, not a hash.
        self._refused: dict[str, str] = {}

    def identify(self, keys: Credentials, authorization: str | None, also: Credentials | None = None
                 ) -> Caller | str | None:
        """The caller the header's token stands for; else the token itself (refused), or None (no token).
        Never suspends, and is the whole check when all goes well. `also`: a credential only this route
        accepts (the metrics token on /metrics)."""
        if keys is self._memo_table and authorization is not None:
            known = self._memo.get(authorization)
            if known is not None:
                return known
            if also is None:
                refused = self._refused.get(authorization)
                if refused is not None:
                    return refused
        token = bearer_token(authorization)
        if token is None:
            return None
        caller = keys.caller(token)
        if caller is not None:
            self._remember(keys, authorization or "", caller)
            return caller
        for credentials in (*self._others, also) if also is not None else self._others:
            caller = credentials.caller(token)
            if caller is not None:
                return caller
        if also is None and (not self._others or not self._another_chance(token)):
            self._remember(keys, authorization or "", token)
        return token

    def _remember(self, keys: Credentials, authorization: str, outcome: Caller | str) -> None:
        if len(authorization) > MAX_REMEMBERED_HEADER:
            return
        if keys is not self._memo_table or len(self._memo) + len(self._refused) >= MEMO_LIMIT:
            self._memo_table, self._memo, self._refused = keys, {}, {}
        if isinstance(outcome, Caller):
            self._memo[authorization] = outcome
        else:
            self._refused[authorization] = outcome

    def _another_chance(self, token: str) -> bool:
        return self._might_accept is None or self._might_accept(token)

    async def resolve(self, identified: Caller | str | None, client: str) -> Caller:
        """The caller `identify` found, or the right 401 or 429 (counting a failed attempt)."""
        if client in self.limiter.suspects:
            blocked = await self.limiter.address_blocked(client)
            if blocked is not None:
                metrics.RATE_LIMITED.labels("auth").inc()
                raise errors.too_many_auth_failures(blocked)
        if identified is None:
            raise errors.missing_key()
        if isinstance(identified, str):
            if self._another_chance(identified):
                for credentials in self._refreshing:
                    caller = await credentials.second_chance(identified)
                    if caller is not None:
                        return caller
            await self.limiter.record_auth_failure(client)
            raise errors.invalid_key(identified)
        return identified

    def refusal_now(self, identified: Caller | str | None, client: str) -> errors.ApiError | None:
        """The 401 for a missing or refused credential when `resolve` would need no wait to give it (no
        failed-authentication limit, so nothing to count or check), else None."""
        if isinstance(identified, Caller) or self.limiter.auth_failure_limit is not None or (
                identified is not None and self._refreshing and self._another_chance(identified)):
            return None
        return errors.missing_key() if identified is None else errors.invalid_key(identified)

    async def caller(self, keys: Credentials, authorization: str | None, client: str,
                     also: Credentials | None = None) -> Caller:
        """Who is calling, or the 401/429 that says why not: `identify`, then `resolve` unless all is well."""
        identified = self.identify(keys, authorization, also)
        if isinstance(identified, Caller) and client not in self.limiter.suspects:
            return identified
        return await self.resolve(identified, client)

    def limited(self, caller: Caller) -> bool:
        """Whether the caller's requests are counted at all (unlimited ones never wait on a bucket)."""
        return not caller.exempt and self.limiter.limits(caller.rate_limit)

    async def charge(self, caller: Caller) -> Headers:
        """Count one request against the caller's limit; returns the rate-limit headers its answer carries,
        or raises the 429 (with them)."""
        verdict = await self.limiter.for_caller(caller)
        if verdict is None:
            return []
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels("key").inc()
            raise errors.rate_limited(caller.name, verdict)
        return verdict.headers()
