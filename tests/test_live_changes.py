"""Changes made with the CLI while servers run are served within 1 second, without a restart."""

from __future__ import annotations

import concurrent.futures

import httpx

from .conftest import create_key, run_cli, status_on_a_new_connection, wait_until

BOUND = 1.0


def test_cli_changes_reach_a_running_server_within_a_second(db_url: str, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)

    run_cli(db_url, "models", "add", "qwen/Qwen3-8B", "--owned-by", "qwen")
    took = wait_until(lambda: server.get("/v1/models/qwen%2FQwen3-8B", admin).status_code == 200, BOUND)
    assert took is not None, "added model not served within 1 s"
    assert "qwen/Qwen3-8B" in [m["id"] for m in server.get("/v1/models", admin).json()["data"]]

    run_cli(db_url, "models", "remove", "qwen/Qwen3-8B")
    assert wait_until(lambda: server.get("/v1/models/qwen%2FQwen3-8B", admin).status_code == 404, BOUND) is not None

    new_key = run_cli(db_url, "keys", "create", "late-comer").stdout.strip()
    assert wait_until(lambda: server.get("/v1/models", new_key).status_code == 200, BOUND) is not None

    run_cli(db_url, "keys", "revoke", "late-comer")
    assert wait_until(lambda: server.get("/v1/models", new_key).status_code == 401, BOUND) is not None
    assert server.get("/v1/models", admin).status_code == 200


def test_every_worker_serves_a_change_within_a_second(db_url: str, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url, "--workers", "2")
    target = server.base_url + "/v1/models/MiniMax-M2.1"
    headers = {"Authorization": f"Bearer {admin}"}

    def statuses() -> set[int]:
        # Fresh connections spread requests over both workers.
        def one(_: int) -> int:
            return status_on_a_new_connection(target, headers)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return set(pool.map(one, range(24)))

    assert statuses() == {200}
    response = httpx.delete(target, headers=headers, timeout=5)
    assert response.status_code == 200
    assert wait_until(lambda: statuses() == {404}, BOUND) is not None
