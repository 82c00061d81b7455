"""Requests crafted to hurt, from clients without a key, sent byte for byte: control characters that would
forge access-log lines, non-ASCII query strings on error answers, trailing slashes that used to redirect
to wherever the Host header said."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import rawhttp
from .conftest import Server, create_key, wait_until

FORGED = "2026-01-01 00:00:00,000 INFO modeldex.access: req_forged DELETE /v1/models/x 200 0.10ms key=admin1"
GENUINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO modeldex\.access: req_[0-9a-f]{32} GET ")
# The forged line, after a newline, a carriage return, and an ANSI "clear screen", percent-encoded.
FORGING_PATHS = [
    "/v1/x%0A" + FORGED.replace(" ", "%20"),
    "/v1/x%0D%0A" + FORGED.replace(" ", "%20"),
    "/v1/x%1B[2J%1B[H" + FORGED.replace(" ", "%20"),
    "/v1/models/x%0A" + FORGED.replace(" ", "%20"),  # a Models route, without a key: 401
    "/v1/admin/models/x%0D" + FORGED.replace(" ", "%20"),  # the admin API, without a key: 401
    "/v1/x%C2%85%E2%80%A8" + FORGED.replace(" ", "%20"),  # Unicode's next-line and line separator
    "/v1/x%FF%FE%5Cx0a",  # not UTF-8, and a backslash that must not pass for an escape
]


@pytest.fixture(scope="module", params=["text", "json"])
def logged_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    db_url = f"sqlite:///{tmp}/catalog.db"
    create_key(db_url, "admin1", "admin")
    server = Server(db_url, tmp / "server.log", "--log-format", request.param)
    yield server
    server.stop()


def log_format(server: Server) -> str:
    return "json" if "--log-format json" in " ".join(server.process.args) else "text"  # type: ignore[arg-type]


@pytest.mark.parametrize("target", FORGING_PATHS)
def test_control_characters_cannot_forge_access_log_lines(logged_server: Server, target: str) -> None:
    response = rawhttp.request(logged_server.port, "GET", target)
    assert response.status in (401, 404), response.body
    request_id = response.headers["x-request-id"]
    assert wait_until(lambda: request_id in logged_server.log(), 5) is not None
    lines = logged_server.log().splitlines()
    mine = [line for line in lines if request_id in line]
    assert len(mine) == 1, mine  # one line for the request, all of it
    assert not any(line.startswith(("2026-01-01", "INFO modeldex.access: req_forged"))
                   for line in lines)
    # Every line that mentions the forged id is some request's own line (the one of this test, or of earlier ones).
    for line in (line for line in lines if "req_forged" in line):
        assert GENUINE.match(line) or json.loads(line)["request_id"].startswith("req_"), line
    text = logged_server.log()
    assert "\x1b" not in text and "\r" not in text and "\x85" not in text and "\u2028" not in text
    if log_format(logged_server) == "json":
        entry = json.loads(mine[0])  # orjson escaped it
        assert entry["request_id"] == request_id and entry["path"].startswith("/v1/")
    elif "%5C" in target:
        assert "\\\\x0a" in mine[0]  # the backslash escaped: `\x0a` in the path is not an escaped newline
    else:
        assert "\\x" in mine[0] or "\\u" in mine[0]
    assert "Traceback" not in text


# U+0080, U+00E9 and U+00FF, raw (UTF-8) and percent-encoded, in the query of answers the side app gives.
QUERIES = ["x=\u0080", "x=\u00e9", "x=\u00ff", "x=%C3%A9", "\u00e9\u00ff=\u00e9"]
ANSWERS = [("GET", "/v1/nowhere", 404), ("POST", "/healthz", 405), ("GET", "/healthz/", 404),
           ("POST", "/v1/models", 405), ("GET", "/v1/admin/models", 401), ("GET", "/readyz", 200)]


def test_non_ascii_query_strings_get_the_normal_answer(logged_server: Server) -> None:
    wrong = []
    for query in QUERIES:
        for method, path, status in ANSWERS:
            response = rawhttp.request(logged_server.port, method, f"{path}?{query}".encode())
            if response.status != status:
                wrong.append((method, path, query, response.status))
            elif status != 200:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    assert not wrong, f"{len(wrong)}/{len(QUERIES) * len(ANSWERS)} wrong: {wrong}"
    assert "Traceback" not in logged_server.log()


SLASHED = ["/healthz/", "/readyz/", "/metrics/", "/openapi.json/", "/v1/admin/changes/", "/v1/admin/catalog/apply/"]


def test_trailing_slashes_are_404s_in_the_envelope_not_redirects(logged_server: Server) -> None:
    wrong = []
    for path in SLASHED:
        for method in ("GET", "POST", "OPTIONS"):  # OPTIONS: a preflight, refused (CORS is off)
            headers = [(b"Host", b"evil.example"), (b"Origin", b"https://evil.example"),
                       (b"Access-Control-Request-Method", b"GET")]
            response = rawhttp.request(logged_server.port, method, path + "?next=1", headers)
            if response.status != 404 or "location" in response.headers:
                wrong.append((method, path, response.status, response.headers.get("location")))
                continue
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["message"] == f"Invalid URL ({method} {path})"
    assert not wrong, f"{len(wrong)}/{len(SLASHED) * 3} wrong: {wrong}"


def test_a_refused_preflight_is_in_the_envelope(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    server = Server(db_url, tmp_path / "server.log", "--cors-origin", "https://ui.example")
    try:
        for path in ("/v1/models", "/healthz/", "/v1/admin/models"):
            response = rawhttp.request(server.port, "OPTIONS", path, [
                (b"Origin", b"https://evil.example"), (b"Access-Control-Request-Method", b"GET")])
            assert response.status == 400 and response.headers["content-type"] == "application/json; charset=utf-8"
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["code"] == "cors_not_allowed"
            assert "location" not in response.headers and "access-control-allow-origin" not in response.headers
    finally:
        server.stop()


def cut_short(port: int, head: bytes, body: bytes, missing: int = 100) -> rawhttp.RawResponse:
    """A request whose body stops `missing` bytes before its Content-Length: the client closes its side
    (a crash, a timeout, a dropped proxy connection) and waits for an answer."""
    head += b"Content-Length: %d\r\nHost: 127.0.0.1\r\n\r\n" % (len(body) + missing)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return rawhttp.parse(data)


def test_a_body_cut_short_is_refused_not_acted_on(tmp_path: Path) -> None:
    """RFC 9112 6.3: a body shorter than its Content-Length is incomplete. granian ends it without an error
    (or a closed transport, on the inference routes): a cut-short admin write was applied (201), a
    cut-short inference request was a 500 with a traceback, a cut-short console form signed in."""
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    admin = create_key(db_url, "admin1", "admin")
    server = Server(db_url, tmp_path / "server.log")
    try:
        for model_id, missing in (("cut-short", 100), ("cut-short-by-one", 1)):
            body = json.dumps({"id": model_id, "owned_by": "acme"}).encode()
            response = cut_short(server.port, b"POST /v1/admin/models HTTP/1.1\r\nAuthorization: Bearer "
                                 + admin.encode() + b"\r\nContent-Type: application/json\r\n", body, missing)
            assert response.status == 400, response.body
            assert response.json()["error"]["code"] == "incomplete_body" and response.headers["x-request-id"]
            assert server.get(f"/v1/admin/models/{model_id}", admin).status_code == 404  # nothing was done
        body = json.dumps({"model": "MiniMax-M2.7", "messages": [{"role": "user", "content": "hi"}]}).encode()
        response = cut_short(server.port, b"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer "
                             + admin.encode() + b"\r\nContent-Type: application/json\r\n", body)
        assert response.status == 400, response.body
        assert response.json()["error"]["code"] == "incomplete_body" and response.headers["x-request-id"]
        response = cut_short(server.port, b"POST /console/sign-in HTTP/1.1\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\n", f"key={admin}".encode())
        assert response.status == 400 and "set-cookie" not in response.headers
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def stalled(port: int, head: bytes, body: bytes, missing: int = 100) -> tuple[rawhttp.RawResponse, float]:
    """A request that sends its body but `missing` bytes of it and then nothing, its connection left open (a
    stalled upload, or a slowloris client holding the connection): the answer, and the seconds it took."""
    head += b"Content-Length: %d\r\nHost: 127.0.0.1\r\n\r\n" % (len(body) + missing)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return rawhttp.parse(data), time.monotonic() - started


def test_a_stalled_body_is_408_and_not_acted_on(tmp_path: Path) -> None:
    """granian times out a request's headers, not its body: a client that stopped sending held its connection
    (and a worker's memory) for as long as it liked. With --body-timeout 0.3, each body reader gives up."""
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    admin = create_key(db_url, "admin1", "admin")
    server = Server(db_url, tmp_path / "server.log", "--body-timeout", "0.3")
    auth = b"Authorization: Bearer " + admin.encode() + b"\r\nContent-Type: application/json\r\n"
    try:
        body = json.dumps({"id": "stalled", "owned_by": "acme"}).encode()
        response, took = stalled(server.port, b"POST /v1/admin/models HTTP/1.1\r\n" + auth, body)
        assert response.status == 408, response.body
        error = response.json()["error"]
        assert error["code"] == "body_timeout" and "0.3 seconds" in error["message"], error
        assert response.headers["x-request-id"] and 0.25 < took < 5
        assert server.get("/v1/admin/models/stalled", admin).status_code == 404  # nothing was done
        chat = json.dumps({"model": "MiniMax-M2.7", "messages": [{"role": "user", "content": "hi"}]}).encode()
        for body in (chat, chat[:-1] + b', "padding": "' + b"x" * 100_000 + b'"}'):  # read in one call, in chunks
            response, took = stalled(server.port, b"POST /v1/chat/completions HTTP/1.1\r\n" + auth, body)
            assert response.status == 408, response.body
            assert response.json()["error"]["code"] == "body_timeout" and 0.25 < took < 5
        response, took = stalled(server.port, b"POST /console/sign-in HTTP/1.1\r\n"
                                 b"Content-Type: application/x-www-form-urlencoded\r\n", f"key={admin}".encode())
        assert response.status == 400 and "set-cookie" not in response.headers and 0.25 < took < 5

        # A slow but steady body goes on: the timeout is between two parts of it, not for the whole.
        body = json.dumps({"id": "slow-but-steady", "owned_by": "acme"}).encode()
        head = (b"POST /v1/admin/models HTTP/1.1\r\n" + auth
                + b"Content-Length: %d\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % len(body))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            started = time.monotonic()
            piece = len(body) // 8 + 1
            for start in range(0, len(body), piece):  # eight pieces, 0.06 s apart: far within the timeout
                time.sleep(0.06)
                sock.sendall(body[start:start + piece])
            assert time.monotonic() - started > 0.4  # more than the timeout, in all
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert rawhttp.parse(data).status == 201, data
        assert server.get("/v1/admin/models/slow-but-steady", admin).status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()
