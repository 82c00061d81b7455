"""The checker's side of the wire: requests to the server under test, each remembered as one line of what
was sent, so a scorecard can show it. Never sends the key in that line."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

TIMEOUT_S = 15.0


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
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def request(self, method: str, path: str, key: str | bool | None = True, headers: dict[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        """`key`: True for the configured key, False or None for none, or a string to send instead."""
        sent = dict(headers or {})
        token = self.api_key if key is True else key or None
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return self._http.request(method, self.base + path, headers=sent, **kwargs)

    def describe(self, method: str, path: str, key: str | bool | None = True, note: str = "") -> str:
        who = "with the key" if key is True and self.api_key else "without a key" if not key else "with a wrong key"
        return f"{method} {self.base}{path} {who}{note}"

    def close(self) -> None:
        self._http.close()
