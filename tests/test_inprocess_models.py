"""The Models routes in-process: shapes, errors, methods, caching, paths, header limits, request ids,
deletes. The real-server suites (test_http_edges, test_admin_api) keep the contract over the wire."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import SEED_IDS
from .inprocess import REQUEST_ID, Harness, error_of

pytestmark = pytest.mark.anyio

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
MODEL_FIELDS = {"id", "object", "created", "owned_by"}


class Deployment:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.read = harness.key("reader")
        self.admin = harness.key("admin", "admin")
        catalog = harness.catalog
        catalog.create("model", {"id": LLAMA, "owned_by": "meta", "created": 1721692800})
        catalog.create("model", {"id": "meta/model", "owned_by": "acme", "created": 1700000000,
                                 "context_length": 131072, "name": "Meta Model"})
        catalog.create("model", {"id": "doomed", "owned_by": "acme"})
        catalog.create("model", {"id": "aliased", "owned_by": "acme"})
        catalog.create("alias", {"id": "aliased-latest", "target": "aliased"})

    async def request(self, method: str, path: str, key: str | None = "read", **kwargs) -> httpx.Response:
        named = {"read": self.read, "admin": self.admin}
        return await self.harness.request(method, path, named.get(key, key) if key else None, **kwargs)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    harness = Harness(tmp_path_factory.mktemp("models"))
    yield Deployment(harness)
    harness.stop()


async def test_list_has_exactly_the_openai_fields(deployment: Deployment) -> None:
    response = await deployment.request("GET", "/v1/models")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"object", "data"} and body["object"] == "list"
    assert all(set(item) - {"shutdown_date"} == MODEL_FIELDS and item["object"] == "model" for item in body["data"])
    ids = [item["id"] for item in body["data"]]
    assert set(SEED_IDS) | {LLAMA, "meta/model", "aliased-latest"} <= set(ids)
    # Newest first, then by id: the order every replica answers.
    order = [(-item["created"], item["id"]) for item in body["data"]]
    assert order == sorted(order)


async def test_retrieve_is_the_listed_object(deployment: Deployment) -> None:
    listed = (await deployment.request("GET", "/v1/models")).json()["data"]
    response = await deployment.request("GET", "/v1/models/MiniMax-M3")
    assert response.status_code == 200
    assert response.json() == next(item for item in listed if item["id"] == "MiniMax-M3")
    assert set(response.json()) == MODEL_FIELDS
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["vary"] == "Authorization"


async def test_an_announced_shutdown_date_is_in_the_model_object(deployment: Deployment) -> None:
    """OpenAI's Model object carries `shutdown_date` when one is announced (openai/openai-openapi, Model; the
    openai SDK reads it as `Model.shutdown_date`); a model without one keeps exactly the four fields."""
    deployment.harness.catalog.create("model", {"id": "retiring", "owned_by": "acme", "created": 1600000000,
                                                "shutdown_date": "2099-10-23"})
    expected = {"id": "retiring", "object": "model", "created": 1600000000, "owned_by": "acme",
                "shutdown_date": "2099-10-23"}
    assert (await deployment.request("GET", "/v1/models/retiring")).json() == expected
    listed = (await deployment.request("GET", "/v1/models")).json()["data"]
    assert next(item for item in listed if item["id"] == "retiring") == expected
    assert set((await deployment.request("GET", "/v1/models/MiniMax-M3")).json()) == MODEL_FIELDS


async def test_an_alias_answers_with_its_own_id_and_its_targets_fields(deployment: Deployment) -> None:
    alias = (await deployment.request("GET", "/v1/models/aliased-latest")).json()
    target = (await deployment.request("GET", "/v1/models/aliased")).json()
    assert alias == {**target, "id": "aliased-latest"}


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "sk-mdx-nobearer"])
async def test_no_usable_key_is_401_with_a_null_code(deployment: Deployment, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    error = error_of(await deployment.request("GET", "/v1/models", key=None, headers=headers), 401, None)
    assert "Authorization: Bearer" in error["message"]
    assert error["param"] is None


async def test_a_wrong_key_is_401_invalid_api_key_and_masked(deployment: Deployment) -> None:
    wrong = "sk-mdx-" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nM5qW0eR7tY3uI9oPa2sD"
    error = error_of(await deployment.request("GET", "/v1/models", key=wrong), 401, "invalid_api_key")
    # modeldex's mask (OpenAI's wording, less of the key): the first 3 and last 4 characters, at most 24 stars.
    assert error["message"].startswith(f"Incorrect API key provided: sk-{'*' * 24}{wrong[-4:]}.")
    assert wrong not in error["message"] and wrong[7:19] not in error["message"]


async def test_a_near_miss_of_a_real_key_shows_nothing_of_it(deployment: Deployment) -> None:
    near = deployment.read[:-1] + ("A" if deployment.read[-1] != "A" else "B")
    error = error_of(await deployment.request("GET", "/v1/models/MiniMax-M3", key=near), 401, "invalid_api_key")
    assert near not in error["message"] and near[3:-4] not in error["message"].replace("*", "")


async def test_an_unknown_model_is_404_model_not_found(deployment: Deployment) -> None:
    error = error_of(await deployment.request("GET", "/v1/models/ghost"), 404, "model_not_found")
    assert error["param"] == "model"
    assert error["message"] == "The model `ghost` does not exist or you do not have access to it."


async def test_errors_are_labelled_as_openai_labels_them(deployment: Deployment) -> None:
    """api.openai.com answers its errors `application/json; charset=utf-8` and its models `application/json`
    (recorded: newrelic/newrelic-python-agent tests/mlmodel_openai/cassette.yaml): the same the first time
    and when the answer is remembered (the second request)."""
    for _ in range(2):
        for path, key, status in [("/v1/models/ghost", "read", 404), ("/v1/models", "sk-wrong", 401),
                                  ("/v1/models", None, 401), ("/v1/nothing-here", "read", 404)]:
            response = await deployment.request("GET", path, key=key)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json; charset=utf-8", (path, key)
        for path in ("/v1/models", "/v1/models/MiniMax-M3"):
            assert (await deployment.request("GET", path)).headers["content-type"] == "application/json"
    response = await deployment.request("POST", "/v1/models")
    assert response.status_code == 405 and response.headers["content-type"] == "application/json; charset=utf-8"


async def test_an_overlong_id_is_a_short_404(deployment: Deployment) -> None:
    error = error_of(await deployment.request("GET", "/v1/models/" + "x" * 5000), 404, "model_not_found")
    assert "at most 256 characters" in error["message"] and len(error["message"]) < 300


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/v1/models", "GET, HEAD"),
    ("DELETE", "/v1/models", "GET, HEAD"),
    ("OPTIONS", "/v1/models", "GET, HEAD"),
    ("PATCH", "/v1/models/MiniMax-M3", "GET, HEAD, DELETE"),
    ("PUT", "/v1/models/MiniMax-M3", "GET, HEAD, DELETE"),
])
async def test_wrong_methods_are_405_with_allow(deployment: Deployment, method: str, path: str,
                                                allowed: str) -> None:
    response = await deployment.request(method, path)
    error = error_of(response, 405)
    assert response.headers["allow"] == allowed
    assert error["message"] == f"Method {method} is not allowed for {path}; use {allowed}."


async def test_wrong_method_is_405_before_the_key_is_checked(deployment: Deployment) -> None:
    # The method decides first: a POST without a key learns nothing about keys.
    response = await deployment.request("POST", "/v1/models", key=None)
    error_of(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/MiniMax-M3"])
async def test_head_answers_the_headers_of_get_without_a_body(deployment: Deployment, path: str) -> None:
    get = await deployment.request("GET", path)
    head = await deployment.request("HEAD", path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/MiniMax-M3", "/v1/models/aliased-latest"])
async def test_etag_revalidation_answers_304(deployment: Deployment, path: str) -> None:
    first = await deployment.request("GET", path)
    etag = first.headers["etag"]
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await deployment.request("GET", path, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b"" and again.headers["etag"] == etag
        assert REQUEST_ID.fullmatch(again.headers["x-request-id"])
    stale = await deployment.request("GET", path, headers={"If-None-Match": '"0-000000000000"'})
    assert stale.status_code == 200 and stale.content == first.content


async def test_expand_metadata_answers_metadata_under_another_etag(deployment: Deployment) -> None:
    plain = await deployment.request("GET", "/v1/models/meta/model")
    assert plain.json() == {"id": "meta/model", "object": "model", "created": 1700000000, "owned_by": "acme"}
    for query in ("expand=metadata", "expand[]=metadata", "expand=foo,metadata"):
        expanded = await deployment.request("GET", f"/v1/models/meta/model?{query}")
        assert expanded.json() == {**plain.json(), "name": "Meta Model", "context_length": 131072,
                                   "top_provider": {"context_length": 131072, "max_completion_tokens": None}}
        # A cached plain body must never satisfy a request for the expanded one.
        assert expanded.headers["etag"] != plain.headers["etag"]
        revalidated = await deployment.request("GET", f"/v1/models/meta/model?{query}",
                                               headers={"If-None-Match": plain.headers["etag"]})
        assert revalidated.status_code == 200
    listed = (await deployment.request("GET", "/v1/models?expand=metadata")).json()["data"]
    assert next(m for m in listed if m["id"] == "meta/model")["context_length"] == 131072
    assert (await deployment.request("GET", "/v1/models/meta/model?expand=other")).json() == plain.json()


@pytest.mark.parametrize("path", [f"/v1/models/{LLAMA}", "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct",
                                  "/v1/models/meta-llama%2fLlama-3.1-8B-Instruct",
                                  "/v1/models/meta%2Dllama%2FLlama%2D3.1%2D8B%2DInstruct"])
async def test_encoded_slashes_name_the_same_model_as_raw_ones(deployment: Deployment, path: str) -> None:
    response = await deployment.request("GET", path)
    assert response.status_code == 200
    assert response.json() == {"id": LLAMA, "object": "model", "created": 1721692800, "owned_by": "meta"}


@pytest.mark.parametrize("path", ["/v1/models/x/%2E%2E/MiniMax-M2.7", "/v1/models/%2e/MiniMax-M2.7",
                                  "/v1/models/a%2Fb%2F..%2F..%2FMiniMax-M2.7"])
async def test_dot_segments_resolve_before_routing(deployment: Deployment, path: str) -> None:
    response = await deployment.request("GET", path)
    assert response.status_code == 200 and response.json()["id"] == "MiniMax-M2.7"


async def test_dot_segments_climb_out_of_the_models_routes(deployment: Deployment) -> None:
    # ..%2F..%2Fhealthz is /healthz: the side app answers it, not a model lookup.
    response = await deployment.request("GET", "/v1/models/..%2F..%2Fhealthz", key=None)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    error = error_of(await deployment.request("GET", "/v1/models/..%2F..%2Fv1%2Fadmin%2Fkeys"), 403,
                     "insufficient_permissions")
    assert "admin" in error["message"]
    error = error_of(await deployment.request("GET", "/v1/models/%2e%2e"), 404)
    assert error["message"] == "Invalid URL (GET /v1/)"


@pytest.mark.parametrize("path", ["/v1/models", "/healthz", "/v1/nowhere"])
async def test_oversized_headers_are_431_on_every_route(deployment: Deployment, path: str) -> None:
    response = await deployment.request("GET", path, headers={"X-Padding": "a" * 17_000})
    error = error_of(response, 431, "headers_too_large")
    assert str(deployment.harness.settings.max_header_bytes) in error["message"]
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])


async def test_headers_under_the_limit_are_served(deployment: Deployment) -> None:
    assert (await deployment.request("GET", "/v1/models", headers={"X-Padding": "a" * 15_000})).status_code == 200


async def test_every_answer_has_one_request_id_of_openais_shape(deployment: Deployment) -> None:
    etag = (await deployment.request("GET", "/v1/models")).headers["etag"]
    responses = [
        await deployment.request("GET", "/v1/models"),
        await deployment.request("HEAD", "/v1/models/MiniMax-M3"),
        await deployment.request("GET", "/v1/models", headers={"If-None-Match": etag}),
        await deployment.request("GET", "/v1/models/ghost"),
        await deployment.request("GET", "/v1/models", key=None),
        await deployment.request("POST", "/v1/models"),
        await deployment.request("GET", "/v1/models", headers={"X-Padding": "a" * 17_000}),
        await deployment.request("GET", "/healthz", key=None),
        await deployment.request("GET", "/v1/nowhere"),
        await deployment.request("GET", "/v1/admin/models"),
        await deployment.request("POST", "/healthz"),
    ]
    ids = []
    for response in responses:
        values = response.headers.get_list("x-request-id")
        assert len(values) == 1, (response.request.url, response.headers)
        assert REQUEST_ID.fullmatch(values[0]), values
        ids.append(values[0])
    assert len(set(ids)) == len(ids)


async def test_delete_needs_an_admin_key_then_the_model_is_gone(deployment: Deployment) -> None:
    error = error_of(await deployment.request("DELETE", "/v1/models/doomed"), 403, "insufficient_permissions")
    assert "admin scope" in error["message"]
    assert (await deployment.request("GET", "/v1/models/doomed")).status_code == 200
    deleted = await deployment.request("DELETE", "/v1/models/doomed", key="admin")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": "doomed", "object": "model", "deleted": True}
    # Read-your-writes: the same app serves the deletion from the next request on.
    error_of(await deployment.request("GET", "/v1/models/doomed"), 404, "model_not_found")
    assert "doomed" not in {m["id"] for m in (await deployment.request("GET", "/v1/models")).json()["data"]}
    error = error_of(await deployment.request("DELETE", "/v1/models/doomed", key="admin"), 404, "model_not_found")
    assert error["param"] == "model"


async def test_a_delete_answers_for_the_model_as_get_shows_it(deployment: Deployment) -> None:
    """DELETE /v1/models/{id} agrees with GET: an alias is refused (deleting would not remove what GET shows),
    a model the admin key's policy hides or one shut down is not there, and If-Match names the revision."""
    harness = deployment.harness
    error = error_of(await deployment.request("DELETE", "/v1/models/aliased-latest", key="admin"), 409, "conflict")
    assert error["message"] == ("'aliased-latest' is an alias of 'aliased': delete the alias (DELETE "
                                "/v1/admin/aliases/aliased-latest) or the model 'aliased'")
    harness.catalog.create("model", {"id": "narrow-hidden", "owned_by": "acme"})
    harness.catalog.create("model", {"id": "shut-down", "owned_by": "acme", "shutdown_date": "2020-01-01"})
    narrow_admin = harness.key("narrow-admin", "admin", policy={"patterns": ["meta/*"]})
    for model_id, key in (("narrow-hidden", narrow_admin), ("shut-down", "admin")):
        seen = error_of(await deployment.request("GET", f"/v1/models/{model_id}", key=key), 404, "model_not_found")
        refused = error_of(await deployment.request("DELETE", f"/v1/models/{model_id}", key=key), 404,
                           "model_not_found")
        assert refused == seen
    _, revision = harness.catalog.get("model", "narrow-hidden")
    stale = await deployment.request("DELETE", "/v1/models/narrow-hidden", key="admin",
                                     headers={"If-Match": f'"{revision + 1}"'})
    assert "changed since you read it" in error_of(stale, 412, "precondition_failed")["message"]
    assert (await deployment.request("GET", "/v1/models/narrow-hidden")).status_code == 200  # nothing deleted
    current = await deployment.request("DELETE", "/v1/models/narrow-hidden", key="admin",
                                       headers={"If-Match": f'"{revision}"'})
    assert current.json() == {"id": "narrow-hidden", "object": "model", "deleted": True}
    for model_id in ("aliased-latest", "aliased", "shut-down"):  # the refusals changed nothing
        assert harness.catalog.get("model" if model_id != "aliased-latest" else "alias", model_id)


async def test_deleting_a_model_aliases_point_to_is_409(deployment: Deployment) -> None:
    error = error_of(await deployment.request("DELETE", "/v1/models/aliased", key="admin"), 409, "conflict")
    assert "aliased-latest" in error["message"]
    assert (await deployment.request("GET", "/v1/models/aliased")).status_code == 200
    assert (await deployment.request("GET", "/v1/models/aliased-latest")).status_code == 200
