"""Rate limits out of bounds (a zero period, absurd counts or periods) are refused wherever a limit is set:
`keys create/update`, the admin API, `serve --rate-limit` and `--auth-failure-limit` (flag or environment);
nothing changes. A limit stored before the check existed (`5/0d`) makes its key follow the server's default
instead of answering 500s."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import cli_env, create_key, execute_sql, run_cli

OUT_OF_BOUNDS = {
    "5/0s": "period",
    "1/99999999999999999999d": "period",
    "1/400d": "period",
    "0/m": "number of requests",
    "2000000000/s": "number of requests",
}


def admin_call(server, key: str, method: str, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    return server.http.request(method, server.base_url + path, headers={"Authorization": f"Bearer {key}"},
                               timeout=10,
                         **kwargs)


def test_keys_with_out_of_bounds_limits_are_refused(sqlite_url: str, start_server) -> None:
    admin = create_key(sqlite_url, "ops", "admin")
    run_cli(sqlite_url, "keys", "create", "reader", "--rate-limit", "600/m")
    server = start_server(sqlite_url)
    version = admin_call(server, admin, "GET", "/v1/admin/changes").json()["version"]
    for limit, reason in OUT_OF_BOUNDS.items():
        created = run_cli(sqlite_url, "keys", "create", "nope", "--rate-limit", limit, check=False)
        assert created.returncode == 1, created
        assert created.stderr.count("\n") == 1 and "invalid rate_limit" in created.stderr and reason in created.stderr
        updated = run_cli(sqlite_url, "keys", "update", "reader", "--rate-limit", limit, check=False)
        assert updated.returncode == 1 and "invalid rate_limit" in updated.stderr and reason in updated.stderr
        for method, path in (("POST", "/v1/admin/keys"), ("PATCH", "/v1/admin/keys/reader")):
            body = {"name": "nope", "rate_limit": limit} if method == "POST" else {"rate_limit": limit}
            response = admin_call(server, admin, method, path, json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["param"], error["code"]) == ("rate_limit", "invalid_value")
            assert error["message"].startswith("rate_limit:") and reason in error["message"]
    # Nothing changed: no key made, the reader's limit as it was, the catalog at the same version.
    assert admin_call(server, admin, "GET", "/v1/admin/changes").json()["version"] == version
    names = {k["name"]: k["rate_limit"] for k in admin_call(server, admin, "GET", "/v1/admin/keys").json()["data"]}
    assert names == {"ops": None, "reader": "600/m"}


@pytest.mark.parametrize(("option", "limit"), [("--rate-limit", "5/0s"),
                                               ("--auth-failure-limit", "1/99999999999999999999d")])
def test_serve_refuses_out_of_bounds_limits(sqlite_url: str, option: str, limit: str) -> None:
    result = run_cli(sqlite_url, "serve", "--port", "0", option, limit, check=False)
    assert result.returncode == 2, result
    assert f"Invalid value for '{option}'" in result.stderr and "period" in result.stderr
    assert "Traceback" not in result.stderr
    env_name = "MODELDEX_RATE_LIMIT" if option == "--rate-limit" else "MODELDEX_AUTH_FAILURE_LIMIT"
    from_env = run_cli(sqlite_url, "serve", "--port", "0", check=False, env=cli_env(sqlite_url, **{env_name: limit}))
    assert from_env.returncode == 2 and "period" in from_env.stderr, from_env


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_limit_stored_out_of_bounds_follows_the_default(sqlite_url: str, start_server, store: str,
                                                          request: pytest.FixtureRequest) -> None:
    tag = uuid.uuid4().hex[:8]  # bucket names in a shared Redis are the key's name
    zero = create_key(sqlite_url, f"zero-{tag}")
    huge = create_key(sqlite_url, f"huge-{tag}")
    # As a database written before limits were checked holds them.
    execute_sql(sqlite_url, f"UPDATE api_keys SET rate_limit = '5/0d' WHERE name = 'zero-{tag}'",
                f"UPDATE api_keys SET rate_limit = '1/99999999999999999999d' WHERE name = 'huge-{tag}'")
    # A Redis call slower than --redis-timeout (50 ms by default, which a loaded machine can stall a process for)
    # is counted in the worker's memory instead: its count and Redis's would then be two.
    extra = ("--redis-url", request.getfixturevalue("redis_url"), "--redis-timeout", "5") if store == "redis" else ()
    server = start_server(sqlite_url, "--rate-limit", "2/m", *extra)
    for key in (zero, huge):
        statuses = [server.get("/v1/models", key).status_code for _ in range(3)]
        assert statuses == [200, 200, 429], statuses
    assert "Traceback" not in server.log()
