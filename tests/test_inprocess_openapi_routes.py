"""Every route the app answers is in /openapi.json, and everything there is answered: a new route cannot
be added undocumented, nor a documented one dropped."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from modeldex.api.model_routes import ITEM_METHODS, ITEM_PREFIX, LIST_METHODS, LIST_PATH
from modeldex.api.openapi import openapi_json
from modeldex.gateway.endpoints import ENDPOINTS

from .inprocess import Harness

pytestmark = pytest.mark.anyio
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("openapi-routes"))
    yield harness
    harness.stop()


def served_operations(harness: Harness) -> set[tuple[str, str]]:
    """(path, method) for every route: the side app's (as OpenAPI writes its paths: `{key:path}` is
    `{key}`), the Models routes and the inference routes. HEAD is GET's, as HTTP has it. The web console's
    pages (/console) are HTML for browsers, not API: docs/console.md documents them."""
    side = harness.app.side_app
    assert isinstance(side, Starlette)
    operations = set()
    for route in side.routes:
        assert isinstance(route, Route), route
        if route.path == "/console" or route.path.startswith("/console/"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        operations |= {(path, method) for method in route.methods or () if method != "HEAD"}
    operations |= {(LIST_PATH, method) for method in LIST_METHODS if method != "HEAD"}
    operations |= {(ITEM_PREFIX + "{model_id}", method) for method in ITEM_METHODS if method != "HEAD"}
    operations |= {(path, "POST") for path in ENDPOINTS}
    return operations


async def test_every_route_is_documented_and_every_documented_route_served(harness: Harness) -> None:
    document = (await harness.request("GET", "/openapi.json")).json()
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method in METHODS}
    served = served_operations(harness)
    assert len(served) > 40  # the side app, the Models routes and the gateway were all found
    assert served - documented == set(), "served but not in /openapi.json"
    assert documented - served == set(), "in /openapi.json but not served"


async def test_every_operation_answers_in_the_envelope_what_it_documents(harness: Harness) -> None:
    document = (await harness.request("GET", "/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/Error"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation["responses"]
            assert "200" in responses or "201" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and path.startswith("/v1/messages"):  # Anthropic's clients' envelope too
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"anyOf": [envelope, {"$ref": "#/components/schemas/AnthropicError"}]}
                elif int(status) >= 400:
                    name = response["$ref"].rsplit("/", 1)[1]
                    schema = document["components"]["responses"][name]["content"]["application/json"]["schema"]
                    assert schema == envelope, (method, path, status)
            if operation.get("security", document["security"]):  # a key is needed: 401 and 429 can answer
                assert {"401", "429"} <= set(responses), (method, path)
            if "requestBody" in operation:
                assert "400" in responses, (method, path)


async def test_served_document_is_made_once(harness: Harness) -> None:
    first = (await harness.request("GET", "/openapi.json")).content
    assert first == openapi_json()
    assert openapi_json() is openapi_json()
