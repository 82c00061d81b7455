"""The in-process layer's harness: the real ModeldexApp, driven as an ASGI app through httpx.ASGITransport
(the same dispatch granian's RSGI path uses), on a SQLite file. No subprocess, no port."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import httpx

from modeldex.api.app import ModeldexApp
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.config import ServerSettings
from modeldex.gateway.endpoints import ENDPOINTS
from modeldex.store import SqlStore, open_store

BASE_URL = "http://testserver"
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
ERROR_CONTENT_TYPE = "application/json; charset=utf-8"  # api.openai.com's, on its errors only
# Every client gets its own address unless a test asks for one: failed attempts count per address, so
# tests sharing an app cannot block each other.
_addresses = (f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}" for n in itertools.count(1))


class Harness:
    """One started app on its own database, with the catalog service to arrange what it serves."""

    def __init__(self, directory: Path, **settings: Any) -> None:
        self.url = f"sqlite:///{directory}/catalog.db"
        self.store: SqlStore = open_store(self.url, seed=seed_models())
        self.settings = ServerSettings(database_url=self.url, **{"access_log": False, **settings})
        self.app = ModeldexApp(self.settings, store=self.store)
        self.app.start()
        assert self.app.live is not None
        live = self.app.live
        # Writes made here are served from the next request on, as the admin API's are.
        self.catalog = Catalog(self.store, actor="tests", after_write=live.refresh)

    def key(self, name: str, scope: str = "read", policy: dict[str, Any] | None = None,
            rate_limit: str | None = None) -> str:
        _record, secret = self.catalog.create_key(name, scope, policy, rate_limit)
        return secret

    def client(self, address: str | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address or next(_addresses), 5000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    async def request(self, method: str, path: str, key: str | None = None, address: str | None = None,
                      headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request from a client of its own (at `address`, or a fresh one), with `key` as its bearer."""
        all_headers = {**(bearer(key) if key else {}), **(headers or {})}
        async with self.client(address) as client:
            return await client.request(method, path, headers=all_headers, **kwargs)

    def stop(self) -> None:
        self.app.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response, status: int, code: str | None = None,
             type: str = "invalid_request_error") -> dict[str, Any]:
    """The OpenAI error envelope of `response`, checked: status, content type (OpenAI's for errors, except
    the inference gateway's own), exactly four fields, code and type."""
    assert response.status_code == status, response.text[:500]
    request = response.request
    gateway = request.method == "POST" and request.url.path in ENDPOINTS
    assert response.headers["content-type"] == ("application/json" if gateway else ERROR_CONTENT_TYPE)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    assert error["type"] == type, error
    assert "Traceback" not in error["message"]
    return error


def anthropic_error_of(response: httpx.Response, status: int, code: str, type: str) -> dict[str, Any]:
    """Anthropic's error envelope of `response` (the /v1/messages routes), checked: status, its fields,
    modeldex's code in `error.details.error_code`, the type and the request id."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert set(document) == {"type", "error", "request_id"} and document["type"] == "error", document
    assert document["request_id"] == response.headers["x-request-id"]
    error = document["error"]
    assert set(error) == {"type", "message", "details"}, error
    assert error["details"] == {"error_code": code}, error
    assert error["type"] == type, error
    assert "Traceback" not in error["message"]
    return error


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}
