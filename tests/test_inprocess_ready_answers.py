"""The Models routes remember a plain GET's answer per (path, Authorization) for one catalog version
(`ModelRoutes._ready`). These tests hold it to what the uncached path answers: a fresh request id each
time, nothing stale after a write, a revoked key or a blocked address, and no reuse for requests whose
answer depends on more than the path and the key (a query, If-None-Match, a rate limit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .inprocess import REQUEST_ID, Harness, error_of

pytestmark = pytest.mark.anyio

MODEL = "remembered/model"


@pytest.fixture
def harness(tmp_path: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path, auth_failure_limit="2/m")  # type: ignore[arg-type]
    harness.catalog.create("model", {"id": MODEL, "owned_by": "acme", "created": 1700000000,
                                      "context_length": 131072})
    yield harness
    harness.stop()


async def test_a_repeated_request_gets_the_same_answer_with_its_own_request_id(harness: Harness) -> None:
    key = harness.key("reader")
    first = await harness.request("GET", f"/v1/models/{MODEL}", key)
    second = await harness.request("GET", f"/v1/models/{MODEL}", key)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(REQUEST_ID.fullmatch(request_id) for request_id in ids)


async def test_a_write_is_served_from_the_next_request(harness: Harness) -> None:
    key = harness.key("reader")
    for _ in range(2):
        assert (await harness.request("GET", f"/v1/models/{MODEL}", key)).status_code == 200
    harness.catalog.update("model", MODEL, {"owned_by": "someone-else"})
    assert (await harness.request("GET", f"/v1/models/{MODEL}", key)).json()["owned_by"] == "someone-else"
    harness.catalog.delete("model", MODEL)
    error_of(await harness.request("GET", f"/v1/models/{MODEL}", key), 404, "model_not_found")


async def test_a_revoked_key_is_refused_at_once(harness: Harness) -> None:
    key = harness.key("leaving")
    for _ in range(2):
        assert (await harness.request("GET", "/v1/models", key)).status_code == 200
    harness.catalog.revoke_key("leaving")
    error_of(await harness.request("GET", "/v1/models", key), 401, "invalid_api_key")


async def test_conditional_and_query_requests_are_answered_afresh(harness: Harness) -> None:
    key = harness.key("reader")
    plain = await harness.request("GET", f"/v1/models/{MODEL}", key)
    etag = plain.headers["etag"]
    revalidated = await harness.request("GET", f"/v1/models/{MODEL}", key, headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.content == b""
    expanded = await harness.request("GET", f"/v1/models/{MODEL}?expand=metadata", key)
    assert expanded.status_code == 200 and expanded.json()["context_length"] == 131072
    assert "context_length" not in (await harness.request("GET", f"/v1/models/{MODEL}", key)).json()


async def test_a_blocked_address_is_refused_even_with_a_remembered_answer(harness: Harness) -> None:
    key = harness.key("reader")
    address = "10.250.0.1"
    for _ in range(2):
        assert (await harness.request("GET", "/v1/models", key, address=address)).status_code == 200
    for _ in range(2):  # the failed-attempt allowance is 2 a minute
        error_of(await harness.request("GET", "/v1/models", "sk-wrong", address=address), 401, "invalid_api_key")
    error_of(await harness.request("GET", "/v1/models", key, address=address), 429, "rate_limit_exceeded",
             type="requests")
    assert (await harness.request("GET", "/v1/models", key)).status_code == 200  # from elsewhere: as before


async def test_a_rate_limited_key_is_counted_on_every_request(harness: Harness) -> None:
    key = harness.key("limited", rate_limit="2/m")
    statuses = [(await harness.request("GET", "/v1/models", key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]



async def test_long_requests_are_answered_and_never_remembered(harness: Harness) -> None:
    """A read key asking for ids of 60 KB each, each a new one, grew a worker by 480 MB in 2 s: such requests
    (longer than any id and key header) are answered as ever but kept neither as answers nor as 404 bodies."""
    key = harness.key("reader")
    models = harness.app.models
    assert models is not None
    long_id = "x" * 5000
    for _ in range(2):
        error_of(await harness.request("GET", f"/v1/models/{long_id}", key), 404, "model_not_found")
    padded = {"authorization": f"Bearer {key}" + " " * 2000}  # a valid key, padded: still that key
    assert (await harness.request("GET", f"/v1/models/{MODEL}", headers=padded)).status_code == 200
    assert not any(long_id in request[0] for request in models._ready)
    assert long_id not in models._not_found_bodies
    assert not any(request[1] == padded["authorization"] for request in models._ready)
    # A request of the usual size is remembered as before.
    error_of(await harness.request("GET", "/v1/models/short-unknown", key), 404, "model_not_found")
    assert "short-unknown" in models._not_found_bodies
    assert ("/v1/models/short-unknown", f"Bearer {key}", None) in models._ready
