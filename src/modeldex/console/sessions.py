"""Console sessions: a random secret in an HttpOnly cookie, its SHA-256 and a CSRF token in the catalog
database. Every worker and replica reads the same rows, so a sign-in on one holds on all, and a sign-out
(the row deleted) ends the session everywhere at once. Nothing secret reaches the browser's storage.

A session made with an API key acts as that key for as long as it is an active admin key: revoking the
key (or lowering its scope) ends its sessions at the next request. A session made with an identity
provider's token keeps the token sealed (AES-GCM, under a key derived from the cookie's secret, which only
the browser holds: the database alone cannot open it), and every request resolves it again as the API
would: the session ends at the next request once the token would no longer be honoured there (expired,
its signing key gone from the provider's set, its issuer removed, no longer admin), or after `MAX_AGE_S`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modeldex.catalog.callers import Caller
from modeldex.catalog.keys import KeyTable, lookup_id_of

MAX_AGE_S = 8 * 3600
COOKIE = "modeldex_console"


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: never the cookie's secret."""

    id_hash: str
    csrf: str
    credential: str  # "api_key", or the kind of token ("token")
    subject: str  # an API key's lookup id; a token caller's name
    name: str  # who, for the page's header
    rate_limit: str | None  # a token caller's limit (an API key's is read from the key table)
    created_at: float
    expires_at: float
    sealed_token: str | None = None  # a token session's token, sealed with the cookie's secret (_seal)


class SessionStore(Protocol):
    """Where sessions are kept (store/ implements it beside the catalog)."""

    def create_session(self, record: dict[str, Any]) -> None:
        """Store a session (a SessionRecord's fields)."""
        ...

    def find_session(self, id_hash: str, now: float) -> dict[str, Any] | None:
        """The fields of the unexpired session with that hash, if any."""
        ...

    def end_session(self, id_hash: str) -> None: ...

    def purge_sessions(self, now: float) -> int:
        """Remove expired sessions; returns how many."""
        ...


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _sealing_key(secret: str) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=b"modeldex console session token").derive(secret.encode()))


def _seal(secret: str, id_hash: str, token: str) -> str:
    nonce = os.urandom(12)
    return base64.urlsafe_b64encode(nonce + _sealing_key(secret).encrypt(nonce, token.encode(), id_hash.encode())
                                    ).decode()


def _unseal(secret: str, id_hash: str, sealed: str | None) -> str | None:
    if not sealed:
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed)
        return _sealing_key(secret).decrypt(raw[:12], raw[12:], id_hash.encode()).decode()
    except (ValueError, InvalidTag):
        return None


def token_expiry(token: str) -> float | None:
    """A JWT's `exp` claim (the token was verified by the caller resolution already), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class Sessions:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def start(self, caller: Caller, token: str, now: float | None = None) -> tuple[str, SessionRecord]:
        """A new session for an admin `caller` who presented `token`; returns the cookie's secret and the
        record. An API key is not kept (its lookup id is); a token is kept only sealed."""
        now = time.time() if now is None else now
        expires = now + MAX_AGE_S
        secret = secrets.token_urlsafe(32)
        id_hash = _hash(secret)
        sealed = None
        if caller.credential == "api_key":
            subject = lookup_id_of(token) or ""
        else:
            subject = caller.name
            sealed = _seal(secret, id_hash, token)
            lapses = token_expiry(token)
            if lapses is not None:
                expires = min(expires, lapses)
        record = SessionRecord(id_hash, secrets.token_urlsafe(32), caller.credential, subject, caller.name,
                               None if caller.credential == "api_key" else caller.rate_limit, now, expires, sealed)
        self.store.purge_sessions(now)
        self.store.create_session(dataclasses.asdict(record))
        return secret, record

    def find(self, secret: str | None, keys: KeyTable, now: float | None = None
             ) -> tuple[SessionRecord, Caller | str] | None:
        """The session a cookie stands for, and the caller it acts as: for an API key's session, the key's
        caller; for a token's, the token, which the caller must resolve again (it may lapse in ways only
        that resolution knows). None when there is no session (any more): signed out, expired, its key
        revoked or made a read key, or its token not to be opened with this secret."""
        if not secret:
            return None
        now = time.time() if now is None else now
        found = self.store.find_session(_hash(secret), now)
        if found is None:
            return None
        record = SessionRecord(**found)
        if record.credential == "api_key":
            caller = keys.caller_by_lookup(record.subject)
            if caller is None or not caller.is_admin:
                return None  # the key was revoked or made a read key since
            return record, caller
        token = _unseal(secret, record.id_hash, record.sealed_token)
        return None if token is None else (record, token)

    def end(self, secret: str | None) -> None:
        if secret:
            self.store.end_session(_hash(secret))


def csrf_matches(record: SessionRecord, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(record.csrf.encode(), sent.encode())
