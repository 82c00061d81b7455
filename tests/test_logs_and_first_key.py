"""Secrets stay out of logs; the first key is shown on a terminal only; failures are 500s with the trace
in the log alone."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest

from .conftest import cli_env, create_key, execute_sql, free_port, run_cli, wait_until

KEY_PATTERN = re.compile(r"sk-mdx-[A-Za-z0-9]{52}")


def test_no_key_secret_appears_in_the_server_log(db_url: str, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    reader = create_key(db_url, "reader")
    revoked = create_key(db_url, "gone")
    run_cli(db_url, "keys", "revoke", "gone")
    server = start_server(db_url, "--log-level", "debug")
    wrong = "sk-mdx-" + "W" * 52
    request_ids = []
    for key in (admin, reader, revoked, wrong, admin[:-1] + "x"):
        for path in ("/v1/models", "/v1/models/MiniMax-M2", "/v1/models/nope", "/v1/unknown"):
            response = server.get(path, key)
            request_ids.append(response.headers["x-request-id"])
    assert server.client(admin).models.delete("MiniMax-M2").deleted
    with pytest.raises(openai.AuthenticationError):
        server.client(reader + "z").models.list()
    server.stop()

    log = server.log()
    for request_id in request_ids:
        assert request_id in log
    assert "key=admin" in log and "key=reader" in log
    for secret in (admin, reader, revoked, wrong):
        assert secret not in log
        assert secret[-40:] not in log  # not even the random part alone
    assert not KEY_PATTERN.search(log)


def _read_pty(fd: int, until: re.Pattern[str], timeout: float) -> str:
    output = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until.search(output):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                output += os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
    return output


@contextmanager
def serving_on_a_terminal(db_url: str, *args: str) -> Iterator[tuple[str, str]]:
    """`modeldex serve` with a terminal as its stdin, stdout and stderr, as a person starts it: what it
    printed until its worker started, and the first key it showed there."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "modeldex", "serve", *args], env=cli_env(db_url),
                               stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    try:
        output = _read_pty(primary, re.compile(r"Started worker"), 30)
        match = KEY_PATTERN.search(output)
        assert match, output
        yield output, match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(primary)


def test_first_start_on_a_terminal_creates_and_shows_an_admin_key(db_url: str, tmp_path) -> None:
    port = free_port()
    with serving_on_a_terminal(db_url, "--port", str(port)) as (output, key):
        assert f"curl -H 'Authorization: Bearer {key}' http://127.0.0.1:{port}/v1/models" in output
        response = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        listed = run_cli(db_url, "keys", "list").stdout
        assert "admin" in listed and key not in listed


def test_the_first_key_and_the_address_are_valid_urls_on_ipv6(sqlite_url: str) -> None:
    """`--host ::1`: the "Try it" command and the "listening on" line bracket the address, so the curl shown
    works (`http://::1:8000` is no URL)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    with serving_on_a_terminal(sqlite_url, "--host", "::1", "--port", str(port)) as (output, key):
        assert f"curl -H 'Authorization: Bearer {key}' http://[::1]:{port}/v1/models" in output
        assert f"listening on http://[::1]:{port}" in output
        response = httpx.get(f"http://[::1]:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200


def test_json_logs_are_json_from_the_first_line(sqlite_url: str, start_server) -> None:
    """--log-format json (the systemd unit's): serve's own notes (a new catalog, no keys yet, listening) are
    JSON objects like the rest, so a log pipeline that parses every line as JSON loses none."""
    server = start_server(sqlite_url, "--log-format", "json")
    assert server.get("/healthz").status_code == 200
    server.stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # each line whole, or this raises
    messages = [entry["message"] for entry in entries if entry["logger"] == "modeldex.serve"]
    assert messages[0].startswith("modeldex: created a new catalog at ")
    assert "modeldex keys create admin --scope admin" in messages[1]
    assert "listening on http://127.0.0.1:" in messages[2]
    assert {entry["level"] for entry in entries} <= {"info", "warning"}


def test_first_start_without_a_terminal_only_says_how_to_make_a_key(db_url: str, start_server) -> None:
    server = start_server(db_url)
    log = server.log()
    assert "modeldex keys create admin --scope admin" in log
    assert not KEY_PATTERN.search(log)
    assert run_cli(db_url, "keys", "list").stderr.startswith("no keys")
    assert server.get("/v1/models").status_code == 401


def test_unexpected_failure_is_a_generic_500_and_the_trace_goes_to_the_log(db_url: str, start_server) -> None:
    admin = create_key(db_url, "admin", "admin")
    server = start_server(db_url)
    # Someone breaks the database under the running server.
    execute_sql(db_url, "DROP TABLE models")

    with pytest.raises(openai.InternalServerError) as caught:
        server.client(admin).models.delete("MiniMax-M2.1")
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    response = httpx.delete(server.base_url + "/v1/models/MiniMax-M2", headers={"Authorization": f"Bearer {admin}"})

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] is None
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    for leak in ("Traceback", "sqlite", "psycopg", "models", "DROP", "Error"):
        assert leak not in response.text
    # Reads keep being answered from the last good catalog.
    assert server.get("/v1/models/MiniMax-M2", admin).status_code == 200
    assert wait_until(lambda: "Traceback" in server.log(), 2) is not None
    log = server.log()
    assert f"unhandled error in request {request_id}" in log
    assert "no such table: models" in log or 'relation "models" does not exist' in log


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_repeated_request_is_logged_like_the_first(sqlite_url: str, start_server, log_format: str) -> None:
    """From the second ask on, a request is answered from its remembered answer, whose log line is made from
    parts made once (`access_log.line_parts`): each line still says its own request id and method, the path,
    status, key and client, as the first ask's line does."""
    reader = create_key(sqlite_url, "reader")
    server = start_server(sqlite_url, "--log-format", log_format)
    asks = [("GET", "/v1/models/MiniMax-M2.7", reader), ("HEAD", "/v1/models/MiniMax-M2.7", reader),
            ("GET", "/v1/models/no-such-model", reader), ("GET", "/v1/models/MiniMax-M2.7", "sk-mdx-" + "W" * 52)]
    sent = []
    with httpx.Client(base_url=server.base_url) as client:
        for method, path, key in asks:
            for _ in range(3):
                response = client.request(method, path, headers={"Authorization": f"Bearer {key}"})
                sent.append((response.headers["x-request-id"], method, path, response.status_code, key))
    server.stop()
    lines = {}
    for line in server.log().splitlines():
        match = re.search(r"req_[0-9a-f]{32}", line)
        if match and "modeldex.access" in line:
            lines[match.group(0)] = line
    for request_id, method, path, status, key in sent:
        key_name = "reader" if key == reader else None
        if log_format == "json":
            entry = json.loads(lines[request_id])
            assert (entry["method"], entry["path"], entry["status"], entry["key"], entry["client"]) == (
                method, path, status, key_name, "127.0.0.1")
            assert entry["route"] == "retrieve" and entry["duration_ms"] >= 0
        else:
            assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO modeldex.access: {request_id} "
                                rf"{method} {re.escape(path)} {status} \d+\.\d\dms key={key_name or '-'} "
                                r"client=127\.0\.0\.1", lines[request_id]), lines[request_id]
