"""The admin API: validation, optimistic concurrency, the change feed, metadata, lifecycle, caching."""

from __future__ import annotations

import concurrent.futures
import itertools
import time

import httpx
import openai
import pytest

from .conftest import Deployment, create_key, run_cli, wait_until


def call(deployment: Deployment, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or deployment.admin_key}", **kwargs.pop("headers", {})}
    return deployment.server.http.request(method, deployment.server.base_url + path, headers=headers, timeout=10,
                                          **kwargs)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(("body", "param"), [
    ({"id": "bad id"}, "id"),
    ({"id": "ok-1", "context_length": 0}, "context_length"),
    ({"id": "ok-2", "context_length": "big"}, "context_length"),
    ({"id": "ok-3", "pricing": {"prompt": "cheap"}}, "pricing.prompt"),
    ({"id": "ok-4", "input_modalities": ["smell"]}, "input_modalities.0"),
    ({"id": "ok-5", "shutdown_date": "soon"}, "shutdown_date"),
    ({"id": "ok-6", "created": -1}, "created"),
    ({"id": "ok-7", "colour": "blue"}, "colour"),
    ({"owned_by": "x"}, "id"),
])
def test_invalid_models_are_400s_naming_the_field(deployment: Deployment, body: dict, param: str) -> None:
    before = call(deployment, "GET", "/v1/admin/changes").json()["version"]
    error = error_of(call(deployment, "POST", "/v1/admin/models", json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"]
    assert call(deployment, "GET", "/v1/admin/changes").json()["version"] == before


def test_bodies_that_are_not_json_objects_are_400s(deployment: Deployment) -> None:
    assert error_of(call(deployment, "POST", "/v1/admin/models", content=b"{nope"), 400)["code"] == "invalid_json"
    assert error_of(call(deployment, "POST", "/v1/admin/models", json=[1]), 400)["code"] == "invalid_json"


def test_admin_api_needs_an_admin_key(deployment: Deployment) -> None:
    error = error_of(call(deployment, "GET", "/v1/admin/models", key=deployment.read_key), 403)
    assert error["code"] == "insufficient_permissions"
    assert error_of(httpx.get(deployment.server.base_url + "/v1/admin/models"), 401)["code"] is None


def test_read_update_with_etags_and_stale_writes(deployment: Deployment) -> None:
    created = call(deployment, "POST", "/v1/admin/models", json={"id": "etag/model", "owned_by": "acme"})
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    read = call(deployment, "GET", "/v1/admin/models/etag/model")
    assert read.headers["etag"] == '"1"' and read.json()["revision"] == 1
    updated = call(deployment, "PATCH", "/v1/admin/models/etag%2Fmodel", json={"context_length": 4096},
                   headers={"If-Match": '"1"'})
    assert updated.status_code == 200 and updated.headers["etag"] == '"2"'
    assert updated.json()["context_length"] == 4096
    stale = call(deployment, "PATCH", "/v1/admin/models/etag/model", json={"context_length": 1},
                 headers={"If-Match": '"1"'})
    assert error_of(stale, 412)["code"] == "precondition_failed"
    assert call(deployment, "GET", "/v1/admin/models/etag/model").json()["context_length"] == 4096
    cleared = call(deployment, "PATCH", "/v1/admin/models/etag/model", json={"context_length": None})
    assert "context_length" not in cleared.json()
    assert error_of(call(deployment, "PATCH", "/v1/admin/models/etag/model", json={"id": "other"}), 400)["param"] == "id"
    assert error_of(call(deployment, "DELETE", "/v1/admin/models/etag/model", headers={"If-Match": '"1"'}), 412)
    assert call(deployment, "DELETE", "/v1/admin/models/etag/model").json() == {
        "id": "etag/model", "object": "model", "deleted": True}
    assert error_of(call(deployment, "GET", "/v1/admin/models/etag/model"), 404)["code"] == "model_not_found"


def test_concurrent_updates_lose_nothing(deployment: Deployment) -> None:
    """Many writers race on one model with If-Match: each accepted write is a new revision in the feed."""
    assert call(deployment, "POST", "/v1/admin/models", json={"id": "contended", "context_length": 999_999}).status_code == 201
    since = call(deployment, "GET", "/v1/admin/changes").json()["version"]

    def writer(n: int) -> tuple[int, int]:
        accepted = stale = 0
        for attempt in range(6):
            current = call(deployment, "GET", "/v1/admin/models/contended")
            value = 1000 * n + attempt + 1
            response = call(deployment, "PATCH", "/v1/admin/models/contended", json={"context_length": value},
                            headers={"If-Match": current.headers["etag"]})
            if response.status_code == 200:
                accepted += 1
            else:
                assert response.status_code == 412, response.text
                stale += 1
        return accepted, stale

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(writer, range(8)))
    accepted = sum(a for a, _ in results)
    assert sum(s for _, s in results) + accepted == 48
    assert accepted >= 6
    feed = [c for c in call(deployment, "GET", f"/v1/admin/changes?since={since}&limit=1000").json()["data"]
            if c["id"] == "contended"]
    assert len(feed) == accepted
    # The updates form one unbroken chain: each starts from the state the previous one left.
    for previous, following in itertools.pairwise(feed):
        assert following["before"] == previous["after"]
        assert following["version"] > previous["version"]
    final = call(deployment, "GET", "/v1/admin/models/contended")
    assert final.json()["revision"] == 1 + accepted
    assert final.json()["context_length"] == feed[-1]["after"]["context_length"]


def test_change_feed_records_who_did_what(deployment: Deployment) -> None:
    since = call(deployment, "GET", "/v1/admin/changes").json()["version"]
    call(deployment, "POST", "/v1/admin/models", json={"id": "fed/one"})
    deployment.cli("models", "update", "fed/one", "--context-length", "8192")
    call(deployment, "DELETE", "/v1/admin/models/fed/one")
    feed = call(deployment, "GET", f"/v1/admin/changes?since={since}").json()
    entries = [(c["op"], c["actor"]) for c in feed["data"] if c["id"] == "fed/one"]
    assert entries[0] == ("create", "key:admin")
    assert entries[1][0] == "update" and entries[1][1].startswith("cli")
    assert entries[2] == ("delete", "key:admin")
    assert feed["version"] >= since + 3 and feed["has_more"] is False
    assert error_of(call(deployment, "GET", "/v1/admin/changes?since=-1"), 400)["param"] == "since"


def test_key_secrets_are_shown_once(deployment: Deployment) -> None:
    created = call(deployment, "POST", "/v1/admin/keys", json={"name": "once", "scope": "read"})
    assert created.status_code == 201
    secret = created.json()["secret"]
    # Usable at once, and it sees what any read key without a policy sees.
    listed = {m.id for m in deployment.server.client(secret).models.list().data}
    assert "MiniMax-M3" in listed
    assert listed == {m.id for m in deployment.server.client(deployment.read_key).models.list().data}
    for path in ("/v1/admin/keys", "/v1/admin/keys/once", "/v1/admin/changes?limit=10000"):
        assert secret not in call(deployment, "GET", path).text
        assert secret[-40:] not in call(deployment, "GET", path).text
    assert error_of(call(deployment, "POST", "/v1/admin/keys", json={"name": "once"}), 409)["code"] == "already_exists"
    assert error_of(call(deployment, "POST", "/v1/admin/keys", json={"name": "x", "scope": "root"}), 400)["param"] == "scope"
    assert call(deployment, "DELETE", "/v1/admin/keys/once").status_code == 200
    assert wait_until(lambda: deployment.server.get("/v1/models", secret).status_code == 401, 1.0) is not None


def test_models_with_aliases_cannot_be_deleted_out_from_under_them(deployment: Deployment) -> None:
    call(deployment, "POST", "/v1/admin/models", json={"id": "aliased"})
    call(deployment, "POST", "/v1/admin/aliases", json={"id": "aliased-latest", "target": "aliased"})
    error = error_of(call(deployment, "DELETE", "/v1/admin/models/aliased"), 409)
    assert "aliased-latest" in error["message"]
    assert error_of(call(deployment, "POST", "/v1/admin/aliases", json={"id": "a2", "target": "ghost"}), 400)["param"] == "target"
    assert error_of(call(deployment, "POST", "/v1/admin/aliases", json={"id": "aliased", "target": "MiniMax-M3"}), 409)


def test_metadata_is_answered_on_request(deployment: Deployment) -> None:
    body = {"id": "meta/model", "owned_by": "acme", "created": 1700000000, "name": "Meta Model",
            "context_length": 131072, "max_output_tokens": 8192, "input_modalities": ["text", "image"],
            "output_modalities": ["text"], "pricing": {"prompt": "0.0000003", "completion": "0.0000012"},
            "description": "A test model", "replaced_by": "MiniMax-M3"}
    assert call(deployment, "POST", "/v1/admin/models", json=body).status_code == 201
    assert wait_until(lambda: deployment.server.get("/v1/models/meta/model", deployment.read_key).status_code == 200, 1)
    plain = deployment.server.get("/v1/models/meta/model", deployment.read_key).json()
    assert plain == {"id": "meta/model", "object": "model", "created": 1700000000, "owned_by": "acme"}
    expanded = deployment.server.get("/v1/models/meta/model?expand=metadata", deployment.read_key).json()
    assert expanded["context_length"] == 131072 and expanded["name"] == "Meta Model"
    assert expanded["pricing"] == {"prompt": "0.0000003", "completion": "0.0000012"}
    assert expanded["architecture"] == {"input_modalities": ["text", "image"], "output_modalities": ["text"]}
    assert expanded["top_provider"] == {"context_length": 131072, "max_completion_tokens": 8192}
    sdk_model = deployment.server.client(deployment.read_key).models.retrieve(
        "meta/model", extra_query={"expand": "metadata"})
    assert sdk_model.context_length == 131072  # type: ignore[attr-defined]
    listed = deployment.server.get("/v1/models?expand=metadata", deployment.read_key).json()["data"]
    assert next(m for m in listed if m["id"] == "meta/model")["context_length"] == 131072


def test_metadata_is_answered_always_when_the_deployment_says_so(db_url: str, start_server) -> None:
    key = create_key(db_url, "meta-reader")
    run_cli(db_url, "models", "add", "other/model", "--context-length", "4096")
    server = start_server(db_url, "--metadata")
    assert server.get("/v1/models/other%2Fmodel", key).json()["context_length"] == 4096


def test_models_past_their_shutdown_date_are_gone_without_a_delete(deployment: Deployment) -> None:
    call(deployment, "POST", "/v1/admin/models", json={"id": "retired", "shutdown_date": "2020-01-01"})
    # In whole seconds: 3 to 4 s from now, so that it is still served while the checks below run (with +2 s it
    # was 1 to 2 s, less than they can take on a loaded machine).
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    call(deployment, "POST", "/v1/admin/models", json={"id": "retiring", "shutdown_date": soon,
                                                         "replaced_by": "MiniMax-M3"})
    client = deployment.server.client(deployment.read_key)
    assert wait_until(lambda: deployment.server.get("/v1/models/retiring", deployment.read_key).status_code == 200, 1)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("retired")
    assert caught.value.code == "model_not_found"
    assert "retired" not in {m.id for m in client.models.list().data}
    assert "retiring" in {m.id for m in client.models.list().data}
    assert wait_until(lambda: deployment.server.get("/v1/models/retiring", deployment.read_key).status_code == 404,
                      10.0) is not None
    assert "retiring" not in {m.id for m in client.models.list().data}
    assert call(deployment, "GET", "/v1/admin/models/retired").status_code == 200  # still in the catalog


def test_http_caching(deployment: Deployment) -> None:
    first = deployment.server.get("/v1/models", deployment.read_key)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    assert first.headers["vary"] == "Authorization"
    again = deployment.server.get("/v1/models", deployment.read_key, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert deployment.server.get("/v1/models", deployment.read_key,
                                 headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    item = deployment.server.get("/v1/models/MiniMax-M2", deployment.read_key)
    assert deployment.server.get("/v1/models/MiniMax-M2", deployment.read_key,
                                 headers={"If-None-Match": item.headers["etag"]}).status_code == 304
    # Another view (another policy) never shares an ETag; a change makes a new one.
    other_key = create_key(deployment.db_url, "narrow-cache")
    call(deployment, "PATCH", "/v1/admin/keys/narrow-cache", json={"policy": {"patterns": ["MiniMax-M2"]}})
    assert wait_until(lambda: deployment.server.get("/v1/models", other_key).status_code == 200, 1)
    narrow = deployment.server.get("/v1/models", other_key, headers={"If-None-Match": etag})
    assert narrow.status_code == 200 and narrow.headers["etag"] != etag
    call(deployment, "POST", "/v1/admin/models", json={"id": "cache-buster"})
    assert deployment.server.get("/v1/models", deployment.read_key, headers={"If-None-Match": etag}).status_code == 200
