"""`modeldex catalog export` / `apply`: idempotent, atomic, with a diff; locally and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .conftest import create_key, run_cli, wait_until

CATALOG = """\
models:
  - id: MiniMax-M3
    created: 1780272000
    owned_by: minimax
    context_length: 204800
    pricing: {prompt: "0.0000003", completion: "0.0000012"}
  - id: meta-llama/Llama-3.1-8B-Instruct
    owned_by: meta
    created: 1721692800
    input_modalities: [text]
aliases:
  - id: MiniMax-latest
    target: MiniMax-M3
groups:
  - name: chat
    members: ["MiniMax-*", "meta-llama/*"]
"""


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_shows_the_diff_and_is_idempotent(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    first = run_cli(db_url, "catalog", "apply", path)
    assert first.stdout.splitlines() == [
        "+ group chat",
        "~ model MiniMax-M3 (context_length, pricing)",
        "+ model meta-llama/Llama-3.1-8B-Instruct",
        "+ alias MiniMax-latest",
    ]
    second = run_cli(db_url, "catalog", "apply", path)
    assert second.stdout == "" and "nothing to change" in second.stderr
    exported = yaml.safe_load(run_cli(db_url, "catalog", "export").stdout)
    assert exported["aliases"] == [{"id": "MiniMax-latest", "target": "MiniMax-M3", "hidden": False}]
    assert next(m for m in exported["models"] if m["id"] == "MiniMax-M3")["context_length"] == 204800


def test_export_then_apply_round_trips(db_url: str, tmp_path: Path) -> None:
    run_cli(db_url, "catalog", "apply", write(tmp_path, CATALOG))
    exported = run_cli(db_url, "catalog", "export").stdout
    assert "secret" not in exported and "sk-mdx" not in exported
    other = f"sqlite:///{tmp_path}/other.db"
    run_cli(other, "catalog", "apply", write(tmp_path, exported, "exported.yaml"), "--prune")
    assert run_cli(other, "catalog", "export").stdout == exported
    assert run_cli(db_url, "catalog", "apply", write(tmp_path, exported, "again.yaml"), "--prune").stdout == ""


def test_prune_and_dry_run(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    dry = run_cli(db_url, "catalog", "apply", path, "--prune", "--dry-run")
    assert "- model MiniMax-M2" in dry.stdout and "nothing was changed" in dry.stderr
    assert "MiniMax-M2 " in run_cli(db_url, "models", "list").stdout
    run_cli(db_url, "catalog", "apply", path, "--prune", "--yes")
    ids = [row.split()[0] for row in run_cli(db_url, "models", "list").stdout.splitlines()[1:]]
    assert ids == ["MiniMax-M3", "meta-llama/Llama-3.1-8B-Instruct"]


def test_one_bad_entry_changes_nothing_and_is_named(db_url: str, tmp_path: Path) -> None:
    run_cli(db_url, "catalog", "apply", write(tmp_path, CATALOG))
    before = (run_cli(db_url, "catalog", "export").stdout, run_cli(db_url, "changes").stdout)
    bad_files = {
        CATALOG + "  - name: bad group\n    members: []\n": "groups[1] (name 'bad group'): name:",
        CATALOG.replace("context_length: 204800", "context_length: -5"): "models[0] (id 'MiniMax-M3'): context_length",
        CATALOG.replace("target: MiniMax-M3", "target: ghost"): "aliases (id 'MiniMax-latest'): target: alias",
        CATALOG + "extras: []\n": "extras: unknown section",
        "models: [\n": "not valid YAML",
        CATALOG.replace("  - id: meta-llama/Llama-3.1-8B-Instruct", "  - id: MiniMax-M3"): "appears twice",
    }
    for text, message in bad_files.items():
        result = run_cli(db_url, "catalog", "apply", write(tmp_path, text, "bad.yaml"), "--prune", check=False)
        assert result.returncode == 1, text
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr
    assert (run_cli(db_url, "catalog", "export").stdout, run_cli(db_url, "changes").stdout) == before


def test_the_cli_works_through_a_running_server(db_url: str, tmp_path: Path, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    reader = create_key(db_url, "reader")
    server = start_server(db_url)
    remote = ["--url", server.base_url, "--api-key", admin]
    applied = run_cli("sqlite:///nowhere-used.db", "catalog", "apply", write(tmp_path, CATALOG), *remote)
    assert "+ alias MiniMax-latest" in applied.stdout
    assert wait_until(lambda: server.get("/v1/models/MiniMax-latest", reader).status_code == 200, 1.0) is not None
    run_cli(db_url, "models", "add", "remote/model", "--owned-by", "acme", *remote)
    assert "remote/model" in run_cli(db_url, "models", "list", *remote).stdout
    key = run_cli(db_url, "keys", "create", "remote-made", "--pattern", "remote/*", *remote).stdout.strip()
    assert wait_until(lambda: server.get("/v1/models", key).status_code == 200, 1.0) is not None
    assert [m["id"] for m in server.get("/v1/models", key).json()["data"]] == ["remote/model"]
    explained = run_cli(db_url, "keys", "explain", "remote-made", "MiniMax-M3", *remote).stdout
    assert "not visible" in explained
    changes = run_cli(db_url, "changes", *remote).stdout
    assert "key:admin" in changes and "+ model remote/model" in changes
    refused = run_cli(db_url, "models", "list", "--url", server.base_url, "--api-key", reader, check=False)
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr
    no_key = run_cli(db_url, "models", "list", "--url", server.base_url, check=False)
    assert no_key.returncode == 1 and "needs an admin key" in no_key.stderr
    # What JSON cannot carry to the server is refused as the file is read, not a traceback.
    binary = run_cli(db_url, "catalog", "apply", write(tmp_path, "models:\n  - {id: b, name: !!binary aGk=}\n",
                                                       "binary.yaml"), *remote, check=False)
    assert binary.returncode == 1 and "Traceback" not in binary.stderr
    assert binary.stderr == (f"Error: {tmp_path}/binary.yaml: models[0].name: must be a string, number, "
                             "true/false, null, list or mapping, not binary data (!!binary)\n")


def test_a_json_file_is_read_as_json(db_url: str, tmp_path: Path) -> None:
    """Python's json.dumps (and most JSON encoders) writes an emoji as a surrogate-pair escape, which YAML
    refuses: the file was "not valid YAML". Of two equal keys the last counts, as in JSON."""
    models = [{"id": "emoji", "owned_by": "acme", "description": "naïve 😀"}]
    text = json.dumps({"models": models})[:-1] + ', "models": ' + json.dumps(models) + "}"
    assert "\\ud83d\\ude00" in text
    applied = run_cli(db_url, "catalog", "apply", write(tmp_path, text, "catalog.json"), check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == "+ model emoji\n"
    assert json.loads(run_cli(db_url, "models", "show", "emoji").stdout)["description"] == "naïve 😀"
