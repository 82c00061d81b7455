"""Running in production: rate limits, metrics, structured logs, request limits, CORS, TLS, draining."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import create_key, read_by_the_server, run_cli, wait_until

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_per_key_limits_answer_429_with_openai_headers(sqlite_url: str, start_server) -> None:
    limited = run_cli(sqlite_url, "keys", "create", "limited", "--rate-limit", "3/m").stdout.strip()
    free = create_key(sqlite_url, "free")
    server = start_server(sqlite_url)
    responses = [server.get("/v1/models", limited) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    for response in responses:
        assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["x-ratelimit-reset-requests"] == "20s"
    error = error_of(responses[3], 429)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "limited" in error["message"] and "try again in" in error["message"]
    assert 15 <= int(responses[3].headers["retry-after"]) <= 20
    assert 15_000 <= int(responses[3].headers["retry-after-ms"]) <= 20_000
    # Other keys are not affected, and without a limit no headers are sent.
    assert server.get("/v1/models", free).status_code == 200
    assert "x-ratelimit-limit-requests" not in server.get("/v1/models", free).headers
    with pytest.raises(openai.RateLimitError) as caught:
        server.client(limited).models.list()
    assert caught.value.code == "rate_limit_exceeded"


def test_the_sdk_retries_after_a_429_and_succeeds(sqlite_url: str, start_server) -> None:
    key = create_key(sqlite_url, "bursty")
    admin = run_cli(sqlite_url, "keys", "create", "ops", "--scope", "admin", "--rate-limit", "unlimited").stdout.strip()
    server = start_server(sqlite_url, "--rate-limit", "2/s")
    client = openai.OpenAI(api_key=key, base_url=server.base_url + "/v1", max_retries=4)
    started = time.monotonic()
    results = [client.models.retrieve("MiniMax-M3").id for _ in range(6)]
    assert results == ["MiniMax-M3"] * 6
    assert time.monotonic() - started > 1.0  # it had to wait for tokens: the retries happened
    metrics = server.get("/metrics", admin).text
    refused = next(line for line in metrics.splitlines() if line.startswith('modeldex_rate_limited_total{reason="key"}'))
    assert float(refused.rsplit(" ", 1)[1]) >= 1  # the SDK met 429s and retried past them


def test_key_limits_override_the_default_and_can_exempt(sqlite_url: str, start_server) -> None:
    default = create_key(sqlite_url, "default-limited")
    exempt = run_cli(sqlite_url, "keys", "create", "exempt", "--rate-limit", "unlimited").stdout.strip()
    generous = run_cli(sqlite_url, "keys", "create", "generous", "--rate-limit", "100/s").stdout.strip()
    server = start_server(sqlite_url, "--rate-limit", "2/m")
    assert [server.get("/v1/models", default).status_code for _ in range(3)] == [200, 200, 429]
    assert all(server.get("/v1/models", exempt).status_code == 200 for _ in range(5))
    assert server.get("/v1/models", generous).headers["x-ratelimit-limit-requests"] == "100"
    listing = run_cli(sqlite_url, "keys", "list").stdout
    assert "unlimited" in listing and "100/s" in listing and "default" in listing
    run_cli(sqlite_url, "keys", "update", "default-limited", "--rate-limit", "50/m")
    assert wait_until(lambda: server.get("/v1/models", default).status_code == 200, 1.0) is not None
    bad = run_cli(sqlite_url, "keys", "update", "exempt", "--rate-limit", "lots", check=False)
    assert bad.returncode == 1 and "invalid rate_limit" in bad.stderr


def test_limits_are_shared_through_redis_across_servers(sqlite_url: str, start_server,
                                                       redis_url: str) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    key = run_cli(sqlite_url, "keys", "create", name, "--rate-limit", "6/m").stdout.strip()
    # A Redis call slower than --redis-timeout (50 ms by default; a loaded machine can stall a process that
    # long) is counted in the worker's memory instead, and then the limit is not shared: not what this tests.
    first = start_server(sqlite_url, "--redis-url", redis_url, "--redis-timeout", "5", "--workers", "2")
    second = start_server(sqlite_url, "--redis-url", redis_url, "--redis-timeout", "5")
    statuses = [server.get("/v1/models", key).status_code for _ in range(5) for server in (first, second)]
    assert statuses.count(200) == 6 and statuses.count(429) == 4


def test_failed_authentication_is_limited_per_client_address(sqlite_url: str, start_server) -> None:
    good = create_key(sqlite_url, "good")
    server = start_server(sqlite_url, "--auth-failure-limit", "5/m", "--forwarded-allow-ips", "127.0.0.1")
    wrong = "sk-mdx-" + "G" * 52
    assert [server.get("/v1/models", wrong).status_code for _ in range(5)] == [401] * 5
    blocked = server.get("/v1/models", wrong)
    error = error_of(blocked, 429)
    assert error["code"] == "rate_limit_exceeded" and "invalid API keys" in error["message"]
    assert int(blocked.headers["retry-after"]) >= 1
    # Even a right key from that address waits: guesses cannot be confirmed while blocked.
    assert server.get("/v1/models", good).status_code == 429
    # A client behind a trusted proxy is told apart by X-Forwarded-For.
    other = server.get("/v1/models", good, headers={"X-Forwarded-For": "203.0.113.7"})
    assert other.status_code == 200


def test_metrics_for_prometheus(sqlite_url: str, start_server, tmp_path: Path) -> None:
    admin = create_key(sqlite_url, "ops", "admin")
    reader = create_key(sqlite_url, "reader")
    server = start_server(sqlite_url, "--workers", "2", "--metrics-token", "scrape-me")
    for _ in range(10):
        server.get("/v1/models", reader)
    server.get("/v1/models/nope", reader)
    server.get("/v1/models", "sk-wrong-key-0000000000")
    assert error_of(server.get("/metrics"), 401)
    assert error_of(server.get("/metrics", reader), 403)["code"] == "insufficient_permissions"

    def scraped() -> tuple[str, dict[str, float]]:
        text = server.get("/metrics", "scrape-me").text
        return text, {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line and not line.startswith("#")}

    # Each worker flushes its counts about once a second, each on its own clock; the one answering the scrape
    # flushes first. The 404 and the 401 may be another worker's, flushed after its lists: wait for all three.
    counted = {'modeldex_requests_total{route="list",status="200"}': 10,
               'modeldex_requests_total{route="retrieve",status="404"}': 1,
               'modeldex_requests_total{route="list",status="401"}': 1}
    assert wait_until(lambda: all(scraped()[1].get(name) == count for name, count in counted.items()), 15) is not None
    text, samples = scraped()
    assert server.get("/metrics", admin).status_code == 200
    assert samples['modeldex_requests_total{route="list",status="200"}'] == 10  # both workers added up
    assert samples['modeldex_requests_total{route="retrieve",status="404"}'] == 1
    assert samples['modeldex_requests_total{route="list",status="401"}'] == 1
    assert samples['modeldex_request_duration_seconds_count{route="list"}'] >= 10
    assert any(k.startswith('modeldex_request_duration_seconds_bucket{le="0.001",route="list"}') for k in samples)
    assert samples["modeldex_catalog_models"] == 9, text
    assert samples["modeldex_catalog_version"] >= 1
    assert 0 <= samples["modeldex_snapshot_age_seconds"] < 5
    assert samples["modeldex_store_up"] == 1
    assert "sk-" not in text

    port_server = start_server(sqlite_url, "--metrics-port", str(_free_port()))
    metrics_port = int(port_server.process.args[port_server.process.args.index("--metrics-port") + 1])
    assert wait_until(lambda: _get_ok(f"http://127.0.0.1:{metrics_port}/metrics"), 5) is not None
    # The port is served by the supervising process, no worker: its gauges, never set, counted as the lowest
    # worker's, and modeldex_store_up read 0 there and on /metrics for as long as the server ran.
    for url, key in ((f"http://127.0.0.1:{metrics_port}/metrics", None), (port_server.base_url + "/metrics", admin)):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        assert wait_until(lambda url=url, headers=headers: "\nmodeldex_store_up 1.0\n" in httpx.get(
            url, headers=headers).text, 5) is not None


def _free_port() -> int:
    from .conftest import free_port

    return free_port()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200 and "modeldex_requests_total" in httpx.get(url).text
    except httpx.HTTPError:
        return False


def test_json_logs_one_line_per_request_without_secrets(sqlite_url: str, start_server) -> None:
    key = create_key(sqlite_url, "json-reader")
    server = start_server(sqlite_url, "--log-format", "json")
    ids = [server.get(path, key).headers["x-request-id"] for path in ("/v1/models", "/v1/models/MiniMax-M3",
                                                                      "/v1/models/ghost", "/v1/nowhere")]
    server.get("/v1/models", key + "x")
    # The access log is written in batches (every 20 ms): wait for this test's lines rather than a fixed time.
    assert wait_until(lambda: all(request_id in server.log() for request_id in ids), 5) is not None
    server.stop()
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = {e["request_id"]: e for e in entries if e.get("logger") == "modeldex.access"}
    assert set(ids) <= set(access)
    first = access[ids[0]]
    assert (first["method"], first["path"], first["route"], first["status"], first["key"]) == (
        "GET", "/v1/models", "list", 200, "json-reader")
    assert first["duration_ms"] >= 0 and first["client"] == "127.0.0.1"
    assert access[ids[2]]["status"] == 404 and access[ids[3]]["route"] == "other"
    assert key not in server.log() and key[-40:] not in server.log()


def test_oversized_headers_and_bodies_get_clear_4xx(sqlite_url: str, start_server) -> None:
    admin = create_key(sqlite_url, "admin", "admin")
    server = start_server(sqlite_url, "--max-body-bytes", "2048")
    error = error_of(server.get("/v1/models", admin, headers={"X-Padding": "a" * 20_000}), 431)
    assert error["code"] == "headers_too_large"
    # A name repeated is counted each time: granian's keys() lists it once.
    repeated = [("Authorization", f"Bearer {admin}"), *[("X-" + "n" * 6000, "v")] * 3]
    error = error_of(httpx.get(server.base_url + "/v1/models", headers=repeated), 431)
    assert error["code"] == "headers_too_large"
    # granian shows the app no header value it cannot decode as text (a byte >= 0x80): such a value is
    # bounded by hyper's buffer instead, sized from the limit (roughly: 30,000 bytes pass, 40,000 do not;
    # a bare 431 there). It was 408 KiB whatever the limit.
    hidden = {"Authorization": f"Bearer {admin}", "X-Padding": b"\xff" * 100_000}
    assert httpx.get(server.base_url + "/v1/models", headers=hidden).status_code == 431
    assert server.get("/v1/models", admin, headers={"X-Padding": b"\xff" * 1000}).status_code == 200
    # Over HTTP/2 (h2c) the header list's bound is exact, at the limit plus 8 KiB (granian's was 16 MiB).
    with httpx.Client(http1=False, http2=True) as h2c:
        assert h2c.get(server.base_url + "/v1/models", headers={**hidden, "X-Padding": b"\xff" * 30_000}).status_code == 431
        assert h2c.get(server.base_url + "/v1/models", headers=hidden | {"X-Padding": b"\xff" * 1000}).status_code == 200
    big = {"id": "big", "description": "x" * 5000}
    response = httpx.post(server.base_url + "/v1/admin/models", json=big, headers={"Authorization": f"Bearer {admin}"})
    assert error_of(response, 413)["code"] == "body_too_large"

    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    streamed = httpx.post(server.base_url + "/v1/admin/catalog/apply", content=chunks(),
                          headers={"Authorization": f"Bearer {admin}"})
    assert error_of(streamed, 413)["code"] == "body_too_large"
    assert server.get("/v1/admin/models/big", admin).status_code == 404


def test_cors_is_off_by_default_and_configurable(sqlite_url: str, start_server) -> None:
    key = create_key(sqlite_url, "browser")
    plain = start_server(sqlite_url)
    response = plain.get("/v1/models", key, headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in response.headers
    server = start_server(sqlite_url, "--cors-origin", "https://ui.example")
    allowed = server.get("/v1/models", key, headers={"Origin": "https://ui.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"]
    preflight = httpx.options(server.base_url + "/v1/models", headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200 and "GET" in preflight.headers["access-control-allow-methods"]
    other = server.get("/v1/models", key, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert server.get("/v1/models/MiniMax-M3", key).json()["id"] == "MiniMax-M3"


def test_tls_from_server_options(sqlite_url: str, start_server, tmp_path: Path) -> None:
    cert, private_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(private_key), "-out", str(cert)], check=True, capture_output=True)
    key = create_key(sqlite_url, "tls")
    from .conftest import Server, free_port

    port = free_port()
    process = subprocess.Popen(
        [*Server.command(), "serve", "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(private_key)],
        env=Server.environment(sqlite_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"https://127.0.0.1:{port}/v1/models/MiniMax-M3"
        assert wait_until(lambda: _https_ok(url, key, cert), 15) is not None
        client = openai.OpenAI(api_key=key, base_url=f"https://127.0.0.1:{port}/v1",
                               http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=cert)))
        assert client.models.retrieve("MiniMax-M3").id == "MiniMax-M3"
    finally:
        process.terminate()
        process.wait(timeout=15)


def _https_ok(url: str, key: str, cert: Path) -> bool:
    try:
        context = ssl.create_default_context(cafile=cert)
        return httpx.get(url, headers={"Authorization": f"Bearer {key}"}, verify=context).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_drains_in_flight_requests(sqlite_url: str, start_server) -> None:
    admin = create_key(sqlite_url, "admin", "admin")
    server = start_server(sqlite_url)
    # Hold the database's write lock so a DELETE is stuck in flight (waiting for the lock).
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    result: dict[str, int] = {}
    client_ports: list[int] = []

    def delete() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("DELETE", "/v1/models/MiniMax-M2", headers={"Authorization": f"Bearer {admin}"})
            client_ports.append(connection.sock.getsockname()[1])  # once the whole request is sent
            response = connection.getresponse()
            response.read()
            result["delete"] = response.status
        finally:
            connection.close()

    request = threading.Thread(target=delete)
    request.start()
    # Until the server has accepted the connection and read the request, the stop would come before it (a fixed
    # 0.5 s for that is not always enough on a loaded machine): wait for that, then for it to reach the lock.
    assert wait_until(lambda: bool(client_ports) and read_by_the_server(server.port, client_ports[0]), 10) is not None
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert server.process.poll() is None, "the server quit with a request in flight"
    blocker.execute("ROLLBACK")
    blocker.close()
    request.join(timeout=15)
    assert result["delete"] == 200
    started = time.monotonic()
    assert server.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 15
    assert "MiniMax-M2 " not in run_cli(sqlite_url, "models", "list").stdout + " "


def test_upstream_health_is_in_the_metrics(sqlite_url: str, start_server) -> None:
    from .fake_upstream import FakeUpstream

    upstream = FakeUpstream()
    try:
        admin = create_key(sqlite_url, "ops", "admin")
        run_cli(sqlite_url, "upstreams", "add", "fakeup", "--base-url", upstream.base_url)
        server = start_server(sqlite_url)
        remote = ["--url", server.base_url, "--api-key", admin]

        def sample(name: str) -> float | None:
            for line in server.get("/metrics", admin).text.splitlines():
                if line.startswith(f'{name}{{upstream="fakeup"}}'):
                    return float(line.rsplit(" ", 1)[1])
            return None

        run_cli(sqlite_url, "upstreams", "sync-now", "fakeup", *remote)
        assert sample("modeldex_upstream_up") == 1.0
        assert sample("modeldex_upstream_models") == 1.0
        assert sample("modeldex_upstream_last_success_timestamp_seconds") is not None
        upstream.mode = "html"
        run_cli(sqlite_url, "upstreams", "sync-now", "fakeup", *remote, check=False)
        assert sample("modeldex_upstream_up") == 0.0
    finally:
        upstream.close()
