"""Paths, methods and headers at the edges, sent byte for byte with a raw client."""

from __future__ import annotations

import pytest

from . import rawhttp
from .conftest import Deployment


@pytest.fixture(scope="module", autouse=True)
def extra_models(deployment: Deployment) -> None:
    deployment.add_model("meta-llama/Llama-3.1-8B-Instruct", "--owned-by", "meta")
    deployment.add_model("ft:gpt-4o:acme::x1", "--owned-by", "acme")


def get(deployment: Deployment, target: bytes | str, key: str | None = "read", method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None) -> rawhttp.RawResponse:
    all_headers = list(headers or [])
    if key == "read":
        all_headers.append((b"Authorization", f"Bearer {deployment.read_key}".encode()))
    return rawhttp.request(deployment.server.port, method, target, all_headers)


def assert_envelope(response: rawhttp.RawResponse, status: int, code: str | None = None) -> dict:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json; charset=utf-8"  # OpenAI's, on errors
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("target", [
    "/v1/models/meta-llama/Llama-3.1-8B-Instruct",
    "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct",
    "/v1/models/meta-llama%2fLlama-3.1-8B-Instruct",
    "/v1/models/meta%2Dllama%2FLlama%2D3.1%2D8B%2DInstruct",
])
def test_slash_ids_round_trip_raw_or_encoded(deployment: Deployment, target: str) -> None:
    response = get(deployment, target)
    assert response.status == 200
    assert response.json()["id"] == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize("target", ["/v1/models/ft:gpt-4o:acme::x1", "/v1/models/ft%3Agpt-4o%3Aacme%3A%3Ax1"])
def test_colon_ids_round_trip(deployment: Deployment, target: str) -> None:
    assert get(deployment, target).json()["id"] == "ft:gpt-4o:acme::x1"


@pytest.mark.parametrize("target", [
    "/v1/models/./MiniMax-M2.7",
    "/v1/models/meta-llama/../MiniMax-M2.7",
    "/v1/models/%2e/MiniMax-M2.7",
    "/v1/models/x/%2E%2E/MiniMax-M2.7",
    "/v1/models/a/b/../../MiniMax-M2.7",
])
def test_dot_segments_resolve_before_routing(deployment: Deployment, target: str) -> None:
    for _ in range(3):  # asked again, when the answer to the resolved path is remembered
        response = get(deployment, target)
        assert response.status == 200
        assert response.json()["id"] == "MiniMax-M2.7"


@pytest.mark.parametrize("target", [
    "/v1/models/../../openapi.json/x",
    "/v1/models/../admin",
    "/v1/models/%2e%2e/%2e%2e/etc/passwd",
    "/v1/models/..",
])
def test_dot_segments_cannot_escape_into_other_routes(deployment: Deployment, target: str) -> None:
    # After resolution these name paths outside /v1/models/{id}: no model lookup happens.
    error = assert_envelope(get(deployment, target), 404)
    assert error["message"].startswith("Invalid URL")


def test_encoded_dot_segments_climb_only_where_the_key_may_go(deployment: Deployment) -> None:
    # granian decodes the path before routing, so `..%2F..%2F` climbs like `../../`. No model id may
    # hold a `..` segment, and every route checks the key itself: climbing reaches nothing more.
    error = assert_envelope(get(deployment, "/v1/models/..%2F..%2Fv1%2Fadmin%2Fkeys"), 403,
                            "insufficient_permissions")
    assert "admin" in error["message"]
    assert get(deployment, "/v1/models/..%2F..%2Fhealthz").json() == {"status": "ok"}


def test_twenty_kilobyte_id_is_a_clear_404(deployment: Deployment) -> None:
    long_id = "x" * 20_000
    error = assert_envelope(get(deployment, "/v1/models/" + long_id), 404, "model_not_found")
    assert len(error["message"]) < 300 and "at most 256 characters" in error["message"]
    error = assert_envelope(get(deployment, "/v1/models/" + "%2F" * 7000), 404, "model_not_found")
    assert len(error["message"]) < 300


def test_invalid_utf8_in_an_id_is_a_404(deployment: Deployment) -> None:
    assert_envelope(get(deployment, "/v1/models/%FF%FEbad"), 404, "model_not_found")


def test_raw_invalid_utf8_in_the_request_line_is_refused_by_the_http_layer(deployment: Deployment) -> None:
    # Not valid HTTP (a request-target is ASCII); the server's parser answers 400 before the app runs.
    assert get(deployment, b"/v1/models/\xff\xfe").status == 400


def test_non_ascii_ids_round_trip(deployment: Deployment) -> None:
    deployment.add_model("模型/中文-1", "--owned-by", "acme")
    assert get(deployment, "/v1/models/%E6%A8%A1%E5%9E%8B%2F%E4%B8%AD%E6%96%87-1").json()["id"] == "模型/中文-1"
    assert get(deployment, "/v1/models/模型/中文-1".encode()).json()["id"] == "模型/中文-1"


@pytest.mark.parametrize("target", ["/", "/v1", "/v1/foo", "/v2/models", "/v1/models/", "/v1/modelsx",
                                    "/v1/chat/completions"])
def test_unknown_routes_are_404_in_the_envelope(deployment: Deployment, target: str) -> None:
    error = assert_envelope(get(deployment, target), 404)
    assert error["message"] == f"Invalid URL (GET {target})"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("method", "target", "allowed"), [
    ("POST", "/v1/models", "GET, HEAD"),
    ("PUT", "/v1/models", "GET, HEAD"),
    ("DELETE", "/v1/models", "GET, HEAD"),
    ("POST", "/v1/models/MiniMax-M2.7", "GET, HEAD, DELETE"),
    ("PATCH", "/v1/models/MiniMax-M2.7", "GET, HEAD, DELETE"),
])
def test_wrong_method_is_405_with_allow(deployment: Deployment, method: str, target: str, allowed: str) -> None:
    response = get(deployment, target, method=method)
    assert_envelope(response, 405)
    assert response.headers["allow"] == allowed


def test_wrong_method_on_a_framework_route_is_405_too(deployment: Deployment) -> None:
    response = get(deployment, "/healthz", key=None, method="POST")
    assert_envelope(response, 405)
    assert "GET" in response.headers["allow"]


def test_a_websocket_upgrade_is_answered_as_a_plain_request(deployment: Deployment) -> None:
    """modeldex serves no websockets: granian runs with them off, so an upgrade request gets the route's
    ordinary answer, not a 101, a hang or an empty reply."""
    upgrade = [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (b"Sec-WebSocket-Version", b"13")]
    response = get(deployment, "/v1/models/MiniMax-M2.7", headers=upgrade)
    assert response.status == 200 and response.json()["id"] == "MiniMax-M2.7"
    assert_envelope(get(deployment, "/v1/models", key=None, headers=upgrade), 401)


def test_head_answers_headers_only(deployment: Deployment) -> None:
    response = get(deployment, "/v1/models", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert int(response.headers["content-length"]) > 100


@pytest.mark.parametrize("value", [b"", b"Bearer", b"Bearer ", b"Basic dXNlcjpwYXNz", b"Token abc",
                                   b"sk-mdx-nobearer"])
def test_authorization_without_a_bearer_token_is_missing_key(deployment: Deployment, value: bytes) -> None:
    error = assert_envelope(get(deployment, "/v1/models", key=None, headers=[(b"Authorization", value)]), 401)
    assert "Authorization: Bearer" in error["message"]


def test_bearer_scheme_is_case_insensitive_and_whitespace_tolerant(deployment: Deployment) -> None:
    key = deployment.read_key.encode()
    for value in (b"bearer " + key, b"BEARER " + key, b"Bearer   " + key + b"  "):
        assert get(deployment, "/v1/models", key=None, headers=[(b"Authorization", value)]).status == 200


def test_odd_tokens_are_invalid_keys_with_safe_messages(deployment: Deployment) -> None:
    for token in (b"x" * 10_000, b"sk-mdx-" + b"a" * 52, b'"quoted\\key"'):
        error = assert_envelope(
            get(deployment, "/v1/models", key=None, headers=[(b"Authorization", b"Bearer " + token)]),
            401, "invalid_api_key",
        )
        assert len(error["message"]) < 300
        assert token.decode("latin-1") not in error["message"]


def test_a_token_that_is_not_ascii_counts_as_no_key(deployment: Deployment) -> None:
    # granian passes on only header values that are visible ASCII: such a header never reaches the app.
    token = b"\xff\xfe\xfd-not-utf8-token-here"
    error = assert_envelope(
        get(deployment, "/v1/models", key=None, headers=[(b"Authorization", b"Bearer " + token)]), 401)
    assert "didn't provide an API key" in error["message"]
    assert token.decode("latin-1") not in error["message"]


def test_large_unrelated_headers_are_ignored(deployment: Deployment) -> None:
    response = get(deployment, "/v1/models/MiniMax-M2", headers=[(b"X-Filler", b"a" * 16_000)])
    assert response.status == 200


def test_query_strings_do_not_change_the_route(deployment: Deployment) -> None:
    assert get(deployment, "/v1/models/MiniMax-M2?foo=bar").json()["id"] == "MiniMax-M2"
