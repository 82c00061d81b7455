"""Tokens from trusted issuers as a kind of credential (`catalog.callers.Credentials`).

A verified token is cached by its SHA-256 until it expires, so a client repeating its token costs a hash
and a lookup, not a signature check (RS256 verification: ~40 µs; ES256: ~60 µs; the lookup: ~1 µs). A
cached token is only as good as what vouched for it: the issuers of the catalog version it was checked
against (any catalog change, such as removing the issuer or a group its policy names, checks it again)
and the key that signed it (gone from its provider's key set: refused from the next refresh on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from modeldex.catalog.callers import Caller
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.policy import AccessPolicy
from modeldex.identity.keysets import Holder, Key, KeySets
from modeldex.identity.tokens import (
    Refused,
    group_values,
    looks_like_jwt,
    peek,
    scope_and_policy,
    shown,
    subject,
    verify,
)

log = logging.getLogger("modeldex.identity")

CREDENTIAL = "jwt"  # Caller.credential: the change feed's actor reads `jwt:ISSUER:SUBJECT`
MAX_CACHED_TOKENS = 10_000
MAX_POLICIES = 1_000
# The issuers (by name) and group names of the catalog version being served.
Snapshot = tuple[Mapping[str, Issuer], Collection[str]]


class _Verified:
    """A verified token, and what must still hold for it to stand."""

    __slots__ = ("algorithm", "caller", "expires_at", "holder", "issuers", "key", "kid")

    def __init__(self, issuers: Mapping[str, Issuer], holder: Holder, key: Key, kid: str | None, algorithm: str,
                 expires_at: float) -> None:
        self.issuers = issuers
        self.holder = holder
        self.key = key
        self.kid = kid
        self.algorithm = algorithm
        self.expires_at = expires_at
        self.caller: Caller | None = None

    def valid(self) -> bool:
        keyset = self.holder.keyset
        return (time.time() < self.expires_at and keyset is not None
                and keyset.find(self.kid, self.algorithm) is self.key)


class IssuerTokens:
    """The caller a token from a configured issuer stands for, or None (then the next credential, or 401)."""

    def __init__(self, snapshot: Callable[[], Snapshot], keysets: KeySets | None = None,
                 max_cached: int = MAX_CACHED_TOKENS) -> None:
        self._snapshot = snapshot
        self.keysets = keysets if keysets is not None else KeySets()
        self._max_cached = max_cached
        self._cache: dict[bytes, _Verified] = {}
        self._tracked: Mapping[str, Issuer] | None = None
        self._by_iss: dict[str, list[Issuer]] = {}
        self._policies: dict[AccessPolicy, AccessPolicy] = {}  # equal policies share one object

    def prefetch(self) -> None:
        """Start fetching the key sets of issuers the catalog gained, before their first token arrives
        (called after each catalog check: an identity check when nothing changed)."""
        issuers, _groups = self._snapshot()
        if issuers is not self._tracked:
            self._track(issuers)

    def might_accept(self, token: str) -> bool:
        """Only a JWT could ever be accepted (any other bearer is refused now and always)."""
        return looks_like_jwt(token)

    def caller(self, token: str) -> Caller | None:
        if not looks_like_jwt(token):
            return None
        issuers, groups = self._snapshot()
        if not issuers:
            return None
        found = self._cache.get(hashlib.sha256(token.encode()).digest())
        if found is not None and found.issuers is issuers and found.valid():
            return found.caller
        outcome = self._check(token, issuers, groups)
        if isinstance(outcome, Refused):
            if not outcome.refreshable:  # else `second_chance` follows, and says how it ended
                log.info("bearer token refused: %s", outcome.reason)
            return None
        return outcome

    async def second_chance(self, token: str) -> Caller | None:
        """For a token `caller` refused: if its issuer's key set lacks its key (a rotation, or no keys
        yet), refresh the set (rate-limited; bounded by the fetch timeout) and check again."""
        if not looks_like_jwt(token):
            return None
        issuers, groups = self._snapshot()
        if not issuers:
            return None
        holders = self._wanting_refresh(token, issuers)
        for holder in holders:
            if self.keysets.may_refresh(holder):
                with contextlib.suppress(TimeoutError):  # the fetch's own timeout ends it before this
                    await asyncio.wait_for(asyncio.to_thread(self.keysets.refresh_now, holder),
                                           timeout=2 * self.keysets.timeout + 1)
        if not holders:
            return None  # `caller` said why already
        outcome = self._check(token, issuers, groups)
        if isinstance(outcome, Refused):
            log.info("bearer token refused: %s", outcome.reason)
            return None
        return outcome

    def explain(self, token: str) -> dict[str, Any]:
        """Whether the token would be accepted, as whom, with which scope and policy, or why not. Blocks
        for a key-set refresh when one is needed (admin tools only)."""
        issuers, groups = self._snapshot()
        outcome = self._check(token, issuers, groups)
        if isinstance(outcome, Refused) and outcome.refreshable:
            for holder in self._wanting_refresh(token, issuers):
                self.keysets.refresh_now(holder, force=True)
            outcome = self._check(token, issuers, groups)
        report: dict[str, Any] = {}
        try:
            peeked = peek(token)
            report["header"] = {k: v for k, v in peeked.header.items() if k in ("alg", "kid", "typ")}
            report["claims"] = {k: v for k, v in peeked.claims.items()
                                if k in ("iss", "sub", "aud", "exp", "nbf", "iat", "azp", "client_id")}
        except Refused:
            pass
        if isinstance(outcome, Refused):
            return {"accepted": False, "reason": outcome.reason, **report}
        issuer_name = outcome.name.split(":", 1)[0]
        return {"accepted": True, "issuer": issuer_name, "caller": outcome.name, "actor": outcome.actor,
                "scope": str(outcome.scope), "policy": outcome.policy.document(),
                "rate_limit": outcome.rate_limit, **report}

    # --- checking ----------------------------------------------------------------------------------------

    def _track(self, issuers: Mapping[str, Issuer]) -> None:
        by_iss: dict[str, list[Issuer]] = {}
        for issuer in issuers.values():
            by_iss.setdefault(issuer.issuer, []).append(issuer)
        self.keysets.track(issuers.values())
        self._by_iss, self._tracked = by_iss, issuers

    def _candidates(self, claims: dict[str, Any], issuers: Mapping[str, Issuer]) -> list[Issuer]:
        if issuers is not self._tracked:
            self._track(issuers)
        iss = claims.get("iss")
        candidates = self._by_iss.get(iss) if isinstance(iss, str) else None
        if not candidates:
            raise Refused(f"no configured issuer has iss {shown(iss)}")
        return candidates

    def _wanting_refresh(self, token: str, issuers: Mapping[str, Issuer]) -> list[Holder]:
        try:
            peeked = peek(token)
            candidates = self._candidates(peeked.claims, issuers)
        except Refused:
            return []
        algorithm = peeked.header.get("alg")
        holders = [self.keysets.holder(issuer) for issuer in candidates if algorithm in issuer.algorithms]
        # No keys yet, or a `kid` the set lacks (a token without one is no sign of a rotation).
        return [h for h in holders if h is not None and (
            h.keyset is None or (peeked.kid is not None and not h.keyset.named(peeked.kid)))]

    def _check(self, token: str, issuers: Mapping[str, Issuer], groups: Collection[str]) -> Caller | Refused:
        try:
            peeked = peek(token)
            candidates = self._candidates(peeked.claims, issuers)
        except Refused as refused:
            return refused
        first: Refused | None = None
        for issuer in candidates:  # issuers sharing one `iss` differ by audience: the first that fits
            holder = self.keysets.holder(issuer)
            keyset = holder.keyset if holder is not None else None
            try:
                claims = verify(token, peeked, issuer, keyset)
                name = f"{issuer.name}:{subject(claims, issuer)}"
                scope, policy = scope_and_policy(group_values(claims, issuer), issuer, groups)
            except Refused as refused:
                first = first or refused
                continue
            assert holder is not None and keyset is not None
            algorithm = peeked.header["alg"]  # one the issuer accepts: `verify` checked
            key = keyset.find(peeked.kid, algorithm)
            assert key is not None
            if len(self._policies) >= MAX_POLICIES:
                self._policies = {}
            policy = self._policies.setdefault(policy, policy)
            verified = _Verified(issuers, holder, key, peeked.kid, algorithm, float(claims["exp"]))
            verified.caller = Caller(name, scope, policy, issuer.rate_limit, credential=CREDENTIAL,
                                     still_valid=verified.valid)
            if len(self._cache) >= self._max_cached:
                # (a copy: `explain` runs in a thread, beside requests)
                self._cache = {digest: v for digest, v in list(self._cache.items()) if v.valid()}
                if len(self._cache) >= self._max_cached // 2:
                    self._cache = {}
            self._cache[hashlib.sha256(token.encode()).digest()] = verified
            return verified.caller
        assert first is not None
        return first

    def close(self) -> None:
        self.keysets.close()
