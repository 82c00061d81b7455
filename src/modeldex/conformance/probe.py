"""The checker's side of the wire: requests to the server under test, each remembered as one line of what
was sent, so a scorecard can show it. Never sends the key in that line."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

TIMEOUT_S = 15.0
MAX_ANSWER_BYTES = 64 * 2**20  # a model list of 100,000 entries is about 8 MB


def api_base(url: str) -> str:
    """The OpenAI base URL (`.../v1`) from what a user types: with or without `/v1`, with a slash or not."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def model_path(model_id: str, encoded: bool = True) -> str:
    """`/models/ID`: percent-encoded as the openai SDK sends it, or raw as curl does."""
    return "/models/" + (quote(model_id, safe="") if encoded else model_id)


class Probe:
    def __init__(self, url: str, api_key: str | None, timeout: float = TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base = api_base(url)
        self.api_key = api_key
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def request(self, method: str, path: str, key: str | bool | None = True, headers: dict[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        """`key`: True for the configured key, False or None for none, or a string to send instead.

        The whole answer must arrive within the timeout (httpx's applies to each read: a server that sends
        a keep-alive comment every few seconds, or a body without end, held the check forever) and be at
        most MAX_ANSWER_BYTES."""
        sent = dict(headers or {})
        token = self.api_key if key is True else key or None
        if token:
            sent["Authorization"] = f"Bearer {token}"
        request = self._http.build_request(method, self.base + path, headers=sent, **kwargs)
        deadline = time.monotonic() + self.timeout
        response = self._http.send(request, stream=True)
        if response.is_stream_consumed:  # the body came whole with the answer (a test's MockTransport)
            return response
        try:
            body = bytearray()
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise httpx.ReadError(f"the answer went on past {MAX_ANSWER_BYTES // 2**20} MiB", request=request)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the answer did not end within {self.timeout:g} s", request=request)
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body), request=request)

    def describe(self, method: str, path: str, key: str | bool | None = True, note: str = "") -> str:
        who = "with the key" if key is True and self.api_key else "without a key" if not key else "with a wrong key"
        return f"{method} {self.base}{path} {who}{note}"

    def close(self) -> None:
        self._http.close()
