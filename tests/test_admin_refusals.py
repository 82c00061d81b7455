"""Admin input that used to be a 500 (or a CLI traceback), on SQLite and PostgreSQL alike: change-feed
versions past 64 bits, YAML nested too deeply, NUL characters in free text. Each is a 400 naming what is
wrong (one line from the CLI), and nothing changes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import Deployment

MAX_VERSION = 2**63 - 1


def call(deployment: Deployment, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {deployment.admin_key}"}
    return deployment.server.http.request(method, deployment.server.base_url + path, headers=headers, timeout=30,
                                          **kwargs)


def error_of(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    return error


def version(deployment: Deployment) -> int:
    return call(deployment, "GET", "/v1/admin/changes?limit=1").json()["version"]


@pytest.mark.parametrize("since", [str(MAX_VERSION + 1), str(2**64), "1" + "0" * 40, "-1"])
def test_change_feed_versions_past_64_bits_are_400s(deployment: Deployment, since: str) -> None:
    error = error_of(call(deployment, "GET", f"/v1/admin/changes?since={since}"), 400, "since")
    assert "since" in error["message"]


def test_the_largest_version_is_an_empty_page(deployment: Deployment) -> None:
    page = call(deployment, "GET", f"/v1/admin/changes?since={MAX_VERSION}")
    assert page.status_code == 200 and page.json()["data"] == []
    result = deployment.cli("changes", "--since", str(MAX_VERSION + 1), check=False)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "since" in result.stderr and "Traceback" not in result.stderr


def nested_yaml(depth: int) -> str:
    return "models:\n  - id: deep\n    description: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_yaml_is_a_400_and_one_cli_line(deployment: Deployment, tmp_path: Path, depth: int) -> None:
    before = version(deployment)
    response = call(deployment, "POST", "/v1/admin/catalog/apply", content=nested_yaml(depth).encode())
    assert "nested too deeply" in error_of(response, 400, "file")["message"]
    path = tmp_path / "deep.yaml"
    path.write_text(nested_yaml(depth))
    result = deployment.cli("catalog", "apply", str(path), check=False)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr[-2000:]
    assert "nested too deeply" in result.stderr and "Traceback" not in result.stderr
    assert version(deployment) == before


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/admin/groups", {"name": "nul-group", "description": "before\x00after"}, "description"),
    ("/v1/admin/models", {"id": "nul-model", "description": "a\x00"}, "description"),
    ("/v1/admin/models", {"id": "nul-model", "name": "\x00"}, "name"),
])
def test_nul_in_free_text_is_a_400_on_both_databases(deployment: Deployment, path: str, body: dict,
                                                     param: str) -> None:
    before = version(deployment)
    error = error_of(call(deployment, "POST", path, json=body), 400, param)
    assert "NUL" in error["message"]
    section = path.rsplit("/", 1)[1]
    error = error_of(call(deployment, "POST", "/v1/admin/catalog/apply", json={section: [body]}), 400,
                     f"{section}[0].{param}")
    assert "NUL" in error["message"]
    assert version(deployment) == before


def test_nul_in_an_update_is_a_400_and_the_group_is_unchanged(deployment: Deployment) -> None:
    created = call(deployment, "POST", "/v1/admin/groups", json={"name": "nul-update", "description": "fine"})
    assert created.status_code == 201, created.text
    error = error_of(call(deployment, "PATCH", "/v1/admin/groups/nul-update", json={"description": "x\x00y"}),
                     400, "description")
    assert "NUL" in error["message"]
    assert call(deployment, "GET", "/v1/admin/groups/nul-update").json()["description"] == "fine"


NUL_TARGETS = [
    ("GET", "/v1/admin/models/a%00b"), ("PATCH", "/v1/admin/models/a%00b"), ("DELETE", "/v1/admin/models/a%00b"),
    ("GET", "/v1/admin/groups/a%00b"), ("DELETE", "/v1/admin/aliases/a%00b"), ("GET", "/v1/admin/keys/a%00b"),
    ("PATCH", "/v1/admin/keys/a%00b"), ("DELETE", "/v1/admin/keys/a%00b"),
    ("GET", "/v1/admin/keys/a%00b/explain?model=x"), ("GET", "/v1/admin/upstreams/a%00b"),
    ("POST", "/v1/admin/upstreams/a%00b/sync"), ("GET", "/v1/models/a%00b"), ("DELETE", "/v1/models/a%00b"),
]


def test_nul_in_a_path_is_never_a_500(deployment: Deployment) -> None:
    """No entity can have a NUL in its key, so a look-up with one finds nothing (PostgreSQL refused the query)."""
    answers = {}
    for method, target in NUL_TARGETS:
        response = call(deployment, method, target, json={} if method == "PATCH" else None)
        answers[(method, target)] = response.status_code
    failed = [f"{method} {target}: {status}" for (method, target), status in answers.items() if status >= 500]
    assert not failed, f"{len(failed)}/{len(answers)}: {'; '.join(failed)}"
    assert set(answers.values()) <= {400, 404}, answers  # 400: key routes check the name first
