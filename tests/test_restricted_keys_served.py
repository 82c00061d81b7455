"""Issue 12's smaller items through the real server and the CLI (test_inprocess_restricted_keys.py and
test_inprocess_side.py keep the edge cases): what a restricted key learns of hidden models, /readyz's
version, and the catalog inputs that were silently taken (`!!binary` ids, look-alike ids, `created: null`)."""

from __future__ import annotations

import httpx

from .conftest import create_key, run_cli


def admin_call(base: str, admin: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, base + path, headers={"Authorization": f"Bearer {admin}"}, timeout=30,
                         **kwargs)  # type: ignore[arg-type]


def test_a_restricted_key_learns_nothing_of_hidden_models(sqlite_url: str, start_server) -> None:
    run_cli(sqlite_url, "models", "add", "open/model", "--owned-by", "acme", "--context-length", "4096")
    run_cli(sqlite_url, "models", "add", "secret/successor", "--owned-by", "acme")
    run_cli(sqlite_url, "models", "update", "open/model", "--replaced-by", "secret/successor")
    admin = create_key(sqlite_url, "ops", "admin")
    narrow = run_cli(sqlite_url, "keys", "create", "narrow", "--pattern", "open/*").stdout.strip()
    server = start_server(sqlite_url)
    seen = server.get("/v1/models/open%2Fmodel?expand=metadata", narrow)
    assert seen.status_code == 200 and "secret/successor" not in seen.text and "replaced_by" not in seen.text
    assert '"replaced_by":"secret/successor"' in server.get("/v1/models/open%2Fmodel?expand=metadata", admin).text
    etag = server.get("/v1/models", narrow).headers["etag"]
    assert admin_call(server.base_url, admin, "POST", "/v1/admin/models", json={"id": "secret/other"}).status_code == 201
    assert server.get("/v1/models", narrow, headers={"If-None-Match": etag}).status_code == 304  # nothing it sees changed
    assert server.get("/readyz").json() == {"status": "ready"}
    assert "version" in server.get("/readyz", admin).json()


def test_catalog_inputs_that_were_silently_taken_are_refused(sqlite_url: str, start_server, tmp_path) -> None:
    admin = create_key(sqlite_url, "ops", "admin")  # the catalog exists: stderr is the error alone
    binary = tmp_path / "binary.yaml"
    binary.write_text("models:\n  - id: !!binary aGVsbG8=\n")
    refused = run_cli(sqlite_url, "catalog", "apply", str(binary), check=False)
    assert refused.returncode == 1 and "models[0].id: must be a string" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.strip().count("\n") == 0
    server = start_server(sqlite_url)
    twin = admin_call(server.base_url, admin, "POST", "/v1/admin/models", json={"id": "cafe\u0301"})
    assert twin.status_code == 400 and "NFC" in twin.json()["error"]["message"]
    created = admin_call(server.base_url, admin, "POST", "/v1/admin/models",
                         json={"id": "dated", "created": 1700000000})
    assert created.status_code == 201
    nulled = admin_call(server.base_url, admin, "PATCH", "/v1/admin/models/dated", json={"created": None})
    assert nulled.status_code == 400 and nulled.json()["error"]["param"] == "created"
    assert server.get("/v1/models/dated", admin).json()["created"] == 1700000000
    assert "hello" not in run_cli(sqlite_url, "models", "list").stdout
