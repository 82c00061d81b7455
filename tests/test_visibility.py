"""One visibility policy: keys of different policies see exactly what their policy says, in list and
retrieve alike, through the openai SDK; `explain` agrees with both; hidden is byte-identical to absent."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import Deployment, wait_until

EXTRA_MODELS = ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", "qwen/Qwen3-8B",
                "ft:gpt-4o:acme::x1"]
POLICIES = {
    "everything": None,
    "minimax": {"groups": ["minimax-chat"]},
    "llama": {"patterns": ["meta-llama/*"]},
    "mixed": {"groups": ["small"], "patterns": ["ft:*"]},
    "m27": {"patterns": ["MiniMax-M2.7*"]},
}
EXPECTED = {
    "minimax": {"MiniMax-M3", "MiniMax-M3.1-Flash-Preview", "MiniMax-M2.7", "MiniMax-M2.7-highspeed",
                "MiniMax-M2.5", "MiniMax-M2.5-highspeed", "MiniMax-M2.1", "MiniMax-M2.1-highspeed", "MiniMax-M2",
                "MiniMax-latest"},
    "llama": {"meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", "llama-small"},
    "mixed": {"qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct", "llama-small", "ft:gpt-4o:acme::x1"},
    "m27": {"MiniMax-M2.7", "MiniMax-M2.7-highspeed"},
}


def admin(deployment: Deployment, method: str, path: str, **kwargs) -> httpx.Response:
    return deployment.server.http.request(
        method, deployment.server.base_url + path, timeout=10,
        headers={"Authorization": f"Bearer {deployment.admin_key}", **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture(scope="module")
def keys(deployment: Deployment) -> dict[str, str]:
    for model_id in EXTRA_MODELS:
        assert admin(deployment, "POST", "/v1/admin/models", json={"id": model_id, "owned_by": "acme",
                                                                    "created": 1700000000}).status_code == 201
    assert admin(deployment, "POST", "/v1/admin/aliases",
                 json={"id": "MiniMax-latest", "target": "MiniMax-M3"}).status_code == 201
    assert admin(deployment, "POST", "/v1/admin/aliases",
                 json={"id": "llama-small", "target": "meta-llama/Llama-3.1-8B-Instruct"}).status_code == 201
    assert admin(deployment, "POST", "/v1/admin/aliases",
                 json={"id": "secret-alias", "target": "MiniMax-M2", "hidden": True}).status_code == 201
    assert admin(deployment, "POST", "/v1/admin/groups",
                 json={"name": "minimax-chat", "members": ["MiniMax-*"]}).status_code == 201
    assert admin(deployment, "POST", "/v1/admin/groups",
                 json={"name": "small", "members": ["qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"]}
                 ).status_code == 201
    secrets = {}
    for name, policy in POLICIES.items():
        body = {"name": name, "scope": "read", **({"policy": policy} if policy else {})}
        response = admin(deployment, "POST", "/v1/admin/keys", json=body)
        assert response.status_code == 201, response.text
        secrets[name] = response.json()["secret"]
    return secrets


def all_ids(deployment: Deployment) -> set[str]:
    listed = deployment.server.client(deployment.admin_key).models.list()
    return {m.id for m in listed.data}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_list_retrieve_and_explain_agree(deployment: Deployment, keys: dict[str, str], name: str) -> None:
    client = deployment.server.client(keys[name])
    universe = all_ids(deployment) | {"secret-alias", "no-such-model"}
    expected = EXPECTED.get(name, universe - {"secret-alias", "no-such-model"})

    listed = {m.id for m in client.models.list().data}
    assert listed == expected

    for model_id in sorted(universe):
        explained = admin(deployment, "GET", f"/v1/admin/keys/{name}/explain", params={"model": model_id}).json()
        try:
            retrieved = client.models.retrieve(model_id)
        except openai.NotFoundError as error:
            assert error.code == "model_not_found"
            assert explained["visible"] is False, explained
            assert model_id not in listed
        else:
            assert retrieved.id == model_id
            assert explained["visible"] is True, explained
            assert model_id in listed or model_id == "secret-alias"


def test_cli_explain_says_the_same(deployment: Deployment, keys: dict[str, str]) -> None:
    assert deployment.cli("keys", "explain", "llama", "llama-small").stdout.strip() == (
        "llama-small: visible to key 'llama': alias of 'meta-llama/Llama-3.1-8B-Instruct': "
        "allowed by pattern 'meta-llama/*'")
    assert deployment.cli("keys", "explain", "m27", "MiniMax-M3").stdout.strip() == (
        "MiniMax-M3: not visible to key 'm27': no group or pattern of the key's policy matches")


def test_explain_names_the_deciding_rule(deployment: Deployment, keys: dict[str, str]) -> None:
    def explain(key: str, model: str) -> dict:
        return admin(deployment, "GET", f"/v1/admin/keys/{key}/explain", params={"model": model}).json()

    assert explain("minimax", "MiniMax-M2.5") == {
        "key": "minimax", "model": "MiniMax-M2.5", "visible": True,
        "rule": "allowed by group 'minimax-chat' (member 'MiniMax-*')"}
    assert explain("llama", "qwen/Qwen3-8B")["visible"] is False
    assert explain("mixed", "ft:gpt-4o:acme::x1")["rule"] == "allowed by pattern 'ft:*'"
    assert explain("llama", "llama-small")["rule"].startswith("alias of 'meta-llama/Llama-3.1-8B-Instruct': allowed")
    assert explain("everything", "nope") == {"key": "everything", "model": "nope", "visible": False,
                                             "rule": "no such model"}


def test_hidden_is_byte_identical_to_absent(deployment: Deployment, keys: dict[str, str]) -> None:
    def raw(model_id: str) -> httpx.Response:
        return deployment.server.get(f"/v1/models/{model_id}", keys["llama"])

    hidden, absent = raw("MiniMax-M3"), raw("MiniMax-M3-does-not-exist")
    assert hidden.status_code == absent.status_code == 404
    assert hidden.content.replace(b"MiniMax-M3", b"X") == absent.content.replace(b"MiniMax-M3-does-not-exist", b"X")
    strip = {"x-request-id", "date", "content-length"}
    assert {k: v for k, v in hidden.headers.items() if k not in strip} == \
           {k: v for k, v in absent.headers.items() if k not in strip}
    same_id_hidden = deployment.server.get("/v1/models/qwen%2FQwen3-8B", keys["llama"])
    assert same_id_hidden.content == deployment.server.get("/v1/models/qwen%2FQwen3-8B", keys["m27"]).content


def test_aliases_answer_with_their_own_id_and_hidden_ones_stay_out_of_lists(
        deployment: Deployment, keys: dict[str, str]) -> None:
    client = deployment.server.client(keys["everything"])
    latest = client.models.retrieve("MiniMax-latest")
    target = client.models.retrieve("MiniMax-M3")
    assert (latest.id, latest.created, latest.owned_by) == ("MiniMax-latest", target.created, target.owned_by)
    ids = [m.id for m in client.models.list().data]
    assert "MiniMax-latest" in ids and "secret-alias" not in ids
    assert client.models.retrieve("secret-alias").id == "secret-alias"


def test_policy_changes_apply_within_a_second(deployment: Deployment, keys: dict[str, str]) -> None:
    deployment.cli("keys", "update", "m27", "--pattern", "MiniMax-M2.5")
    client = deployment.server.client(keys["m27"])
    assert wait_until(lambda: {m.id for m in client.models.list().data} == {"MiniMax-M2.5"}, 1.0) is not None
    deployment.cli("groups", "set", "small", "qwen/*")
    mixed = deployment.server.client(keys["mixed"])
    assert wait_until(lambda: {m.id for m in mixed.models.list().data} == {"qwen/Qwen3-8B", "ft:gpt-4o:acme::x1"},
                      1.0) is not None


def test_unknown_groups_are_refused_in_policies(deployment: Deployment, keys: dict[str, str]) -> None:
    response = admin(deployment, "POST", "/v1/admin/keys", json={"name": "x", "policy": {"groups": ["ghost"]}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "policy.groups"
    result = deployment.cli("keys", "create", "y", "--group", "ghost", check=False)
    assert result.returncode == 1 and "group 'ghost' does not exist" in result.stderr
