"""API keys: how secrets are made, stored (as a hash only) and checked (in constant time).

A secret looks like `sk-mdx-<lookup><secret>`: 12 characters that find the stored record, then 40 random
characters (about 238 bits). Only the SHA-256 of the whole secret is stored. A fast hash is the right one
here: the secrets are random and long, so there is nothing for a slow password hash to protect, and
the check runs on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass

from modeldex.catalog.callers import Caller, Scope
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy

KEY_PREFIX = "sk-mdx-"
_LOOKUP_LENGTH = 12
_SECRET_LENGTH = 40
KEY_LENGTH = len(KEY_PREFIX) + _LOOKUP_LENGTH + _SECRET_LENGTH
_ALPHABET = string.ascii_letters + string.digits
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# Compared against when no record matches, so an unknown key costs the same as a wrong one.
_DUMMY_HASH = hashlib.sha256(b"modeldex-no-such-key").hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the secret itself."""

    name: str
    scope: Scope
    lookup_id: str
    secret_hash: str
    created_at: int
    revoked_at: int | None = None
    policy: AccessPolicy = ALL_MODELS
    revision: int = 1
    rate_limit: str | None = None  # requests per period, e.g. "600/m"; None: the server's default

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def redacted(self) -> str:
        """What `keys list` shows: enough to tell keys apart, nothing that grants access."""
        return f"{KEY_PREFIX}{self.lookup_id}..."

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN

    def document(self) -> dict[str, object]:
        """The key as the admin API and the change feed show it: never the secret, nor its hash."""
        return {
            "name": self.name,
            "scope": self.scope.value,
            "key": self.redacted,
            "policy": self.policy.document(),
            "rate_limit": self.rate_limit,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def validate_key_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "name",
            "name: a key name must be 1 to 64 characters: letters, digits, '.', '_', '@', '-', "
            "starting with a letter or digit",
        )
    return name


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise InvalidInput("scope", "scope: must be 'read' or 'admin'") from None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_key(name: str, scope: Scope, policy: AccessPolicy = ALL_MODELS, rate_limit: str | None = None
            ) -> tuple[ApiKey, str]:
    """Make a key record and its secret. The secret is returned once and never stored."""
    validate_key_name(name)
    lookup_id = "".join(secrets.choice(_ALPHABET) for _ in range(_LOOKUP_LENGTH))
    secret = KEY_PREFIX + lookup_id + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LENGTH))
    record = ApiKey(
        name=name,
        scope=scope,
        lookup_id=lookup_id,
        secret_hash=hash_secret(secret),
        created_at=int(time.time()),
        policy=policy,
        rate_limit=rate_limit,
    )
    return record, secret


def lookup_id_of(secret: str) -> str | None:
    """The part of a presented secret that finds its record, or None if it cannot be one of ours."""
    if len(secret) != KEY_LENGTH or not secret.startswith(KEY_PREFIX):
        return None
    return secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_LENGTH]


def verify(secret: str, record: ApiKey | None) -> bool:
    """Constant-time check of a presented secret against a record (or against nothing)."""
    expected = record.secret_hash if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hash_secret(secret), expected)
    return matches and record is not None and record.active


class KeyTable:
    """The active keys at one catalog version, as credentials: a presented secret is parsed and hashed once,
    and its caller was made when the table was (once per version, not per request)."""

    __slots__ = ("_by_lookup", "_policies", "policies")

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        # Keys with equal policies share one policy object, so a view can be found by identity.
        self._policies: dict[AccessPolicy, AccessPolicy] = {}
        self._by_lookup: dict[str, tuple[ApiKey, Caller]] = {}
        for key in keys:
            if key.active:
                policy = self._policies.setdefault(key.policy, key.policy)
                self._by_lookup[key.lookup_id] = (key, Caller(key.name, key.scope, policy, key.rate_limit,
                                                              instance=key.lookup_id))
        self.policies = frozenset(self._policies)

    def holds(self, policy: AccessPolicy) -> bool:
        """Whether `policy` is the very object this table's callers share (it lives as long as the table)."""
        return self._policies.get(policy) is policy

    def caller(self, token: str) -> Caller | None:
        """The caller whose key `token` is, in constant time whether or not a record matches."""
        lookup_id = lookup_id_of(token)
        entry = self._by_lookup.get(lookup_id) if lookup_id is not None else None
        if entry is None:
            verify(token, None)  # the same work as for a wrong secret: no timing difference
            return None
        return entry[1] if verify(token, entry[0]) else None

    def caller_by_lookup(self, lookup_id: str) -> Caller | None:
        """The caller of the active key with that lookup id (a console session made with it), if any."""
        entry = self._by_lookup.get(lookup_id)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._by_lookup)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyTable) and self._by_lookup == other._by_lookup

    __hash__ = None  # type: ignore[assignment]  # compared (tests), never hashed


def mask(secret: str) -> str:
    """A presented key as it may appear in an error message: its ends only. OpenAI's message has the same
    words but shows more (the first 8 characters, a star for every hidden one, short keys whole); modeldex
    shows 3, at most 24 stars and the last 4, and no short key: less of a secret someone mistyped."""
    shown_head, shown_tail = 3, 4
    if secret.isascii() and secret.isprintable():  # the usual case, checked in C (the loop costs ~3 µs)
        printable = secret
    else:
        printable = "".join(ch if ch.isascii() and ch.isprintable() else "*" for ch in secret)
    if len(printable) < 16:
        return "*" * min(len(printable), 8)
    stars = "*" * min(len(printable) - shown_head - shown_tail, 24)
    return printable[:shown_head] + stars + printable[-shown_tail:]
