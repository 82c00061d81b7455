"""Asking an upstream for its model list, defensively.

Every attempt has a deadline (a server that stalls, or drips bytes, is given up on), the answer may be at
most MAX_ANSWER_BYTES (counted while it streams in, whatever Content-Length says), redirects are not
followed (they could carry the key elsewhere), and only failures that may pass (connection errors,
timeouts, 429 and 5xx) are retried, a few times, with growing pauses. A list in pages is read whole, each
page from the same URL (`?after_id=` the previous page's `last_id`), within the same deadline and size. The API key goes in the
Authorization header and nowhere else: error messages never contain it, even if the upstream echoes it.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urljoin

import httpx
import orjson

from modeldex import __version__
from modeldex.catalog.upstreams import header_safe_key
from modeldex.discovery.answer import MAX_MODELS, InvalidAnswer, next_cursor, parse_answer

MAX_ANSWER_BYTES = 4 * 1024 * 1024  # all pages together
MAX_PAGES = 100
ATTEMPTS = 3
BACKOFF_S = 0.5  # before the 2nd attempt; doubled before each next one, with jitter
MAX_ERROR_TEXT = 300


class UpstreamError(Exception):
    """Polling failed; the message is safe to store and show (no key, no control characters)."""


@dataclass(frozen=True)
class Fetched:
    entries: list[dict[str, Any]]
    latency_ms: float  # of the attempt that succeeded
    attempts: int


class _Retryable(Exception):
    pass


def lease_seconds(timeout: float) -> float:
    """How long one poll can take at most, with every attempt and pause: what a poll lease must cover."""
    return float(ATTEMPTS * (timeout + 1) + BACKOFF_S * 2**ATTEMPTS + 30)


def api_key_from(environ: Mapping[str, str], name: str | None) -> str | None:
    """The API key in the environment variable `name` (None if no name), without surrounding whitespace: a
    Kubernetes secret made from a file often ends in a newline, which an HTTP header cannot carry (httpx's
    error then quoted the whole key). A key that is still not printable ASCII is refused, unquoted."""
    if not name:
        return None
    try:
        key = header_safe_key(environ.get(name))
    except ValueError as exc:
        raise UpstreamError(f"the environment variable {name} holds {exc}; it was not sent") from None
    if key is None:
        raise UpstreamError(f"the environment variable {name} (the API key) is not set in the process that polls")
    return key


def _base64_cores(secret: bytes) -> set[str]:
    """The parts of any base64 text that encodes `secret`, wherever in the encoded data it starts: for each
    of the three alignments, the characters that depend on the secret's bytes alone."""
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        core = encoded[-(-4 * offset // 3):(4 * (offset + len(secret))) // 3]
        if len(core) >= 8:  # long enough to be the secret's, not a coincidence
            cores.update((core, core.translate(str.maketrans("+/", "-_"))))
    return cores


def secret_forms(secret: str) -> list[str]:
    """How an upstream may echo `secret` back: as is, URL-encoded, JSON- or repr-escaped, or in base64
    (alone, or inside "Bearer ..." or "user:key"); longest first, so the longest is redacted whole."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    forms |= _base64_cores(secret.encode("utf-8", "replace"))
    return sorted((form for form in forms if form), key=len, reverse=True)


def clean(text: str, secret: str | None) -> str:
    """A message fit for the health record and logs: without the key in any form, printable, and short."""
    if secret:
        for form in secret_forms(secret):
            text = text.replace(form, "[redacted]")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


def fetch_models(base_url: str, api_key: str | None, timeout: float, attempts: int = ATTEMPTS,
                 max_bytes: int = MAX_ANSWER_BYTES, transport: httpx.BaseTransport | None = None) -> Fetched:
    """`GET {base_url}/models`, validated (`answer.parse_answer`). Raises UpstreamError."""
    url = base_url.rstrip("/") + "/models"
    headers = {"Accept": "application/json", "User-Agent": f"modeldex/{__version__} (discovery)"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last_error = "no attempt made"
    try:  # httpx reads HTTP(S)_PROXY, ALL_PROXY and NO_PROXY here
        client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, headers=headers,
                              transport=transport)
    except (ImportError, httpx.InvalidURL, ValueError) as exc:  # socks:// without socksio, NO_PROXY=[::1]
        raise UpstreamError(f"cannot use the proxy settings in the environment (HTTPS_PROXY, HTTP_PROXY, "
                            f"ALL_PROXY, NO_PROXY): {exc}") from None
    with client:
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(BACKOFF_S * 2 ** (attempt - 2) * random.uniform(0.8, 1.2))
            started = time.monotonic()
            try:
                entries = _list(client, url, timeout, max_bytes, api_key)
            except _Retryable as exc:
                last_error = str(exc)
                continue
            except UpstreamError as exc:
                raise UpstreamError(clean(str(exc), api_key)) from None
            return Fetched(entries, (time.monotonic() - started) * 1000, attempt)
    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise UpstreamError(clean(last_error + suffix, api_key))


def _list(client: httpx.Client, url: str, timeout: float, max_bytes: int, api_key: str | None
          ) -> list[dict[str, Any]]:
    """Every entry of the list, page after page: one attempt, with one deadline and one size budget."""
    deadline = time.monotonic() + timeout
    entries: list[dict[str, Any]] = []
    size, params, cursors = 0, None, set()
    for _page in range(MAX_PAGES):
        body = _get(client, url, params, deadline, timeout, max_bytes - size)
        size += len(body)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Redacted before it is cut short: a key cut in two would not be found any more.
            start = clean(body[:MAX_ERROR_TEXT * 4].decode("utf-8", "replace"), api_key)[:40]
            raise UpstreamError(f"the answer is not JSON (starts with {start.encode()!r})") from None
        try:
            page = parse_answer(document)
            entries += page
            if len(entries) > MAX_MODELS:
                raise InvalidAnswer(f"more than the {MAX_MODELS} models an upstream may list")
            cursor = next_cursor(document, page)
        except InvalidAnswer as exc:
            raise UpstreamError(f"invalid answer: {exc}") from None
        if cursor is None:
            return entries
        if cursor in cursors:  # a server that ignores `after_id` would send the first page again and again
            raise UpstreamError(f"invalid answer: the pages do not advance (after_id={cursor!r} came back)")
        cursors.add(cursor)
        params = {"after_id": cursor}
    raise UpstreamError(f"invalid answer: more than {MAX_PAGES} pages")


def _get(client: httpx.Client, url: str, params: dict[str, str] | None, deadline: float, timeout: float,
         max_bytes: int) -> bytes:
    try:
        remaining = max(deadline - time.monotonic(), 0.001)
        with client.stream("GET", url, params=params, timeout=remaining) as response:
            status = response.status_code
            if status != 200:
                detail = _error_detail(response, deadline, max_bytes)
                message = f"HTTP {status} from {url}{': ' + detail if detail else ''}"
                if 300 <= status < 400:
                    message += _redirect_hint(url, response.headers.get("location"))
                if status == 429 or status >= 500:
                    raise _Retryable(message)
                raise UpstreamError(message)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise UpstreamError(f"the answer is {int(declared)} bytes, "
                                    f"more than the {max_bytes} bytes allowed")
            return _read(response, deadline, max_bytes, timeout)
    except httpx.TimeoutException:
        raise _Retryable(f"no answer from {url} within {timeout:g}s") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"cannot reach {url}: {exc or type(exc).__name__}") from None


def _redirect_hint(url: str, location: str | None) -> str:
    """What to set base_url to after a redirect: the target without the `/models` it was asked for."""
    if not location:
        return " (a redirect without a location)"
    target = urljoin(url, location).split("?")[0].rstrip("/")
    if target.endswith("/models"):
        return f" (redirect to {location}; set base_url to {target.removesuffix('/models')})"
    return f" (redirect to {location}; set base_url to where it lists its models)"


def _read(response: httpx.Response, deadline: float, max_bytes: int, timeout: float) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamError(f"the answer is larger than the {max_bytes} bytes allowed")
        if time.monotonic() > deadline:
            raise _Retryable(f"the answer took longer than {timeout:g}s")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_detail(response: httpx.Response, deadline: float, max_bytes: int) -> str:
    """The upstream's own error message, if it sent an OpenAI-style one (a few KiB read at most)."""
    try:
        body = _read(response, deadline, min(max_bytes, 16 * 1024), 0)
        message = orjson.loads(body)["error"]["message"]
        return message if isinstance(message, str) else ""
    except Exception:
        return ""
