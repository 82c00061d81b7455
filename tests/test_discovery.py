"""Discovery end to end: modeldex learning models from real OpenAI-compatible servers (LiteLLM's proxy from
PyPI, and another modeldex), checked through the official openai SDK: merge, prefix, include/exclude,
operator-defined entries winning, metadata, visibility, outage with grace, recovery, removal, hostile
answers, one poller per upstream across replicas, and the CLI and admin API for all of it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from .conftest import SEED_IDS, Server, cli_env, create_key, dump_database, free_port, run_cli, wait_until
from .fake_upstream import FakeUpstream
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
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream([{"id": "good-1", "object": "model", "owned_by": "fake"},
                             {"id": "good-2", "object": "model", "owned_by": "fake"}])
    yield upstream
    upstream.close()


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
        assert health_of(server, admin, "litellm")["model_count"] == 0
    finally:
        litellm.start()

    # Recovery: LiteLLM is back, and so are its models, fresh.
    recovered = cli_over_http(server, admin, "upstreams", "sync-now", "litellm")
    assert sorted(recovered.stdout.splitlines()) == ["+ model llama-3.1-8b", "+ model qwen2.5-7b"]
    assert set(listed(client)) >= LITELLM_IDS
    health = health_of(server, admin, "litellm")
    assert health["status"] == "ok" and health["failing_since"] is None and health["model_count"] == 2
    assert health["last_success_at"] > health["last_error_at"]  # the last error stays on record


HOSTILE = [
    ("html", "the answer is not JSON (starts with b'<!DOCTYPE html>"),
    ("huge", "more than the 4194304 bytes allowed"),
    ("huge-chunked", "larger than the 4194304 bytes allowed"),
    ("stall", "no answer from"),
    ("control", r"invalid answer: data[2].id 'evil\x1b[31mred': model id contains characters"),
    ("not-a-list", "not a model list"),
]


def test_hostile_answers_leave_the_catalog_unchanged(db_url: str, start_server, fake: FakeUpstream) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url, "--no-access-log")
    client = server.client(admin)
    run_cli(db_url, "upstreams", "add", "shady", "--base-url", fake.base_url, "--timeout", "1s", "--interval", "1h")
    assert wait_until(lambda: {"good-1", "good-2"} <= set(listed(client)), 10) is not None
    assert health_of(server, admin, "shady")["status"] == "ok"
    before = server.get("/v1/models", admin).content

    for mode, error in HOSTILE:
        fake.mode = mode
        version = admin_get(server, admin, "/v1/admin/changes?since=0&limit=1")["version"]
        failed = sync(server, admin, "shady")
        assert not failed["ok"] and error in failed["error"], (mode, failed["error"])
        health = health_of(server, admin, "shady")
        assert health["status"] == "failing" and health["last_error"] == failed["error"]
        assert health["last_error"].isprintable()
        # The models served are exactly the ones before: nothing of the answer got in. (The last good
        # models are marked stale in their metadata, as during any outage.)
        assert server.get("/v1/models", admin).content == before, mode
        assert not any("evil" in i or "nul" in i or i.startswith("m-") for i in listed(client))
        changes = admin_get(server, admin, f"/v1/admin/changes?since={version}")["data"]
        assert {(c["op"], c["id"], tuple(sorted(set(c["after"]) - set(c["before"])))) for c in changes} == {
            ("update", "good-1", ("stale_since",)), ("update", "good-2", ("stale_since",))}, mode
        fake.mode = "ok"  # and back, for the next one
        assert sync(server, admin, "shady")["updated"] == ["good-1", "good-2"]
    assert cli_over_http(server, admin, "upstreams", "sync-now", "shady").stderr.startswith("synced shady: 2 models")


def test_a_hostile_first_answer_changes_nothing_at_all(db_url: str, start_server, fake: FakeUpstream) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url, "--no-access-log")
    fake.mode = "control"
    run_cli(db_url, "upstreams", "add", "shady", "--base-url", fake.base_url, "--interval", "1h")
    version = admin_get(server, admin, "/v1/admin/changes?since=0&limit=1")["version"]
    assert wait_until(lambda: health_of(server, admin, "shady")["status"] == "failing", 10) is not None
    assert admin_get(server, admin, "/v1/admin/changes?since=0&limit=1")["version"] == version
    assert set(listed(server.client(admin))) == set(SEED_IDS)


def test_an_upstream_echoing_its_key_never_gets_it_stored_or_logged(db_url: str, start_server, fake: FakeUpstream,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-upstream-do-not-leak-4242"
    monkeypatch.setenv("SHADY_KEY", secret)
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)
    fake.mode = "echo-key"
    run_cli(db_url, "upstreams", "add", "shady", "--base-url", fake.base_url, "--api-key-env", "SHADY_KEY")
    failed = cli_over_http(server, admin, "upstreams", "sync-now", "shady", check=False)
    assert "HTTP 401" in failed.stderr and "[redacted]" in failed.stderr
    assert fake.authorizations[-1] == f"Bearer {secret}"  # it was sent, to the upstream only
    listing = cli_over_http(server, admin, "upstreams", "list").stdout
    for text in (failed.stderr, listing, json.dumps(health_of(server, admin, "shady")), server.log(),
                 dump_database(db_url), run_cli(db_url, "catalog", "export").stdout):
        assert secret not in text
    # Without the variable where the poll runs, the poll fails and says which variable it needs.
    without = {k: v for k, v in cli_env(db_url).items() if k != "SHADY_KEY"}
    local = run_cli(db_url, "upstreams", "sync-now", "shady", check=False, env=without)
    assert "SHADY_KEY" in local.stderr and "not set" in local.stderr


def test_a_key_from_a_file_with_a_newline_is_used_and_never_shown(db_url: str, start_server, fake: FakeUpstream,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A Kubernetes secret made from a file ends in a newline: the key was refused by the HTTP client, whose
    error quoted it whole into last_error (database, admin API, `upstreams list`)."""
    secret = "sk-upstream-from-a-file-7777"
    monkeypatch.setenv("FILE_KEY", secret + "\n")
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)
    run_cli(db_url, "upstreams", "add", "k8s", "--base-url", fake.base_url, "--api-key-env", "FILE_KEY")
    synced = cli_over_http(server, admin, "upstreams", "sync-now", "k8s")
    assert synced.stderr.startswith("synced k8s")
    assert fake.authorizations[-1] == f"Bearer {secret}"
    fake.mode = "echo-key-encoded"
    cli_over_http(server, admin, "upstreams", "sync-now", "k8s", check=False)
    listing = cli_over_http(server, admin, "upstreams", "list").stdout
    assert "[redacted]" in json.dumps(health_of(server, admin, "k8s"))
    for text in (listing, json.dumps(health_of(server, admin, "k8s")), server.log(), dump_database(db_url)):
        assert secret not in text and secret[:16] not in text


def test_one_poller_per_upstream_across_replicas(db_url: str, tmp_path: Path, fake: FakeUpstream) -> None:
    fake.delay = 1.0  # a slow answer, so overlapping polls would show
    replicas = [Server(db_url, tmp_path / "r1.log", "--workers", "2", "--no-access-log"),
                Server(db_url, tmp_path / "r2.log", "--no-access-log")]
    try:
        admin = create_key(db_url, "admin", "admin")
        run_cli(db_url, "upstreams", "add", "shared", "--base-url", fake.base_url, "--interval", "5s")
        assert wait_until(lambda: all(r.get("/v1/models/good-1", admin).status_code == 200 for r in replicas), 10)
        started = fake.requests
        assert wait_until(lambda: fake.requests > started, 10) is not None  # the next interval's poll
        # Three pollers (two workers and a replica) share one lease: one poll per interval, one at a time.
        assert fake.max_in_flight == 1
        health = health_of(replicas[1], admin, "shared")
        assert health["status"] == "ok" and health["model_count"] == 2
    finally:
        for replica in replicas:
            replica.stop()
    total = fake.requests
    assert total <= 4, f"{total} polls: the upstream was polled by several pollers at once"


def test_upstreams_through_the_admin_api(db_url: str, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url, "--no-access-log")
    url = server.base_url + "/v1/admin/upstreams"
    headers = {"Authorization": f"Bearer {admin}"}
    for body, param in [({"name": "x", "base_url": "http://h/v1", "api_key_env": "sk-live-123"}, "api_key_env"),
                        ({"name": "x", "base_url": "http://u:p@h/v1"}, "base_url"),
                        ({"name": "x", "base_url": "http://h/v1", "interval": "1s"}, "interval"),
                        ({"base_url": "http://h/v1"}, "name")]:
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    created = httpx.post(url, json={"name": "lab", "base_url": "http://127.0.0.1:9/v1", "interval": "5m",
                                    "include": ["llama-*"]}, headers=headers)
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    assert created.json()["interval"] == 300 and created.json()["grace"] == 600
    patched = httpx.patch(url + "/lab", json={"prefix": "lab/"}, headers={**headers, "If-Match": '"1"'})
    assert patched.status_code == 200 and patched.headers["etag"] == '"2"'
    stale = httpx.patch(url + "/lab", json={"prefix": "x/"}, headers={**headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    synced = httpx.post(url + "/lab/sync", headers=headers, timeout=60)
    assert synced.status_code == 200 and synced.json()["ok"] is False
    assert "cannot reach" in synced.json()["error"] and synced.json()["health"]["status"] == "failing"
    read = httpx.get(url + "/lab", headers=headers).json()
    assert read["prefix"] == "lab/" and read["health"]["last_error"] == synced.json()["error"]
    missing = httpx.post(url + "/nope/sync", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "upstream_not_found"
    assert httpx.delete(url + "/lab", headers=headers).status_code == 200
    assert httpx.get(url, headers=headers).json()["data"] == []


def test_upstreams_in_the_cli_and_the_catalog_file(db_url: str, tmp_path: Path, fake: FakeUpstream) -> None:
    bad = run_cli(db_url, "upstreams", "add", "x", "--base-url", "http://h/v1", "--api-key-env", "sk-123", check=False)
    assert bad.returncode == 1 and "Error: invalid api_key_env: must be the NAME of an environment" in bad.stderr
    bad = run_cli(db_url, "upstreams", "add", "x", "--base-url", "http://h/v1", "--interval", "2s", check=False)
    assert bad.returncode == 1 and "interval" in bad.stderr

    run_cli(db_url, "upstreams", "add", "lab", "--base-url", fake.base_url, "--prefix", "lab/", "--grace", "0s")
    synced = run_cli(db_url, "upstreams", "sync-now", "lab")  # locally: the CLI process polls
    assert synced.stdout.splitlines() == ["+ model lab/good-1", "+ model lab/good-2"]
    assert "synced lab: 2 models" in synced.stderr
    assert "lab/good-1" in run_cli(db_url, "models", "list").stdout
    assert "from upstream lab" in run_cli(db_url, "models", "list").stdout

    # The operator adds a model with a discovered id: theirs now, and the upstream reports it shadowed.
    run_cli(db_url, "models", "add", "lab/good-2", "--owned-by", "acme")
    fake.models = fake.models[:1]
    synced = run_cli(db_url, "upstreams", "sync-now", "lab")
    assert synced.stdout.splitlines() == []  # good-2 is the operator's: not removed with grace 0
    assert json.loads(run_cli(db_url, "models", "show", "lab/good-2").stdout)["owned_by"] == "acme"

    exported = yaml.safe_load(run_cli(db_url, "catalog", "export").stdout)
    assert exported["upstreams"] == [{"name": "lab", "base_url": fake.base_url, "prefix": "lab/", "include": [],
                                      "exclude": [], "interval": 60, "grace": 0, "timeout": 10}]
    assert "lab/good-2" in [m["id"] for m in exported["models"]] and "lab/good-1" not in str(exported["models"])

    # Applying a file: upstreams are created and changed like anything else; --prune leaves discovered
    # models to their upstream, and removes an upstream (with its models) that the file no longer has.
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({**exported, "upstreams": [{**exported["upstreams"][0], "exclude": ["good-1"]}]}))
    applied = run_cli(db_url, "catalog", "apply", str(path), "--prune", "--yes")
    assert applied.stdout.splitlines() == ["~ upstream lab (exclude)", "- model lab/good-1"]
    assert "lab/good-1" not in run_cli(db_url, "models", "list").stdout  # excluded: gone at once
    path.write_text(yaml.safe_dump({**exported, "upstreams": []}))
    assert run_cli(db_url, "catalog", "apply", str(path), "--prune", "--yes").stdout.splitlines() == ["- upstream lab"]
    rows = run_cli(db_url, "upstreams", "list").stdout.splitlines()
    assert rows == ["NAME  BASE_URL  MODELS  STATUS  LAST SUCCESS  LATENCY  ERROR"]
    sourced = yaml.safe_dump({"models": [{"id": "m", "source": "lab"}]})
    path.write_text(sourced)
    refused = run_cli(db_url, "catalog", "apply", str(path), check=False)
    assert refused.returncode == 1 and "models[0] (id 'm'): source: set by discovery only" in refused.stderr
    assert run_cli(db_url, "upstreams", "remove", "nope", check=False).stderr.strip() == \
        "Error: upstream 'nope' does not exist"
