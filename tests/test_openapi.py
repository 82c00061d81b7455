"""The served OpenAPI document agrees with the seed, and schemathesis finds nothing against either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import SEED_SPEC, Deployment, create_key

SAFE_CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance"


def test_retrieve_operation_agrees_with_the_seed(deployment: Deployment) -> None:
    seed = yaml.safe_load(SEED_SPEC.read_text())
    served = deployment.server.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1")

    seed_op = seed["paths"]["/v1/models/{model_id}"]["get"]
    served_item = served["paths"]["/v1/models/{model_id}"]
    served_op = served_item["get"]
    assert served_op["operationId"] == seed_op["operationId"] == "retrieveModel"
    assert seed_op["summary"] in served_op["summary"]
    assert seed_op["description"] in served_op["description"]

    seed_param = seed_op["parameters"][0]
    served_param = (served_op.get("parameters") or served_item["parameters"])[0]
    for field in ("name", "in", "required", "schema"):
        assert served_param[field] == seed_param[field]
    assert seed_param["description"] in served_param["description"]

    seed_schema = seed_op["responses"]["200"]["content"]["application/json"]["schema"]
    ref = served_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    served_schema = served["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(served_schema["properties"]) == set(seed_schema["properties"]) == {"id", "object", "created", "owned_by"}
    for name, prop in seed_schema["properties"].items():
        assert served_schema["properties"][name]["type"] == prop["type"]
        assert prop["description"] in served_schema["properties"][name]["description"]

    seed_auth = seed["components"]["securitySchemes"]["bearerAuth"]
    served_auth = served["components"]["securitySchemes"]["bearerAuth"]
    assert (served_auth["type"], served_auth["scheme"]) == (seed_auth["type"], seed_auth["scheme"]) == ("http", "bearer")
    assert served["security"] == seed["security"] == [{"bearerAuth": []}]


def test_served_document_covers_the_whole_models_resource(deployment: Deployment) -> None:
    served = deployment.server.get("/openapi.json").json()
    operations = {op["operationId"] for item in served["paths"].values() for op in item.values()
                  if isinstance(op, dict) and "operationId" in op}
    assert {"listModels", "retrieveModel", "deleteModel"} <= operations
    assert served["paths"]["/healthz"]["get"]["security"] == []


def run_schemathesis(location: str, base_url: str, key: str, checks: str, tmp_path: Path, *extra: str,
                     max_examples: int = 150) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", location, "--url", base_url,
         "--header", f"Authorization: Bearer {key}", "--checks", checks,
         "--max-examples", str(max_examples), "--seed", "1", "--no-color", "--workers", "1", *extra],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout


@pytest.mark.timeout(400)
def test_schemathesis_against_the_seed_spec(deployment: Deployment, tmp_path: Path) -> None:
    # The seed documents only the 200 answer, so the status-code check would flag every 404 it
    # (rightly) gets; everything else is checked: no server error, schemas, content types, headers.
    run_schemathesis(str(SEED_SPEC), deployment.server.base_url, deployment.read_key, SAFE_CHECKS, tmp_path)


@pytest.mark.timeout(400)
def test_schemathesis_against_the_served_spec_with_every_check(deployment: Deployment, tmp_path: Path) -> None:
    # An admin key, so DELETE is exercised too (on this test's throwaway database). Every check, on the
    # Models routes (the whole surface is below, with the checks it holds to).
    run_schemathesis(deployment.server.base_url + "/openapi.json", deployment.server.base_url,
                     deployment.admin_key, "all", tmp_path, "--include-path-regex", "^/(v1/models|healthz)")


SURFACE_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
                  "response_headers_conformance,response_schema_conformance,negative_data_rejection")
# Changing or revoking a key is run last, on its own: schemathesis learns the admin key's name from the
# lists it reads and demotes it, after which every admin operation could only answer 403.
KEY_WRITES = "^(adminUpdateKey|adminRevokeKey)$"
# Any of these makes the run fail ("No issues found" is not printed): a run that was refused (401/403,
# 429) or could not read the document has not tested what it claims to. Not shown: operations that mostly
# answered 404 (random ids name nothing; inference has no upstream) or 400 (ids and names have rules no
# JSON Schema spells out), which are what the run expects of such requests.
WARNINGS = ("missing_auth,base_url_mismatch,missing_deserializer,unused_openapi_auth,unsupported_regex,"
            "unresolvable_reference,rate_limited,unmatched_filter,method_not_allowed")


@pytest.mark.timeout(400)
def test_schemathesis_against_the_whole_surface(sqlite_url: str, start_server, tmp_path: Path) -> None:
    # Admin API, health, readiness, metrics and the inference routes, with an admin key on a throwaway
    # database. Its own server, without the limit on failed keys: schemathesis sends requests without the
    # key on purpose, and would soon be refused (429) on everything. Without upstreams, inference answers
    # 404 (no such model) or 503 (no route): both documented. On SQLite only, to keep the suite inside its
    # time bar (20 s a run); what the databases store differently (NUL, odd strings) has its own tests on
    # both (test_admin_refusals.py).
    key = create_key(sqlite_url, "schemathesis", "admin")
    server = start_server(sqlite_url, "--auth-failure-limit", "off")
    location = server.base_url + "/openapi.json"
    run_schemathesis(location, server.base_url, key, SURFACE_CHECKS, tmp_path,
                     "--exclude-operation-id-regex", KEY_WRITES, "--warnings", WARNINGS, max_examples=10)
    run_schemathesis(location, server.base_url, key, SURFACE_CHECKS, tmp_path,
                     "--include-operation-id-regex", KEY_WRITES, "--warnings", WARNINGS, max_examples=10)
    assert "Traceback" not in server.log()
