"""Cross-origin requests from browsers, decided in the app for every route (off unless origins are
configured).

It used to be Starlette's middleware wrapped around the whole app, which meant a second copy of the
routing behind it and 70-90 µs a request (measured); here it is a header lookup per request, and the
header lists are made once.
"""

from __future__ import annotations

from typing import Protocol

from modeldex.api.errors import CONTENT_TYPE, ApiError

ALLOW_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE")
# What modeldex reads, and what the official SDKs send from a browser (the OpenAI and Anthropic SDKs, made
# by Stainless, add `x-stainless-*` headers describing themselves to every request, and their own).
ALLOW_HEADERS = ("authorization", "content-type", "if-match", "if-none-match", "x-api-key", "anthropic-version",
                 "anthropic-beta", "anthropic-dangerous-direct-browser-access", "openai-organization",
                 "openai-project", "openai-beta", "idempotency-key")
ALLOW_HEADER_PREFIXES = ("x-stainless-",)
# Headers any request may carry without asking (the Fetch standard's CORS-safelisted ones).
_SAFELISTED = ("accept", "accept-language", "content-language", "content-type")
EXPOSE_HEADERS = ("x-request-id", "etag", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                  "x-ratelimit-reset-requests", "retry-after", "retry-after-ms")
MAX_AGE_S = 600
_VARY = ("vary", "Origin")

Headers = list[tuple[str, str]]


class HeaderLookup(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)
        self._allowed_headers = frozenset(ALLOW_HEADERS + _SAFELISTED)
        self._expose = ("access-control-expose-headers", ", ".join(EXPOSE_HEADERS))
        self._preflight_headers = self._preflight_allowing(self._allowed_headers)

    def _allow_origin(self, origin: str) -> Headers:
        if self._any:
            return [("access-control-allow-origin", "*")]
        if origin in self._origins:  # the answer differs by origin: shared caches must keep them apart
            return [("access-control-allow-origin", origin), _VARY]
        return []

    def response_headers(self, headers: HeaderLookup) -> Headers:
        """What an actual (not preflight) response adds: CORS headers when the request's origin is allowed;
        otherwise, unless every origin is, only `Vary: Origin`, so that a shared cache does not hand this
        answer, without them, to an allowed origin."""
        origin = headers.get("origin")
        allowed = self._allow_origin(origin) if origin is not None else []
        if allowed:
            return [*allowed, self._expose]
        return [] if self._any else [_VARY]

    @staticmethod
    def _preflight_allowing(names: frozenset[str]) -> Headers:
        return [("access-control-allow-methods", ", ".join(ALLOW_METHODS)),
                ("access-control-allow-headers", ", ".join(sorted(names))),
                ("access-control-max-age", str(MAX_AGE_S))]

    def _header_allowed(self, name: str) -> bool:
        return name in self._allowed_headers or name.startswith(ALLOW_HEADER_PREFIXES)

    @staticmethod
    def is_preflight(method: str, headers: HeaderLookup) -> bool:
        return (method == "OPTIONS" and headers.get("origin") is not None
                and headers.get("access-control-request-method") is not None)

    def preflight(self, headers: HeaderLookup) -> tuple[int, Headers, bytes]:
        """The answer to a preflight (OPTIONS with Access-Control-Request-Method): 200 with what is
        allowed, or 400 in the OpenAI envelope saying what is not."""
        origin = headers.get("origin") or ""
        method = (headers.get("access-control-request-method") or "").strip().upper()
        requested = {name.strip().lower() for name in (headers.get("access-control-request-headers") or "").split(",")
                     if name.strip()}
        allow_origin = self._allow_origin(origin)
        problem = None
        if not allow_origin:
            problem = f"The origin {origin[:128]!r} is not allowed to call this server."
        elif method not in ALLOW_METHODS:
            problem = f"The method {method[:16]!r} is not allowed for cross-origin requests."
        elif not all(self._header_allowed(name) for name in requested):
            refused = ", ".join(sorted(name for name in requested if not self._header_allowed(name)))[:256]
            problem = f"These headers are not allowed for cross-origin requests: {refused}."
        if problem is not None:
            error = ApiError(400, problem, code="cors_not_allowed")
            return 400, [("content-type", CONTENT_TYPE), *allow_origin, *self._preflight_headers], error.body()
        # Headers allowed by prefix (`x-stainless-*`) are named as asked: the answer has no wildcards.
        preflight = self._preflight_headers if requested <= self._allowed_headers \
            else self._preflight_allowing(self._allowed_headers | requested)
        return 200, [("content-type", "text/plain; charset=utf-8"), *allow_origin, *preflight], b"OK"
