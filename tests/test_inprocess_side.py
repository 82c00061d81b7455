"""The Starlette side of the dispatch in-process: health, readiness, the OpenAPI document, the admin API's
validation, body limits and concurrency checks, and who may read /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from .inprocess import Harness, error_of

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "scrape-me-0123456789"
MAX_BODY = 4096


class Side:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.read = harness.key("reader")
        self.admin = harness.key("admin", "admin")

    async def request(self, method: str, path: str, key: str | None = None, address: str | None = None,
                      **kwargs) -> httpx.Response:
        return await self.harness.request(method, path, key, address, **kwargs)


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    harness = Harness(tmp_path_factory.mktemp("side"), max_body_bytes=MAX_BODY, metrics_token=METRICS_TOKEN,
                      auth_failure_limit="3/m")
    yield Side(harness)
    harness.stop()


async def test_healthz(side: Side) -> None:
    response = await side.request("GET", "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


async def test_readyz_says_ready_and_only_an_admin_learns_the_served_version(side: Side) -> None:
    response = await side.request("GET", "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}  # a probe needs no key, and learns no version
    assert (await side.request("GET", "/readyz", side.read)).json() == {"status": "ready"}
    admin = await side.request("GET", "/readyz", side.admin)
    assert admin.json() == {"status": "ready", "version": side.harness.app.live.version}
    assert admin.json()["version"] >= 1
    error_of(await side.request("GET", "/readyz", "sk-not-a-key"), 401, "invalid_api_key")


async def test_openapi_is_json(side: Side) -> None:
    response = await side.request("GET", "/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/models", "/v1/models/{model_id}"} <= set(document["paths"])


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/healthz", {"GET", "HEAD"}),
    ("PUT", "/v1/admin/catalog/apply", {"POST"}),
    ("PUT", "/v1/admin/models", {"GET", "HEAD", "POST"}),
    ("PUT", "/v1/admin/models/MiniMax-M3", {"GET", "HEAD", "PATCH", "DELETE"}),
    ("PUT", "/v1/admin/keys", {"GET", "HEAD", "POST"}),
    ("POST", "/v1/admin/keys/reader", {"GET", "HEAD", "PATCH", "DELETE"}),
])
async def test_a_wrong_method_on_a_side_route_is_405_listing_every_allowed_method(
        side: Side, method: str, path: str, allowed: set[str]) -> None:
    # A 405's Allow lists what the resource supports (RFC 9110 15.5.6), as the Models routes' do; the
    # message tells the client which to use, so it must not leave any out.
    response = await side.request(method, path, side.admin)
    error = error_of(response, 405)
    assert set(response.headers["allow"].split(", ")) == allowed
    assert set(error["message"].rsplit("; use ", 1)[1].rstrip(".").split(", ")) == allowed


@pytest.mark.parametrize("path", ["/", "/v1", "/v2/models", "/v1/models/", "/v1/modelsx", "/v1/chat/completions"])
async def test_unknown_paths_are_invalid_url_404s(side: Side, path: str) -> None:
    error = error_of(await side.request("GET", path, side.read), 404)
    assert error["message"] == f"Invalid URL (GET {path})"


@pytest.mark.parametrize("body", [b"{nope", b"[1, 2]", b"\"a string\"", b""])
async def test_a_body_that_is_no_json_object_is_400_invalid_json(side: Side, body: bytes) -> None:
    version = side.harness.store.current_version()
    response = await side.request("POST", "/v1/admin/models", side.admin, content=body,
                                  headers={"content-type": "application/json"})
    error_of(response, 400, "invalid_json")
    assert side.harness.store.current_version() == version


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/admin/models", {"id": "ok-1", "colour": "blue"}, "colour"),
    ("/v1/admin/models", {"id": "ok-2", "source": "up"}, "source"),
    ("/v1/admin/models", {"id": "bad id"}, "id"),
    ("/v1/admin/models", {"id": "ok-3", "context_length": 0}, "context_length"),
    ("/v1/admin/models", {"id": "cafe\u0301"}, "id"),  # not NFC: "café" spelt as "e" and an accent
    ("/v1/admin/aliases", {"id": "a-1", "target": "MiniMax-M3", "colour": "blue"}, "colour"),
    ("/v1/admin/keys", {"name": "k-1", "colour": "blue"}, "colour"),
    ("/v1/admin/keys", {"name": "k-2", "scope": "root"}, "scope"),
    ("/v1/admin/keys", {"name": "k-3", "rate_limit": 5}, "rate_limit"),
])
async def test_invalid_fields_are_400_invalid_value_naming_the_param(side: Side, path: str, body: dict,
                                                                     param: str) -> None:
    version = side.harness.store.current_version()
    error = error_of(await side.request("POST", path, side.admin, json=body), 400, "invalid_value")
    assert error["param"] == param
    assert side.harness.store.current_version() == version


async def test_a_stale_if_match_is_412_and_changes_nothing(side: Side) -> None:
    created = await side.request("POST", "/v1/admin/models", side.admin, json={"id": "etag/model"})
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    updated = await side.request("PATCH", "/v1/admin/models/etag%2Fmodel", side.admin,
                                 json={"context_length": 4096}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200 and updated.headers["etag"] == '"2"'
    for stale in ('"1"', 'W/"1"', '"not-a-revision"'):
        error = error_of(await side.request("PATCH", "/v1/admin/models/etag/model", side.admin,
                                            json={"context_length": 1}, headers={"If-Match": stale}),
                         412, "precondition_failed")
        assert "revision 2" in error["message"]
    error_of(await side.request("DELETE", "/v1/admin/models/etag/model", side.admin, headers={"If-Match": '"1"'}),
             412, "precondition_failed")
    current = await side.request("GET", "/v1/admin/models/etag/model", side.admin)
    assert current.json()["context_length"] == 4096 and current.headers["etag"] == '"2"'


async def test_a_body_over_the_limit_is_413(side: Side) -> None:
    big = {"id": "big", "description": "x" * (MAX_BODY + 100)}
    error = error_of(await side.request("POST", "/v1/admin/models", side.admin, json=big), 413, "body_too_large")
    assert str(MAX_BODY) in error["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(10):
            yield b"x" * 1000

    streamed = await side.request("POST", "/v1/admin/catalog/apply", side.admin, content=chunks())
    assert "content-length" not in streamed.request.headers
    error_of(streamed, 413, "body_too_large")
    error_of(await side.request("GET", "/v1/admin/models/big", side.admin), 404, "model_not_found")


async def test_a_body_at_the_limit_is_read(side: Side) -> None:
    body = b'{"id": "fits"}'.ljust(MAX_BODY)  # whitespace after a JSON value is still JSON
    assert (await side.request("POST", "/v1/admin/models", side.admin, content=body)).status_code == 201


async def test_the_admin_api_needs_an_admin_key(side: Side) -> None:
    error = error_of(await side.request("GET", "/v1/admin/models", side.read), 403, "insufficient_permissions")
    assert "admin API" in error["message"]
    error_of(await side.request("GET", "/v1/admin/models"), 401, None)
    error_of(await side.request("GET", "/v1/admin/keys", "sk-mdx-" + "w" * 52), 401, "invalid_api_key")


async def test_metrics_with_the_token_or_an_admin_key(side: Side) -> None:
    for credential in (METRICS_TOKEN, side.admin):
        response = await side.request("GET", "/metrics", credential)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "modeldex_catalog_version" in response.text
        assert METRICS_TOKEN not in response.text


async def test_metrics_refuse_read_keys_and_anonymous_callers(side: Side) -> None:
    error = error_of(await side.request("GET", "/metrics", side.read), 403, "insufficient_permissions")
    assert "metrics" in error["message"]
    error_of(await side.request("GET", "/metrics"), 401, None)


async def test_wrong_metrics_tokens_count_as_failed_attempts(side: Side) -> None:
    address = "192.0.2.10"
    for _ in range(3):
        error_of(await side.request("GET", "/metrics", "wrong-token-0000000000", address), 401, "invalid_api_key")
    # The 4th request from that address is refused, whatever it carries and wherever it goes.
    blocked = await side.request("GET", "/v1/models", side.read, address)
    error = error_of(blocked, 429, "rate_limit_exceeded", type="requests")
    assert "invalid API keys" in error["message"]
    assert int(blocked.headers["retry-after"]) >= 1
    error_of(await side.request("GET", "/v1/admin/models", side.admin, address), 429, "rate_limit_exceeded",
             type="requests")
    # Another address is not affected.
    assert (await side.request("GET", "/v1/models", side.read, "192.0.2.11")).status_code == 200


async def test_a_blocked_address_cannot_confirm_a_metrics_token_guess(side: Side) -> None:
    # Blocked is blocked "before any key is looked at" (api/callers.py): were the right token let through,
    # a guesser would tell right from wrong by 200 against 429 and keep guessing at full speed.
    address = "192.0.2.20"
    for _ in range(3):
        error_of(await side.request("GET", "/metrics", "wrong-token-1111111111", address), 401, "invalid_api_key")
    error_of(await side.request("GET", "/metrics", "wrong-token-2222222222", address), 429, "rate_limit_exceeded",
             type="requests")
    error_of(await side.request("GET", "/metrics", METRICS_TOKEN, address), 429, "rate_limit_exceeded",
             type="requests")


async def test_a_model_id_in_nfc_is_served_and_its_decomposed_twin_refused(side: Side) -> None:
    created = await side.request("POST", "/v1/admin/models", side.admin, json={"id": "caf\u00e9"})
    assert created.status_code == 201
    assert (await side.request("GET", "/v1/models/caf%C3%A9", side.read)).json()["id"] == "caf\u00e9"
    error = error_of(await side.request("POST", "/v1/admin/models", side.admin, json={"id": "cafe\u0301"}),
                     400, "invalid_value")
    assert "NFC" in error["message"]


@pytest.mark.parametrize("field", ["created", "owned_by"])
async def test_a_field_that_always_has_a_value_cannot_be_patched_away(side: Side, field: str) -> None:
    model_id = f"keeps-{field.replace('_', '-')}"
    created = await side.request("POST", "/v1/admin/models", side.admin,
                                 json={"id": model_id, "created": 1700000000, "owned_by": "acme"})
    assert created.status_code == 201
    version = side.harness.store.current_version()
    error = error_of(await side.request("PATCH", f"/v1/admin/models/{model_id}", side.admin, json={field: None}),
                     400, "invalid_value")
    assert error["param"] == field
    assert side.harness.store.current_version() == version
    served = (await side.request("GET", f"/v1/models/{model_id}", side.read)).json()
    assert (served["created"], served["owned_by"]) == (1700000000, "acme")
    removed = await side.request("PATCH", f"/v1/admin/models/{model_id}", side.admin, json={"description": None})
    assert removed.status_code == 200  # an optional field still can be


async def test_readyz_names_no_sql_when_the_catalog_cannot_be_read(tmp_path: Path) -> None:
    """A table gone from under a running server (a database swapped for an empty one): /readyz, which needs
    no key, said the driver's message with its SQL text; it now says what failed, and the log has the rest."""
    import sqlite3
    import time

    harness = Harness(tmp_path, refresh_interval=0.05)
    try:
        reader = harness.key("reader")
        with sqlite3.connect(harness.url.removeprefix("sqlite:///")) as connection:
            connection.execute("DROP TABLE catalog_state")
        deadline = time.monotonic() + 10
        while (response := await harness.request("GET", "/readyz")).status_code != 503:
            assert time.monotonic() < deadline, "the server never noticed"
            await anyio.sleep(0.05)
        message = error_of(response, 503, "not_ready", type="server_error")["message"]
        assert message == ("not ready: the catalog could not be read (OperationalError; see the server's log); "
                           "serving the catalog from memory")
        assert (await harness.request("GET", "/v1/models", reader)).status_code == 200  # from memory, still
    finally:
        harness.stop()


async def test_readyz_names_no_database_address_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """An unreachable database's driver message names its host, address, port and user; /readyz, which
    needs no key, passed it on to anyone. It says what failed; the log has the driver's words."""
    import time

    from modeldex.catalog.errors import StoreUnavailable

    harness = Harness(tmp_path, refresh_interval=0.05)
    said = ('the catalog database is unreachable: connection to server at "db.internal" (10.0.0.5), port 5432 '
            'failed: FATAL:  password authentication failed for user "modeldex"')

    def unreachable() -> int:
        raise StoreUnavailable(said)

    try:
        admin = harness.key("admin", "admin")
        harness.store.current_version = unreachable  # type: ignore[method-assign]
        deadline = time.monotonic() + 10
        while (await harness.request("GET", "/readyz")).status_code != 503:
            assert time.monotonic() < deadline, "the server never noticed"
            await anyio.sleep(0.05)
        for key in (None, admin):
            message = error_of(await harness.request("GET", "/readyz", key), 503, "not_ready",
                               type="server_error")["message"]
            assert message.startswith("not ready: the catalog database is unreachable (see the server's log); ")
            assert "db.internal" not in message and "10.0.0.5" not in message and "modeldex" not in message
    finally:
        harness.stop()
