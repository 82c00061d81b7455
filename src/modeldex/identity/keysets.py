"""Issuers' signing keys: fetched in the background, cached as their provider's cache headers allow, and
kept while the provider is down.

A request never waits on the network here, except the one that brings a token whose `kid` is not in the
set (the provider rotated its keys) or whose issuer has no keys yet: that one waits for one refresh, at
most one per `unknown_kid_interval` per issuer, so a flood of made-up `kid`s costs the provider one
request per interval, not one per token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from modeldex.catalog.issuers import Issuer, algorithms_of

log = logging.getLogger("modeldex.identity")

MAX_DOCUMENT_BYTES = 1_000_000  # a key set or discovery document larger than this is refused
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an issuer's keys come from. Issuers with the same source share one key set."""

    issuer: str
    jwks_url: str | None
    public_key: str | None

    @classmethod
    def of(cls, issuer: Issuer) -> Source:
        return cls(issuer.issuer, issuer.jwks_url, issuer.public_key)


@dataclass(frozen=True, slots=True)
class Key:
    """One verification key: the cryptography key object, and the algorithm its JWK is limited to."""

    kid: str
    key: Any
    algorithm: str | None

    def suits(self, algorithm: str) -> bool:
        """Whether this key verifies `algorithm`: its JWK's `alg`, if any, and its type (PyJWT raises
        TypeError, not an error of its own, for some mismatches: this refuses them first)."""
        return (self.algorithm is None or self.algorithm == algorithm) and algorithm in algorithms_of(self.key)


@dataclass(frozen=True, slots=True)
class KeySet:
    # By kid (a static public key, and JWKs without one, under ""): usually one key each, but a provider may
    # publish several under one kid (the same RSA key for RS256 and PS256; an RSA and an EC key) or none.
    keys: Mapping[str, tuple[Key, ...]]
    fetched_at: float
    static: bool = False  # a configured public key: whatever the token's `kid`, this is the key

    def named(self, kid: str | None) -> tuple[Key, ...]:
        """The keys a token naming `kid` may be signed with, whatever their algorithm: none when the set
        lacks that kid (a rotation the set has not caught up with)."""
        if self.static:
            return self.keys[""]
        if kid is None:  # a provider may leave `kid` out: then any key of the set
            return tuple(key for keys in self.keys.values() for key in keys)
        return self.keys.get(kid, ())

    def find(self, kid: str | None, algorithm: str) -> Key | None:
        """The key that verifies a token naming `kid` and `algorithm`: among the keys of that kid (without
        one: of the whole set), the one for that algorithm; a token naming no kid must leave only one."""
        suitable = [key for key in self.named(kid) if key.suits(algorithm)]
        if kid is None and not self.static:
            return suitable[0] if len(suitable) == 1 else None
        return suitable[0] if suitable else None


@dataclass(slots=True)
class Holder:
    """The key set of one source as it stands, and when to refresh it."""

    source: Source
    keyset: KeySet | None = None
    next_refresh: float = 0.0
    last_attempt: float = float("-inf")
    last_error: str | None = None
    jwks_uri: str | None = None  # from discovery, remembered between refreshes
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def discovery_url(issuer: str) -> str:
    """Where OpenID Connect discovery finds an issuer's configuration (and so its `jwks_uri`)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def max_age(cache_control: str | None) -> int | None:
    """The `max-age` of a Cache-Control header (`no-store`/`no-cache`: 0), or None."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


def parse_jwks(document: Any, previous: KeySet | None, now: float) -> KeySet:
    """The signing keys of a JWKS document. Keys unchanged since `previous` are the same objects, so
    tokens verified with them stay cached; keys this code cannot use (encryption keys, unknown types)
    are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no \"keys\" list)")  # noqa: TRY004  (caught as bad input)
    keys: dict[str, tuple[Key, ...]] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "d" in entry:
            continue  # not for signatures (or a private key, which no provider should publish)
        kid = entry.get("kid")
        kid = kid if isinstance(kid, str) else ""
        try:
            made = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        algorithm = entry.get("alg") if isinstance(entry.get("alg"), str) else None
        olds = previous.keys.get(kid, ()) if previous is not None else ()
        same = [old for old in olds if old.algorithm == algorithm and _same_key(old.key, made.key)]
        keys[kid] = (*keys.get(kid, ()), same[0] if same else Key(kid, made.key, algorithm))
    if not keys:
        raise ValueError("the key set holds no usable signing key")
    return KeySet(keys, now)


def _same_key(a: Any, b: Any) -> bool:
    if type(a) is not type(b):  # (an Ed25519 key and an RSA key under one kid: public_bytes(Raw) raised)
        return False
    try:
        return bool(a.public_numbers() == b.public_numbers())
    except AttributeError:  # Ed25519/Ed448 keys have no numbers: compare their raw bytes
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return bool(a.public_bytes(Encoding.Raw, PublicFormat.Raw) == b.public_bytes(Encoding.Raw, PublicFormat.Raw))


def static_keyset(public_key: str, now: float) -> KeySet:
    return KeySet({"": (Key("", load_pem_public_key(public_key.encode()), None),)}, now, static=True)


class KeySets:
    """The key sets of the issuers in use, refreshed by a background thread.

    Refresh intervals follow the provider's `Cache-Control: max-age`, bounded to [min_interval,
    max_interval] (without one: max_interval). `max_interval` is the bound on how long a key removed
    from the provider's set keeps verifying tokens. A failed refresh keeps the last good set and is
    retried after `retry_interval`.
    """

    def __init__(self, *, timeout: float = 3.0, min_interval: float = 30.0, max_interval: float = 300.0,
                 retry_interval: float = 10.0, unknown_kid_interval: float = 10.0) -> None:
        self.timeout = timeout
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self.unknown_kid_interval = unknown_kid_interval
        self._holders: dict[Source, Holder] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)

    # --- what requests use: no I/O -------------------------------------------------------------------

    def holder(self, issuer: Issuer) -> Holder | None:
        return self._holders.get(Source.of(issuer))

    def track(self, issuers: Iterable[Issuer]) -> None:
        """Keep the key sets of exactly these issuers; new ones are fetched at once, in the background."""
        wanted = {Source.of(issuer) for issuer in issuers}
        with self._lock:
            holders = {source: self._holders.get(source) or Holder(source) for source in wanted}
            for holder in holders.values():
                if holder.source.public_key is not None and holder.keyset is None:
                    try:
                        holder.keyset = static_keyset(holder.source.public_key, time.time())
                        holder.next_refresh = float("inf")
                    except (ValueError, TypeError) as exc:
                        holder.last_error = f"the configured public key cannot be read: {exc}"
            self._holders = holders  # replaced, never changed: readers need no lock
        if any(h.keyset is None and h.source.public_key is None for h in holders.values()):
            self._start()
            self._wake.set()

    # --- refreshing --------------------------------------------------------------------------------------

    def may_refresh(self, holder: Holder) -> bool:
        """Whether `refresh_now` could fetch (or is fetching) now: no thread is started for nothing."""
        return holder.source.public_key is None and (
            holder.lock.locked() or time.monotonic() - holder.last_attempt >= self.unknown_kid_interval)

    def refresh_now(self, holder: Holder, force: bool = False) -> KeySet | None:
        """Refresh `holder`'s set now, for a token whose key it lacks: at most one fetch per
        `unknown_kid_interval` (`force`: an operator asking, not a request); callers arriving during a
        fetch wait for that one. Blocks (run in a thread)."""
        if holder.source.public_key is not None:
            return holder.keyset
        asked = time.monotonic()
        with holder.lock:
            if holder.last_attempt >= asked or (not force and asked - holder.last_attempt < self.unknown_kid_interval):
                return holder.keyset  # refreshed meanwhile, or too recently: no new request
            self._fetch(holder)
        return holder.keyset

    def _fetch(self, holder: Holder) -> None:
        """One refresh (holder.lock held): discovery if needed, then the key set."""
        holder.last_attempt = time.monotonic()
        holder.fetches += 1
        source = holder.source
        try:
            url = source.jwks_url or holder.jwks_uri
            if url is None:
                discovery, _ = self._get_json(discovery_url(source.issuer))
                named = discovery.get("issuer") if isinstance(discovery, dict) else None
                if named != source.issuer:  # exactly, as tokens' `iss` is: a trailing slash differs
                    raise ValueError(f"the discovery document names another issuer ({repr(named)[:100]}, "
                                     f"not {source.issuer!r})")
                jwks_uri = discovery.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://")):
                    raise ValueError("the discovery document has no jwks_uri")
                url = holder.jwks_uri = jwks_uri
            document, cache_control = self._get_json(url)
            keyset = parse_jwks(document, holder.keyset, time.time())
        except (httpx.HTTPError, ValueError) as exc:
            holder.last_error = str(exc) or type(exc).__name__
            holder.jwks_uri = None if source.jwks_url is None else holder.jwks_uri  # discover again
            holder.next_refresh = time.monotonic() + self.retry_interval
            log.warning("identity provider %s: key set refresh failed (%s); %s", source.issuer,
                        holder.last_error, "keeping the last good set" if holder.keyset else "no keys yet")
            return
        age = max_age(cache_control)
        interval = self.max_interval if age is None else min(max(age, self.min_interval), self.max_interval)
        holder.keyset, holder.last_error = keyset, None
        holder.next_refresh = time.monotonic() + interval

    def _get_json(self, url: str) -> tuple[Any, str | None]:
        """The JSON document at `url`, read as it arrives: given up past MAX_DOCUMENT_BYTES (a provider
        answering 300 MB had them all read into memory first) or past `timeout` in all (httpx's timeouts
        are per read: a body trickling in a byte a second held the refresh, and every refresh after it,
        for as long as it trickled)."""
        deadline = time.monotonic() + self.timeout
        with self._client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise ValueError(f"{url} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"{url} took more than {self.timeout:g} s to answer")
            cache_control = response.headers.get("cache-control")
        try:
            return json.loads(body), cache_control  # as httpx's `json()` reads it (UTF-8, -16, -32, a BOM)
        except ValueError:
            raise ValueError(f"{url} did not answer JSON") from None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="modeldex-keysets", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for holder in list(self._holders.values()):
                if holder.next_refresh <= now and holder.lock.acquire(blocking=False):
                    try:
                        self._fetch(holder)
                    finally:
                        holder.lock.release()
            upcoming = [h.next_refresh for h in self._holders.values()]
            wait = min(upcoming, default=60.0) - time.monotonic()
            self._wake.wait(timeout=min(max(wait, 0.05), 60.0))
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        self._client.close()
