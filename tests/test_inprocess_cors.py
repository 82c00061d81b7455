"""CORS in-process, off and on: the Models routes, the admin API and error answers, simple requests and
preflights. test_operations.py keeps one real-server check of the same contract."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .inprocess import REQUEST_ID, Harness, cors_headers, error_of

pytestmark = pytest.mark.anyio

UI = "https://ui.example"
EVIL = "https://evil.example"


class Served:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.read = harness.key("reader")
        self.admin = harness.key("admin", "admin")

    async def request(self, method: str, path: str, key: str | None = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.harness.request(method, path, key, headers=headers)


def _served(tmp_path_factory: pytest.TempPathFactory, name: str, **settings) -> Iterator[Served]:
    harness = Harness(tmp_path_factory.mktemp(name), **settings)
    yield Served(harness)
    harness.stop()


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served(tmp_path_factory, "cors-off")


@pytest.fixture(scope="module")
def on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served(tmp_path_factory, "cors-on", cors_origins=(UI,))


@pytest.fixture(scope="module")
def anywhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served(tmp_path_factory, "cors-star", cors_origins=("*",))


# (method, path, which key, expected status): a Models answer, admin answers, and error answers from
# both sides of the dispatch (the hot path and the Starlette side app).
SIMPLE = [
    ("GET", "/v1/models", "read", 200),
    ("GET", "/v1/models/MiniMax-M3", "read", 200),
    ("GET", "/v1/models/ghost", "read", 404),
    ("GET", "/v1/models", None, 401),
    ("POST", "/v1/models", "read", 405),
    ("GET", "/v1/admin/models", "admin", 200),
    ("GET", "/v1/admin/models", "read", 403),
    ("GET", "/v1/admin/models", None, 401),
    ("GET", "/v1/nowhere", "read", 404),
    ("GET", "/healthz", None, 200),
    ("GET", "/metrics", None, 401),
]
PREFLIGHT = {"Origin": UI, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}


def key_of(served: Served, which: str | None) -> str | None:
    return {"read": served.read, "admin": served.admin, None: None}[which]


@pytest.mark.parametrize(("method", "path", "which", "status"), SIMPLE)
async def test_off_sends_no_cors_headers_anywhere(off: Served, method: str, path: str, which: str | None,
                                                  status: int) -> None:
    response = await off.request(method, path, key_of(off, which), {"Origin": UI})
    assert response.status_code == status
    assert cors_headers(response) == {}
    assert "Origin" not in response.headers.get_list("vary")


@pytest.mark.parametrize(("path", "status"), [("/v1/models", 405), ("/v1/models/MiniMax-M3", 405),
                                              ("/v1/admin/models", 405), ("/v1/nowhere", 404)])
async def test_off_does_not_answer_preflights_as_cors(off: Served, path: str, status: int) -> None:
    # Without CORS an OPTIONS is just a request its route does not allow (test_inprocess_side checks Allow).
    response = await off.request("OPTIONS", path, headers=PREFLIGHT)
    error_of(response, status)
    assert cors_headers(response) == {}


@pytest.mark.parametrize(("method", "path", "which", "status"), SIMPLE)
async def test_on_allows_the_configured_origin_on_every_answer(on: Served, method: str, path: str,
                                                               which: str | None, status: int) -> None:
    response = await on.request(method, path, key_of(on, which), {"Origin": UI})
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == UI
    exposed = {name.strip() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "etag", "retry-after", "x-ratelimit-remaining-requests"} <= exposed
    # The answer depends on the Origin: caches must keep answers to different origins apart.
    assert "Origin" in response.headers.get_list("vary")
    assert len(response.headers.get_list("access-control-allow-origin")) == 1


@pytest.mark.parametrize(("method", "path", "which", "status"), SIMPLE)
async def test_on_gives_other_origins_nothing(on: Served, method: str, path: str, which: str | None,
                                              status: int) -> None:
    for headers in ({"Origin": EVIL}, {"Origin": "https://ui.example.evil"}, {"Origin": "null"}, {}):
        response = await on.request(method, path, key_of(on, which), headers)
        assert response.status_code == status
        assert cors_headers(response) == {}, headers


async def test_on_oversized_headers_are_readable_by_the_allowed_origin(on: Served) -> None:
    # An error the browser cannot read (no allow-origin) surfaces as a bare network error; every other
    # error answer carries CORS headers, this one should too.
    response = await on.request("GET", "/v1/models", on.read, {"Origin": UI, "X-Padding": "a" * 17_000})
    error_of(response, 431, "headers_too_large")
    assert response.headers.get("access-control-allow-origin") == UI


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/MiniMax-M3", "/v1/admin/models", "/v1/nowhere"])
async def test_an_allowed_preflight_is_200_with_what_is_allowed(on: Served, path: str) -> None:
    response = await on.request("OPTIONS", path, headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == UI
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "HEAD", "DELETE", "PATCH", "POST"} <= methods
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "if-none-match"} <= allowed
    assert int(response.headers["access-control-max-age"]) > 0
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])


async def test_a_preflight_for_an_admin_write_is_allowed(on: Served) -> None:
    response = await on.request("OPTIONS", "/v1/admin/models/x", headers={
        "Origin": UI, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "Authorization, Content-Type, If-Match"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == UI


async def test_a_preflight_from_another_origin_is_400_in_the_envelope(on: Served) -> None:
    response = await on.request("OPTIONS", "/v1/models", headers={**PREFLIGHT, "Origin": EVIL})
    error = error_of(response, 400, "cors_not_allowed")
    assert EVIL in error["message"]
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_asking_for_another_header_is_400(on: Served) -> None:
    response = await on.request("OPTIONS", "/v1/models", headers={
        **PREFLIGHT, "Access-Control-Request-Headers": "authorization, x-custom-thing"})
    error = error_of(response, 400, "cors_not_allowed")
    assert "x-custom-thing" in error["message"] and "authorization" not in error["message"]


async def test_a_preflight_for_what_the_official_sdks_send_is_allowed(on: Served) -> None:
    """The OpenAI and Anthropic SDKs in a browser send `x-stainless-*` headers describing themselves with
    every request, and Anthropic's its version and key headers: allowed, and named in the answer."""
    sent = ("authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-retry-count, "
            "x-stainless-timeout, anthropic-version, anthropic-dangerous-direct-browser-access, x-api-key")
    response = await on.request("OPTIONS", "/v1/chat/completions", headers={
        **PREFLIGHT, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": sent})
    assert response.status_code == 200, response.text
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in sent.split(",")} <= allowed


async def test_an_answer_to_no_or_another_origin_still_varies_by_origin(on: Served, anywhere: Served) -> None:
    """A shared cache must not hand an answer made without CORS headers to an allowed origin."""
    for headers in ({}, {"Origin": EVIL}):
        response = await on.request("GET", "/openapi.json", headers=headers)
        assert response.status_code == 200 and "Origin" in response.headers.get_list("vary"), headers
    assert "Origin" not in (await anywhere.request("GET", "/openapi.json")).headers.get_list("vary")


async def test_a_preflight_asking_for_another_method_is_400(on: Served) -> None:
    response = await on.request("OPTIONS", "/v1/models", headers={**PREFLIGHT, "Access-Control-Request-Method": "PUT"})
    error = error_of(response, 400, "cors_not_allowed")
    assert "PUT" in error["message"]


async def test_an_options_without_a_requested_method_is_no_preflight(on: Served) -> None:
    response = await on.request("OPTIONS", "/v1/models", headers={"Origin": UI})
    error_of(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["access-control-allow-origin"] == UI  # an actual request's answer, readable


async def test_the_cors_settings_change_no_answer_body(on: Served, off: Served) -> None:
    with_cors = await on.request("GET", "/v1/models/MiniMax-M3", on.read, {"Origin": UI})
    without = await off.request("GET", "/v1/models/MiniMax-M3", off.read, {"Origin": UI})
    assert with_cors.content == without.content


async def test_any_origin_answers_star(anywhere: Served) -> None:
    for origin in (UI, EVIL):
        response = await anywhere.request("GET", "/v1/models", anywhere.read, {"Origin": origin})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "x-request-id" in response.headers["access-control-expose-headers"]
        # The same answer for every origin: no Vary on it.
        assert "Origin" not in response.headers.get_list("vary")
    error = await anywhere.request("GET", "/v1/nowhere", None, {"Origin": EVIL})
    assert error.status_code == 404 and error.headers["access-control-allow-origin"] == "*"
    preflight = await anywhere.request("OPTIONS", "/v1/admin/keys", headers={**PREFLIGHT, "Origin": EVIL})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert (await anywhere.request("GET", "/v1/models", anywhere.read)).headers.get(
        "access-control-allow-origin") is None  # no Origin, no CORS
