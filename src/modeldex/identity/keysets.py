"""Issuers' signing keys: fetched in the background, cached as their provider's cache headers allow, and
kept while the provider is down.

A request never waits on the network here, except the one that brings a token whose `kid` is not in the
set (the provider rotated its keys) or whose issuer has no keys yet: that one waits for one refresh, at
most one per `unknown_kid_interval` per issuer, so a flood of made-up `kid`s costs the provider one
request per interval, not one per token.
"""

from __future__ import annotations

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

from modeldex.catalog.issuers import Issuer

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


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: Mapping[str, Key]  # by kid; a static public key is under ""
    fetched_at: float
    static: bool = False  # a configured public key: whatever the token's `kid`, this is the key

    def find(self, kid: str | None) -> Key | None:
        if self.static:
            return self.keys.get("")
        if kid is None:  # a provider with a single key may leave `kid` out
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)


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
    keys: dict[str, Key] = {}
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
        old = previous.keys.get(kid) if previous is not None else None
        same = old is not None and old.algorithm == algorithm and _same_key(old.key, made.key)
        keys[kid] = old if same and old is not None else Key(kid, made.key, algorithm)
    if not keys:
        raise ValueError("the key set holds no usable signing key")
    return KeySet(keys, now)


def _same_key(a: Any, b: Any) -> bool:
    try:
        return bool(a.public_numbers() == b.public_numbers())
    except AttributeError:  # Ed25519/Ed448 keys have no numbers: compare their raw bytes
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return bool(a.public_bytes(Encoding.Raw, PublicFormat.Raw) == b.public_bytes(Encoding.Raw, PublicFormat.Raw))


def static_keyset(public_key: str, now: float) -> KeySet:
    return KeySet({"": Key("", load_pem_public_key(public_key.encode()), None)}, now, static=True)


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
                if not isinstance(discovery, dict) or discovery.get("issuer") != source.issuer:
                    raise ValueError("the discovery document names another issuer")
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
        response = self._client.get(url, headers={"accept": "application/json"})
        if response.status_code != 200:
            raise ValueError(f"{url} answered HTTP {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return response.json(), response.headers.get("cache-control")
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
