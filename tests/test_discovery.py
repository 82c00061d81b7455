"""Discovery end to end: modeldex learning models from real OpenAI-compatible servers (LiteLLM's proxy from
PyPI, and another modeldex), checked through the official openai SDK: merge, prefix, include/exclude,
operator-defined entries winning, metadata, visibility, outage with grace, recovery, removal, hostile
answers, one poller per upstream across replicas, and the CLI and admin API for all of it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from .conftest import SEED_IDS, Server, create_key, dump_database, free_port, run_cli, wait_until
from .litellm_proxy import LiteLLMProxy

pytestmark = pytest.mark.timeout(900)  # the first run installs LiteLLM into its own venv (about a minute)

LITELLM_KEY = "sk-litellm-master-7f3a9c1e5b"
DUMMY_BACKEND = "http://127.0.0.1:9/v1"  # LiteLLM never calls it to list models
LITELLM_MODELS = [
    {"model_name": "llama-3.1-8b",
     "litellm_params": {"model": "openai/meta-llama/Llama-3.1-8B-Instruct", "api_base": DUMMY_BACKEND,
                        "api_key": "dummy"},
     "model_info": {"max_input_tokens": 131072}},
    {"model_name": "qwen2.5-7b",
     "litellm_params": {"model": "openai/Qwen/Qwen2.5-7B-Instruct", "api_base": DUMMY_BACKEND, "api_key": "dummy"}},
    {"model_name": "embed-small",
     "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": DUMMY_BACKEND, "api_key": "dummy"}},
    # The same id as one of the operator's (seed) models: the operator's entry wins.
    {"model_name": "MiniMax-M2",
     "litellm_params": {"model": "openai/MiniMax-M2", "api_base": DUMMY_BACKEND, "api_key": "dummy"}},
]
LITELLM_IDS = {"llama-3.1-8b", "qwen2.5-7b"}
TEAM_B_IDS = {"team-b/meta-llama/Llama-3.1-70B-Instruct", "team-b/MiniMax-M2.7", "team-b/MiniMax-M2.5",
              "team-b/MiniMax-M2.1", "team-b/MiniMax-M2"}


class TeamB:
    """Another modeldex, on a database of its own, with a read key for the one that polls it."""

    def __init__(self, tmp: Path) -> None:
        self.db_url = f"sqlite:///{tmp}/team-b.db"
        self.key = create_key(self.db_url, "downstream", "read")
        run_cli(self.db_url, "models", "add", "meta-llama/Llama-3.1-70B-Instruct", "--owned-by", "meta",
                "--created", "1721692800", "--context-length", "131072", "--prompt-price", "0.0000009",
                "--completion-price", "0.0000009")
        run_cli(self.db_url, "models", "add", "Qwen/Qwen2.5-72B-Instruct", "--owned-by", "qwen")
        self.server = Server(self.db_url, tmp / "team-b.log", "--metadata")
        self.base_url = self.server.base_url + "/v1"

    def served(self, model_id: str) -> bool:
        return self.server.get(f"/v1/models/{model_id}", self.key).status_code == 200


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    proxy = LiteLLMProxy(tmp_path_factory.mktemp("litellm"), free_port(), LITELLM_MODELS, LITELLM_KEY)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def team_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamB]:
    upstream = TeamB(tmp_path_factory.mktemp("team-b"))
    yield upstream
    upstream.server.stop()


@pytest.fixture
def keys_in_env(monkeypatch: pytest.MonkeyPatch, team_b: TeamB) -> None:
    """The variables the upstreams name, as the servers the tests start inherit them."""
    monkeypatch.setenv("LITELLM_MASTER_KEY", LITELLM_KEY)
    monkeypatch.setenv("TEAM_B_KEY", team_b.key)


def admin_get(server: Server, key: str, path: str) -> dict:
    response = server.get(path, key)
    assert response.status_code == 200, response.text
    return response.json()


def health_of(server: Server, key: str, name: str) -> dict:
    return admin_get(server, key, f"/v1/admin/upstreams/{name}")["health"]


def listed(client: openai.OpenAI) -> dict[str, openai.types.Model]:
    return {m.id: m for m in client.models.list().data}


def sync(server: Server, admin: str, name: str) -> dict:
    response = server.http.post(f"{server.base_url}/v1/admin/upstreams/{name}/sync",
                                headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def cli_over_http(server: Server, admin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(server.db_url, *args, "--url", server.base_url, "--api-key", admin, check=check)


def test_two_upstreams_merge_through_the_sdk(db_url: str, start_server, litellm: LiteLLMProxy, team_b: TeamB,
                                             keys_in_env: None) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)
    run_cli(db_url, "upstreams", "add", "litellm", "--base-url", litellm.base_url,
            "--api-key-env", "LITELLM_MASTER_KEY", "--exclude", "embed-*", "--owned-by", "platform", "--interval", "5s")
    run_cli(db_url, "upstreams", "add", "team-b", "--base-url", team_b.base_url, "--api-key-env", "TEAM_B_KEY",
            "--prefix", "team-b/", "--include", "meta-llama/*", "--include", "MiniMax-M2*", "--exclude", "*highspeed",
            "--interval", "5s")
    client = server.client(admin)
    expected = set(SEED_IDS) | LITELLM_IDS | TEAM_B_IDS
    # The servers' pollers pick new upstreams up within a second or two: no sync-now here.
    assert wait_until(lambda: set(listed(client)) == expected, 15) is not None, sorted(listed(client))
    # A poll writes its models and then its health (two writes, see poll_once): wait for both health records.
    assert wait_until(lambda: all(health_of(server, admin, name)["last_attempt_at"] is not None
                                  for name in ("litellm", "team-b")), 15) is not None

    models = listed(client)
    assert {models[i].owned_by for i in LITELLM_IDS} == {"platform"}  # --owned-by overrides
    assert models["team-b/MiniMax-M2.7"].owned_by == "minimax"  # otherwise the upstream's word
    assert models["team-b/MiniMax-M2.7"].created == 1773799200  # and its created
    operator = models["MiniMax-M2"]  # LiteLLM lists it too: the operator's entry wins
    assert (operator.owned_by, operator.created) == ("minimax", 1761530400)
    assert set(models["llama-3.1-8b"].to_dict()) == {"id", "object", "created", "owned_by"}  # OpenAI's shape

    # Metadata the upstreams expose: LiteLLM's max_input_tokens, modeldex's context_length and pricing.
    llama = client.models.retrieve("llama-3.1-8b", extra_query={"expand": "metadata"}).to_dict()
    assert llama["context_length"] == 131072 and "stale" not in llama
    big = client.models.retrieve("team-b/meta-llama/Llama-3.1-70B-Instruct", extra_query={"expand": "metadata"})
    assert big.to_dict()["context_length"] == 131072
    assert big.to_dict()["pricing"] == {"prompt": "0.0000009", "completion": "0.0000009"}

    # Visibility rules apply to discovered models like to any other.
    team_reader = run_cli(db_url, "keys", "create", "team-reader", "--pattern", "team-b/*").stdout.strip()
    assert wait_until(lambda: server.get("/v1/models", team_reader).status_code == 200, 2) is not None
    assert set(listed(server.client(team_reader))) == TEAM_B_IDS
    with pytest.raises(openai.NotFoundError):
        server.client(team_reader).models.retrieve("llama-3.1-8b")

    # Health, in the admin API and the CLI.
    upstreams = {u["name"]: u for u in admin_get(server, admin, "/v1/admin/upstreams")["data"]}
    litellm_health, team_health = upstreams["litellm"]["health"], upstreams["team-b"]["health"]
    assert (litellm_health["status"], litellm_health["model_count"], team_health["model_count"]) == ("ok", 2, 5)
    assert litellm_health["shadowed"] == [{"id": "MiniMax-M2", "by": "operator"}]
    assert litellm_health["latency_ms"] > 0 and litellm_health["last_success_at"] and not litellm_health["last_error"]
    assert upstreams["litellm"]["api_key_env"] == "LITELLM_MASTER_KEY"
    rows = [line.split() for line in cli_over_http(server, admin, "upstreams", "list").stdout.splitlines()]
    assert rows[0] == ["NAME", "BASE_URL", "MODELS", "STATUS", "LAST", "SUCCESS", "LATENCY", "ERROR", "INFERENCE"]
    assert [r[3] for r in rows[1:]] == ["ok", "ok"]
    assert [r[-1] for r in rows[1:]] == ["-", "-"]  # through a server: no inference request went to them yet
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("litellm", litellm.base_url, "2"),
                                                      ("team-b", team_b.base_url, "5")]

    # Discovered models are in the change feed, by their upstream.
    feed = admin_get(server, admin, "/v1/admin/changes?limit=10000")["data"]
    assert {(c["actor"], c["id"]) for c in feed if c["op"] == "create" and c["entity"] == "model"} >= {
        ("upstream:litellm", "llama-3.1-8b"), ("upstream:team-b", "team-b/MiniMax-M2")}
    assert admin_get(server, admin, "/v1/admin/models/llama-3.1-8b")["source"] == "litellm"

    # The upstreams' keys are read from the environment: never stored, exported or logged.
    exported = run_cli(db_url, "catalog", "export").stdout
    assert "LITELLM_MASTER_KEY" in exported and "llama-3.1-8b" not in exported  # discovered: not exported
    for secret in (LITELLM_KEY, team_b.key):
        assert secret not in dump_database(db_url) and secret not in exported and secret not in server.log()


def test_outage_grace_recovery_and_removal(db_url: str, start_server, litellm: LiteLLMProxy, team_b: TeamB,
                                           keys_in_env: None) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)
    client = server.client(admin)
    run_cli(team_b.db_url, "models", "add", "doomed/model-1", "--owned-by", "team-b")
    assert wait_until(lambda: team_b.served("doomed/model-1"), 2) is not None
    run_cli(db_url, "upstreams", "add", "litellm", "--base-url", litellm.base_url,
            "--api-key-env", "LITELLM_MASTER_KEY", "--exclude", "embed-*", "--grace", "5s", "--interval", "1h")
    run_cli(db_url, "upstreams", "add", "team-b", "--base-url", team_b.base_url, "--api-key-env", "TEAM_B_KEY",
            "--prefix", "team-b/", "--include", "doomed/*", "--include", "MiniMax-M2.7", "--grace", "5s",
            "--interval", "1h")
    ours = LITELLM_IDS | {"team-b/doomed/model-1", "team-b/MiniMax-M2.7"}
    assert wait_until(lambda: ours <= set(listed(client)), 10) is not None

    # A model disappears from a healthy upstream, and LiteLLM goes away altogether. Both upstreams'
    # models stay served, the missing and the unreachable ones marked stale, for the grace period.
    run_cli(team_b.db_url, "models", "remove", "doomed/model-1")
    assert wait_until(lambda: not team_b.served("doomed/model-1"), 2) is not None
    litellm.stop()
    try:
        failed = cli_over_http(server, admin, "upstreams", "sync-now", "litellm", check=False)
        assert failed.returncode == 1 and "sync of litellm failed: cannot reach" in failed.stderr
        assert sorted(failed.stdout.splitlines()) == ["! model llama-3.1-8b (stale)", "! model qwen2.5-7b (stale)"]
        synced = sync(server, admin, "team-b")
        assert synced["ok"] and synced["stale"] == ["team-b/doomed/model-1"] and synced["health"]["status"] == "ok"
        assert ours <= set(listed(client))
        for model_id in ("qwen2.5-7b", "team-b/doomed/model-1"):
            assert client.models.retrieve(model_id, extra_query={"expand": "metadata"}).to_dict()["stale"] is True
        assert "stale" not in client.models.retrieve("team-b/MiniMax-M2.7", extra_query={"expand": "metadata"}).to_dict()
        assert set(client.models.retrieve("qwen2.5-7b").to_dict()) == {"id", "object", "created", "owned_by"}
        health = health_of(server, admin, "litellm")
        assert health["status"] == "failing" and health["failing_since"] and health["model_count"] == 2
        assert "cannot reach" in health["last_error"]
        row = cli_over_http(server, admin, "upstreams", "list").stdout.splitlines()[1]
        assert row.split()[:4] == ["litellm", litellm.base_url, "2", "(stale)"]

        # After the grace period the server's own poller removes them (it polls when a grace period ends),
        # through the change feed.
        gone = LITELLM_IDS | {"team-b/doomed/model-1"}
        assert wait_until(lambda: not gone & set(listed(client)), 15) is not None
        assert "team-b/MiniMax-M2.7" in listed(client)
        feed = admin_get(server, admin, "/v1/admin/changes?limit=10000")["data"]
        assert {c["id"] for c in feed if c["op"] == "delete" and c["actor"] == "upstream:litellm"} == LITELLM_IDS
        assert [(c["op"], c["actor"]) for c in feed if c["id"] == "team-b/doomed/model-1"] == [
            ("create", "upstream:team-b"), ("update", "upstream:team-b"), ("delete", "upstream:team-b")]
        # The poll that removed them records its health in a second write (see poll_once): wait for it.
        assert wait_until(lambda: health_of(server, admin, "litellm")["model_count"] == 0, 15) is not None
    finally:
        litellm.start()

    # Recovery: LiteLLM is back, and so are its models, fresh.
    recovered = cli_over_http(server, admin, "upstreams", "sync-now", "litellm")
    assert sorted(recovered.stdout.splitlines()) == ["+ model llama-3.1-8b", "+ model qwen2.5-7b"]
    assert set(listed(client)) >= LITELLM_IDS
    health = health_of(server, admin, "litellm")
    assert health["status"] == "ok" and health["failing_since"] is None and health["model_count"] == 2
    assert health["last_success_at"] > health["last_error_at"]  # the last error stays on record
