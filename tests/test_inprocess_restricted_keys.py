"""What a restricted key learns of models it cannot see: nothing. Its ETag is a digest of the bytes it is
served (a change elsewhere in the catalog leaves it alone), and a visible model's `replaced_by` never names
a hidden one."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from .inprocess import Harness

pytestmark = pytest.mark.anyio

MODEL = "remembered/model"


@pytest.fixture
def harness(tmp_path: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path)  # type: ignore[arg-type]
    harness.catalog.create("model", {"id": MODEL, "owned_by": "acme", "created": 1700000000})
    yield harness
    harness.stop()


async def test_an_etag_changes_with_what_the_key_sees_and_with_nothing_else(harness: Harness) -> None:
    narrow = harness.key("narrow", policy={"patterns": ["remembered/*"]})
    first = (await harness.request("GET", "/v1/models", narrow)).headers["etag"]
    harness.catalog.create("model", {"id": "hidden/model", "owned_by": "acme"})  # a model it cannot see
    harness.catalog.update("model", "MiniMax-M2.7", {"owned_by": "minimax-global"})
    assert (await harness.request("GET", "/v1/models", narrow)).headers["etag"] == first
    assert re.fullmatch(r'"[0-9a-f]{20}"', first)  # a digest of the bytes: no catalog version in it
    harness.catalog.update("model", MODEL, {"owned_by": "someone-else"})
    assert (await harness.request("GET", "/v1/models", narrow)).headers["etag"] != first


async def test_replaced_by_never_names_a_model_the_key_cannot_see(harness: Harness) -> None:
    harness.catalog.create("model", {"id": "secret/successor", "owned_by": "acme"})
    harness.catalog.update("model", MODEL, {"replaced_by": "secret/successor"})
    narrow = harness.key("narrow", policy={"patterns": ["remembered/*"]})
    wide = harness.key("wide")
    for path in (f"/v1/models/{MODEL}?expand=metadata", "/v1/models?expand=metadata"):
        seen = (await harness.request("GET", path, narrow)).text
        assert MODEL in seen and "replaced_by" not in seen and "secret/successor" not in seen
        assert '"replaced_by":"secret/successor"' in (await harness.request("GET", path, wide)).text
