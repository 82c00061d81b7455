"""Discovery against hostile and scripted upstreams (the fake upstream): answers that change nothing,
keys that are never stored or shown, one poller per upstream across replicas, and the admin API and CLI
for upstreams. test_discovery.py has the real upstreams (LiteLLM's proxy, another modeldex)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import SEED_IDS, Server, cli_env, create_key, dump_database, run_cli, wait_until
from .fake_upstream import FakeUpstream
from .test_discovery import admin_get, cli_over_http, health_of, listed, sync

pytestmark = pytest.mark.timeout(900)

HOSTILE = [
    ("html", "the answer is not JSON (starts with b'<!DOCTYPE html>"),
    ("huge", "more than the 4194304 bytes allowed"),
    ("huge-chunked", "larger than the 4194304 bytes allowed"),
    ("stall", "no answer from"),
    ("control", r"invalid answer: data[2].id 'evil\x1b[31mred': model id contains characters"),
    ("not-a-list", "not a model list"),
]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream([{"id": "good-1", "object": "model", "owned_by": "fake"},
                             {"id": "good-2", "object": "model", "owned_by": "fake"}])
    yield upstream
    upstream.close()


def test_hostile_answers_leave_the_catalog_unchanged(db_url: str, start_server, fake: FakeUpstream) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url, "--no-access-log")
    client = server.client(admin)
    run_cli(db_url, "upstreams", "add", "shady", "--base-url", fake.base_url, "--timeout", "1s", "--interval", "1h")
    assert wait_until(lambda: {"good-1", "good-2"} <= set(listed(client)), 10) is not None
    # The first poll writes the models and then the health (two writes, see poll_once): wait for the second.
    assert wait_until(lambda: health_of(server, admin, "shady")["status"] == "ok", 10) is not None
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
