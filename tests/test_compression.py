"""Large lists go gzip-compressed to clients that accept it (the openai SDK and browsers ask), compressed
once per catalog version and view: under their own ETag, with `Vary: Accept-Encoding`, and never to a
client that did not ask."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modeldex.api.model_routes import GZIP_MIN_BYTES, accepts_gzip

from .conftest import create_key, run_cli
from .inprocess import Harness

MODELS = 40  # enough for a list over GZIP_MIN_BYTES


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("gzip"))
    for n in range(MODELS):
        harness.catalog.create("model", {"id": f"compressed/model-{n:03d}", "owned_by": "acme"})
    yield harness
    harness.stop()


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip, deflate", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True), ("GZIP", True),
    ("gzip;q=0", False), ("identity", False), ("deflate, br", False), ("", False), (None, False),
    ("gzip;q=nonsense", False),
])
def test_which_clients_take_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.mark.anyio
async def test_a_large_list_is_compressed_for_clients_that_ask(harness: Harness) -> None:
    key = harness.key("reader-gzip")
    plain = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) >= GZIP_MIN_BYTES
    assert plain.headers["vary"] == "Authorization, Accept-Encoding"
    packed = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": "gzip, deflate"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.json() == plain.json()  # httpx decompressed it
    assert packed.headers["etag"] != plain.headers["etag"] and packed.headers["etag"].endswith('-gzip"')
    again = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": "gzip",
                                                                     "If-None-Match": packed.headers["etag"]})
    assert again.status_code == 304
    # Asked for again, plain and packed keep coming from their own remembered answers.
    again_plain = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in again_plain.headers
    one = await harness.request("GET", "/v1/models/compressed/model-001", key, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in one.headers and one.headers["vary"] == "Authorization"


@pytest.mark.anyio
async def test_a_small_list_is_sent_as_it_is(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    try:
        key = harness.key("reader-small")
        response = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": "gzip"})
        assert len(response.content) < GZIP_MIN_BYTES and "content-encoding" not in response.headers
        assert response.headers["vary"] == "Authorization"  # never compressed: nothing varies
    finally:
        harness.stop()


def test_the_wire_carries_gzip_bytes_that_unpack_to_the_list(sqlite_url: str, start_server) -> None:
    for n in range(MODELS):
        run_cli(sqlite_url, "models", "add", f"wire/model-{n:03d}")
    key = create_key(sqlite_url, "wire")
    server = start_server(sqlite_url)
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"}
    with httpx.Client() as client, client.stream("GET", server.base_url + "/v1/models", headers=headers) as answer:
        raw = b"".join(answer.iter_raw())
        assert answer.headers["content-encoding"] == "gzip" and int(answer.headers["content-length"]) == len(raw)
    unpacked = gzip.decompress(raw)
    assert len(raw) < len(unpacked) / 3
    listed = json.loads(unpacked)
    assert {f"wire/model-{n:03d}" for n in range(MODELS)} <= {model["id"] for model in listed["data"]}
    assert [m.id for m in server.client(key).models.list().data] == [m["id"] for m in listed["data"]]


@pytest.mark.anyio
async def test_a_large_list_without_accept_encoding_stays_apart_from_the_compressed_one(harness: Harness) -> None:
    """A list that goes compressed is remembered under the request's Accept-Encoding, a missing header
    included: a client that sent none first does not make a later gzip client's answer plain, nor back."""
    key = harness.key("reader-no-encoding")
    async with harness.client() as client:
        del client.headers["accept-encoding"]  # httpx sends one by default
        for expected in (None, "gzip", None, "gzip"):
            headers = {"Authorization": f"Bearer {key}", **({"Accept-Encoding": "gzip"} if expected else {})}
            response = await client.get("/v1/models", headers=headers)
            assert response.status_code == 200 and response.headers.get("content-encoding") == expected
            assert len(response.json()["data"]) >= MODELS


@pytest.mark.anyio
async def test_a_small_list_is_remembered_once_for_every_encoding(tmp_path: Path) -> None:
    """A list too short to go compressed is the same answer whatever the Accept-Encoding, so it is filed
    without it: one remembered answer, found without reading that header."""
    harness = Harness(tmp_path)
    try:
        key = harness.key("reader-small-encodings")
        bodies = set()
        for encoding in ("gzip", "identity", "br;q=1.0, gzip;q=0.5", ""):
            response = await harness.request("GET", "/v1/models", key, headers={"Accept-Encoding": encoding})
            assert response.status_code == 200 and "content-encoding" not in response.headers
            bodies.add(response.content)
        assert len(bodies) == 1
        models = harness.app.models
        assert models is not None
        filed = [request for request in models._ready if request[0] == "/v1/models"]
        assert filed == [("/v1/models", f"Bearer {key}", None)]
    finally:
        harness.stop()
