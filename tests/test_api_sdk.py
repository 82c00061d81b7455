"""The Models API through the official openai SDK: what OpenAI clients see."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
import yaml

from .conftest import SEED_IDS, SEED_SPEC, Deployment, wait_until

REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
# OpenAI's own words for a request without a key, and where to get one here.
MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY). An administrator can create one with `modeldex keys create NAME`."
)


def test_retrieve_matches_the_seed_example(deployment: Deployment) -> None:
    spec = yaml.safe_load(SEED_SPEC.read_text())
    example = spec["paths"]["/v1/models/{model_id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["examples"]["默认响应"]["value"]
    client = deployment.server.client(deployment.read_key)

    model = client.models.retrieve(example["id"])

    assert model.to_dict() == example
    raw = deployment.server.get(f"/v1/models/{example['id']}", deployment.read_key)
    assert raw.json() == example
    assert list(raw.json()) == ["id", "object", "created", "owned_by"]
    assert raw.headers["content-type"] == "application/json"


def test_seed_catalog_is_listed_newest_first(deployment: Deployment) -> None:
    client = deployment.server.client(deployment.read_key)
    page = client.models.list()
    listed = [m for m in page.data if m.owned_by == "minimax"]
    assert [m.id for m in listed] == SEED_IDS
    created = {m.id: m.created for m in listed}
    assert created["MiniMax-M3"] == 1780272000
    assert created["MiniMax-M2.7"] == 1773799200
    assert created["MiniMax-M2.5"] == 1770948000
    assert all(m.object == "model" for m in page.data)


def test_list_is_the_openai_list_object(deployment: Deployment) -> None:
    body = deployment.server.get("/v1/models", deployment.read_key).json()
    assert list(body) == ["object", "data"]
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == sorted(ids, key=lambda i: (-next(m["created"] for m in body["data"] if m["id"] == i), i))
    again = deployment.server.get("/v1/models", deployment.read_key).json()
    assert again == body


@pytest.mark.parametrize("model_id", [
    "meta-llama/Llama-3.1-8B-Instruct",
    "ft:gpt-4o:acme::x1",
    "org/model@2024-08-06",
    "Qwen/Qwen2.5-72B-Instruct:q4_K_M",
])
def test_ids_with_slash_colon_and_at_round_trip_through_the_sdk(deployment: Deployment, model_id: str) -> None:
    deployment.add_model(model_id, "--owned-by", "acme", "--created", "1700000000")
    client = deployment.server.client(deployment.read_key)
    model = client.models.retrieve(model_id)
    assert (model.id, model.created, model.owned_by) == (model_id, 1700000000, "acme")
    assert model_id in [m.id for m in client.models.list().data]


def test_delete_with_an_admin_key(deployment: Deployment) -> None:
    deployment.add_model("vllm/doomed-model", "--owned-by", "vllm")
    admin = deployment.server.client(deployment.admin_key)

    deleted = admin.models.delete("vllm/doomed-model")

    assert deleted.to_dict() == {"id": "vllm/doomed-model", "object": "model", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        admin.models.retrieve("vllm/doomed-model")
    assert caught.value.code == "model_not_found"
    assert "vllm/doomed-model" not in [m.id for m in admin.models.list().data]
    assert "vllm/doomed-model" not in deployment.cli("models", "list").stdout


def test_delete_of_an_unknown_model_is_404(deployment: Deployment) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        deployment.server.client(deployment.admin_key).models.delete("no-such-model")
    assert caught.value.code == "model_not_found"


def test_read_key_cannot_delete(deployment: Deployment) -> None:
    reader = deployment.server.client(deployment.read_key)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        reader.models.delete("MiniMax-M2")
    assert caught.value.status_code == 403
    assert caught.value.code == "insufficient_permissions"
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert reader.models.retrieve("MiniMax-M2").id == "MiniMax-M2"


def test_unknown_model_is_not_found(deployment: Deployment) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        deployment.server.client(deployment.read_key).models.retrieve("gpt-9")
    error = caught.value
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.type == "invalid_request_error"
    assert "gpt-9" in error.message
    assert REQUEST_ID.fullmatch(error.request_id or "")


def test_missing_key_is_401_with_instructions(deployment: Deployment) -> None:
    # The SDK will not send an empty key itself, so blank the header it would send.
    client = deployment.server.client(deployment.read_key)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list(extra_headers={"Authorization": ""})
    assert caught.value.code is None
    assert "Authorization: Bearer" in caught.value.message
    response = deployment.server.get("/v1/models")
    assert response.status_code == 401
    assert response.json() == {"error": {
        "message": MISSING_KEY_MESSAGE,
        "type": "invalid_request_error", "param": None, "code": None,
    }}
    assert "Authorization header" in response.json()["error"]["message"]


def test_wrong_key_is_401_and_masked(deployment: Deployment) -> None:
    wrong = "sk-mdx-" + "Z" * 12 + "q" * 36 + "WXYZ"
    with pytest.raises(openai.AuthenticationError) as caught:
        deployment.server.client(wrong).models.retrieve("MiniMax-M2.7")
    error = caught.value
    assert error.code == "invalid_api_key"
    assert wrong not in error.message
    assert "WXYZ" in error.message and "*" in error.message
    assert error.body["param"] is None  # type: ignore[index]


def test_revoked_key_is_rejected(deployment: Deployment) -> None:
    key = deployment.cli("keys", "create", "short-lived").stdout.strip()
    client = deployment.server.client(key)
    assert wait_until(lambda: deployment.server.get("/v1/models", key).status_code == 200, 2) is not None
    deployment.cli("keys", "revoke", "short-lived")
    assert wait_until(lambda: deployment.server.get("/v1/models", key).status_code == 401, 2) is not None
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.code == "invalid_api_key"


def test_every_response_has_an_openai_request_id(deployment: Deployment) -> None:
    client = deployment.server.client(deployment.read_key)
    raw = client.models.with_raw_response.retrieve("MiniMax-M3")
    assert REQUEST_ID.fullmatch(raw.headers["x-request-id"])
    assert raw.request_id == raw.headers["x-request-id"]
    seen = set()
    for path, key in [("/v1/models", deployment.read_key), ("/v1/models", None), ("/v1/nope", None),
                      ("/healthz", None), ("/openapi.json", None), ("/v1/models/gpt-9", deployment.read_key)]:
        request_id = deployment.server.get(path, key).headers["x-request-id"]
        assert REQUEST_ID.fullmatch(request_id)
        seen.add(request_id)
    assert len(seen) == 6


def test_a_repeated_request_is_answered_alike_with_its_own_request_id(deployment: Deployment) -> None:
    """From the second ask on, one path with one key is answered from the remembered answer, in granian's
    dispatch itself (`ModeldexApp.__rsgi__`, which the in-process tests do not reach): the same status,
    headers and body as the first, each with a request id of its own."""
    answers = [deployment.server.get("/v1/models/MiniMax-M2.7", deployment.read_key) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200] * 5
    assert {answer.content for answer in answers} == {answers[0].content}
    assert json.loads(answers[0].content)["id"] == "MiniMax-M2.7"
    assert len({answer.headers["x-request-id"] for answer in answers}) == 5

    def kept(headers: httpx.Headers) -> dict[str, str]:
        return {name: value for name, value in headers.items() if name not in ("x-request-id", "date")}

    assert all(kept(answer.headers) == kept(answers[0].headers) for answer in answers)


def test_unknown_route_and_wrong_method_through_the_sdk(deployment: Deployment) -> None:
    client = deployment.server.client(deployment.read_key)
    with pytest.raises(openai.NotFoundError) as caught:
        client.get("/fine_tuning/jobs", cast_to=object)
    assert caught.value.code is None
    assert caught.value.body["message"] == "Invalid URL (GET /v1/fine_tuning/jobs)"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as wrong_method:
        client.post("/models", cast_to=object, body={"id": "x"})
    assert wrong_method.value.status_code == 405
    assert wrong_method.value.response.headers["allow"] == "GET, HEAD"
    assert wrong_method.value.body["type"] == "invalid_request_error"  # type: ignore[index]
