"""The gateway in-process, over ASGI (the same dispatch as granian's RSGI path, with the ASGI downstream):
forwarding and streaming to the hostile fake upstream, CORS on inference answers, and the edges of what
a request may be. tests/test_gateway.py has the same contract against a real server."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from .fake_upstream import FakeUpstream
from .inprocess import REQUEST_ID, Harness, anthropic_error_of, error_of

pytestmark = pytest.mark.anyio

UI = "https://ui.example"


class Served:
    def __init__(self, harness: Harness, fake: FakeUpstream) -> None:
        self.harness = harness
        self.fake = fake
        self.read = harness.key("reader")
        self.narrow = harness.key("narrow", policy={"patterns": ["MiniMax-*"]})
        catalog = harness.catalog
        catalog.create("upstream", {"name": "fake", "base_url": fake.base_url, "routing_only": True,
                                    "api_key_env": "INPROCESS_FAKE_KEY"})
        catalog.create("model", {"id": "in-chat", "routes": [{"upstream": "fake", "model": "fake-chat"}]})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    mp = pytest.MonkeyPatch()
    mp.setenv("INPROCESS_FAKE_KEY", "sk-inprocess-upstream")
    fake = FakeUpstream()
    harness = Harness(tmp_path_factory.mktemp("gateway"), cors_origins=(UI,), max_inference_body_bytes=4096)
    yield Served(harness, fake)
    harness.stop()
    fake.close()
    mp.undo()


@pytest.fixture
async def fresh(served: Served) -> AsyncIterator[Served]:
    served.fake.chat_mode, served.fake.events, served.fake.drip = "ok", 5, 0.0
    served.fake.posts.clear()
    yield served
    await served.harness.app.upstream_client.close()  # its session belongs to this test's event loop


async def test_a_completion_over_asgi_with_cors(fresh: Served) -> None:
    response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read, headers={"origin": UI},
                                           json={"model": "in-chat", "messages": []})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fake-chat"
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])
    assert response.headers["access-control-allow-origin"] == UI
    [(_path, headers, _body)] = fresh.fake.posts
    assert headers["authorization"] == "Bearer sk-inprocess-upstream"


async def test_a_stream_over_asgi(fresh: Served) -> None:
    response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                           json={"model": "in-chat", "messages": [], "stream": True})
    assert response.status_code == 200 and response.headers["x-accel-buffering"] == "no"
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]] == [f"t{i} " for i in range(5)]


async def test_what_a_request_may_be(fresh: Served) -> None:
    harness = fresh.harness
    error_of(await harness.request("POST", "/v1/chat/completions", fresh.narrow, json={"model": "in-chat"}),
             404, "model_not_found")
    error_of(await harness.request("POST", "/v1/chat/completions", None, json={"model": "in-chat"}), 401)
    error_of(await harness.request("POST", "/v1/chat/completions", fresh.read, json={"model": "in-chat",
                                                                                       "pad": "x" * 5000}),
             413, "body_too_large")
    error_of(await harness.request("POST", "/v1/embeddings", fresh.read, content=b"{not json",
                                   headers={"content-type": "application/json"}), 400, "invalid_body")
    error_of(await harness.request("POST", "/v1/audio/transcriptions", fresh.read, json={"model": "in-chat"}),
             400, "invalid_body")
    assert fresh.fake.posts == []  # none of them reached the upstream


async def test_anthropic_clients_key_in_x_api_key(fresh: Served) -> None:
    async with fresh.harness.client() as client:
        response = await client.post("/v1/messages", headers={"x-api-key": fresh.read},
                                     json={"model": "in-chat", "max_tokens": 5, "messages": []})
        # `fake` speaks OpenAI's API only: the key was accepted, the route is what is missing.
        anthropic_error_of(response, 503, "protocol_not_served", type="api_error")
        anthropic_error_of(await client.post("/v1/messages", headers={"x-api-key": "sk-wrong"},
                                             json={"model": "in-chat"}), 401, "invalid_api_key", "authentication_error")
        assert (await client.post("/v1/chat/completions", headers={"x-api-key": fresh.read},
                                  json={"model": "in-chat"})).status_code == 401  # OpenAI's routes: bearer only


async def test_a_client_gone_before_the_watch_starts_still_cancels_the_upstream(fresh: Served) -> None:
    """The watch for a client leaving starts a moment into a request (gateway/forward.py); a client gone
    before that is noticed when it starts, and the upstream sees its connection close."""
    import asyncio
    import time

    from modeldex.gateway.forward import WATCH_DELAY_S

    app = fresh.harness.app
    assert app.inference is not None
    forwarder = app.inference.forwarder
    forwarder.watch_delay = 0.3
    fresh.fake.chat_mode = "stall"
    fresh.fake.disconnected.clear()
    body = json.dumps({"model": "in-chat", "messages": []}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    left = time.monotonic()

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop()
        await asyncio.sleep(0.05)  # the client leaves 50 ms in, before the watch
        return {"type": "http.disconnect"}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {fresh.read}".encode()), (b"content-type", b"application/json")],
             "client": ("127.0.0.9", 5000), "http_version": "1.1", "scheme": "http", "server": ("test", 80)}
    try:
        await asyncio.wait_for(app(scope, receive, send), 5)
        assert await asyncio.to_thread(fresh.fake.disconnected.wait, 2), "the upstream did not see its connection close"
        assert time.monotonic() - left >= 0.3  # noticed when the watch started, not before
        assert not sent  # nothing was answered to a client that is gone
    finally:
        forwarder.watch_delay = WATCH_DELAY_S


async def test_a_stream_longer_than_the_total_timeout_ends_with_its_error_event(fresh: Served) -> None:
    """Events keep coming (no idle timeout), but the whole answer may take only so long."""
    import time

    from modeldex.gateway.client import Timeouts

    client = fresh.harness.app.upstream_client
    kept = client.timeouts
    client.timeouts = Timeouts(connect=kept.connect, first_byte=kept.first_byte, idle=1.0, total=0.6)
    fresh.fake.events, fresh.fake.drip = 20, 0.1  # 2 s of events, 0.1 s apart
    started = time.monotonic()
    try:
        response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                               json={"model": "in-chat", "messages": [], "stream": True})
    finally:
        client.timeouts = kept
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert 2 <= len(events) - 1 < 20, events  # some deltas, then the error event
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_timeout" and "total timeout" in error["message"], error
    assert time.monotonic() - started >= 0.6


async def test_a_wait_for_the_first_byte_names_the_timeout_that_ended_it(fresh: Served) -> None:
    """A stalled upstream's 504 says which bound ran out: the first-byte timeout, or the request's total
    one when that is the shorter."""
    from modeldex.gateway.client import Timeouts

    client = fresh.harness.app.upstream_client
    kept = client.timeouts
    fresh.fake.chat_mode = "stall"
    try:
        for first_byte, total, phase in ((0.3, 30.0, "no answer before the first-byte timeout"),
                                         (30.0, 0.3, "the request's total timeout ran out before an answer")):
            client.timeouts = Timeouts(connect=kept.connect, first_byte=first_byte, idle=kept.idle, total=total)
            response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                                   json={"model": "in-chat", "messages": []})
            assert response.status_code == 504
            assert response.json()["error"]["message"] == f"The upstream `fake` did not answer in time ({phase}).", \
                response.text
    finally:
        client.timeouts = kept
        fresh.fake.chat_mode = "ok"


def _open_and_secret(served: Served) -> str:
    """Two models on the fake upstream, each under its own id there, and a key that may use only the first:
    what a LiteLLM proxy serving several models behind one upstream looks like."""
    catalog = served.harness.catalog
    for model_id in ("in-open", "in-secret"):
        if model_id not in served.harness.app.live.current.models:  # type: ignore[union-attr]
            catalog.create("model", {"id": model_id, "routes": [{"upstream": "fake", "model": model_id}]})
    return served.harness.key(f"open-only-{next(_KEY_NUMBERS)}", policy={"patterns": ["in-open"]})


_KEY_NUMBERS = itertools.count()


def _parts(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + value + b"\r\n" for head, value in parts)
    return body + b"--" + boundary + b"--\r\n"


_MODEL_PART = b'Content-Disposition: form-data; name="model"'
_FILE_PART = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav'


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; xboundary=AA; boundary=BB",  # a parameter whose name ends in `boundary`
    "multipart/form-data; boundary=AA; boundary=BB",  # two boundaries: python-multipart takes the last
    "multipart/form-data; boundary=AA; Boundary=BB",
    'multipart/form-data; x="boundary=AA"; boundary=BB',
])
async def test_a_multipart_upload_cannot_show_the_upstream_another_model(fresh: Served, content_type: str) -> None:
    """The body read with boundary BB (as Starlette/FastAPI upstreams read it, the last `boundary`) names
    `in-secret`; read with AA (the first text `boundary=` in the header), `in-open`, hidden inside the file.
    modeldex checked the AA reading against the key's policy and forwarded the body as it was: the upstream
    served `in-secret` to a key that may not use it."""
    key = _open_and_secret(fresh)
    smuggled = _parts(b"AA", [(_MODEL_PART, b"in-open")])
    body = _parts(b"BB", [(_MODEL_PART, b"in-secret"), (_FILE_PART, smuggled)])
    response = await fresh.harness.request("POST", "/v1/audio/transcriptions", key, content=body,
                                           headers={"content-type": content_type})
    assert response.status_code in (400, 404), response.text
    assert fresh.fake.posts == []


@pytest.mark.parametrize("body", [
    (b'--BB\nContent-Disposition: form-data; name="file"; filename="a"\n\n\r\n\r\nx\n--BB\n'
     b'Content-Disposition: form-data; name="model"\n\nin-secret\r\n--BB\r\n'
     b'Content-Disposition: form-data; name="model"\r\n\r\nin-open\r\n--BB--\r\n'),  # bare LF lines (Go reads them)
    (b'--BB\r\nContent-Disposition: form-data; name="model"\r\n\r\nin-open\r\n--BB\r\n'
     b'Content-Disposition: form-data; name="model"\r\n\r\nin-secret'),  # a last part never closed
    (b'--BB\r\nContent-Disposition: form-data; name="model"\r\n\r\nin-open\r\n--BB--\r\n'
     b'--BB\r\nContent-Disposition: form-data; name="model"\r\n\r\nin-secret\r\n--BB--\r\n'),  # parts after the close
], ids=["bare-lf", "unclosed", "after-close"])
async def test_an_ambiguous_multipart_body_is_refused(fresh: Served, body: bytes) -> None:
    key = _open_and_secret(fresh)
    response = await fresh.harness.request("POST", "/v1/audio/transcriptions", key, content=body,
                                           headers={"content-type": "multipart/form-data; boundary=BB"})
    error_of(response, 400, "invalid_body")
    assert fresh.fake.posts == []


async def test_a_multipart_upload_goes_upstream_with_the_boundary_it_was_read_with(fresh: Served) -> None:
    key = _open_and_secret(fresh)
    body = _parts(b"x-1", [(_FILE_PART, b"RIFF0000WAVE"), (_MODEL_PART, b"in-open")])
    response = await fresh.harness.request("POST", "/v1/audio/transcriptions", key, content=body,
                                           headers={"content-type": 'Multipart/Form-Data; charset=utf-8; '
                                                                    'boundary="x-1"'})
    assert response.status_code == 200, response.text
    [(_path, headers, sent)] = fresh.fake.posts
    assert headers["content-type"] == "multipart/form-data; boundary=x-1" and sent == body


async def test_a_json_body_naming_model_twice_reaches_the_upstream_naming_the_checked_one(fresh: Served) -> None:
    """orjson keeps the last of duplicate keys; an upstream parser that keeps the first (RapidJSON, simdjson)
    would have served `in-secret` from the body as sent. The upstream gets the body as modeldex read it."""
    key = _open_and_secret(fresh)
    for body in (b'{"model": "in-secret", "model": "in-open", "messages": []}',
                 b'{"mod\\u0065l": "in-secret", "model": "in-open", "messages": []}'):
        fresh.fake.posts.clear()
        response = await fresh.harness.request("POST", "/v1/chat/completions", key, content=body,
                                               headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        [(_path, _headers, sent)] = fresh.fake.posts
        assert b"in-secret" not in sent and json.loads(sent) == {"model": "in-open", "messages": []}


@pytest.mark.parametrize("member", ['"fallbacks": ["in-secret"]', '"models": ["in-open", "in-secret"]',
                                    '"context_window_fallback_dict": {"in-open": "in-secret"}',
                                    '"user_config": {"model_list": []}'])
async def test_a_body_naming_other_models_for_the_upstream_is_refused(fresh: Served, member: str) -> None:
    """LiteLLM's proxy honours client-side `fallbacks` for the master key modeldex sends it (run against
    litellm 1.108.7: a request for an allowed model whose call failed was answered by `secret-model`),
    OpenRouter a `models` list: either would let a key reach a model its policy hides."""
    key = _open_and_secret(fresh)
    response = await fresh.harness.request("POST", "/v1/chat/completions", key,
                                           content=f'{{"model": "in-open", "messages": [], {member}}}'.encode(),
                                           headers={"content-type": "application/json"})
    error_of(response, 400, "invalid_body")
    assert fresh.fake.posts == []


async def test_an_upstream_redirect_is_a_502_and_never_followed(fresh: Served) -> None:
    """A 3xx went to the client bare (no Location: the SDKs raised APIStatusError 302/307 with no message);
    it is an upstream that cannot be used as configured, and its target is never called with our key."""
    fresh.fake.chat_mode = "redirect"
    response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                           json={"model": "in-chat", "messages": []})
    error = error_of(response, 502, "upstream_error", type="server_error")
    assert "redirect (HTTP 307)" in error["message"] and "127.0.0.1:9" not in response.text
    assert "location" not in response.headers and len(fresh.fake.posts) == 1


async def test_a_gzip_compressed_request_body_is_read(fresh: Served) -> None:
    """A client that compresses its request (Content-Encoding: gzip) got 400 "not valid JSON"; the body is
    decoded (bounded by the body limit) and goes upstream decoded, without the header."""
    import gzip
    import zlib

    plain = json.dumps({"model": "in-chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for encoding, body in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        fresh.fake.posts.clear()
        response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read, content=body,
                                               headers={"content-type": "application/json",
                                                        "content-encoding": encoding})
        assert response.status_code == 200, response.text
        [(_path, headers, sent)] = fresh.fake.posts
        assert json.loads(sent) == {**json.loads(plain), "model": "fake-chat"} and "content-encoding" not in headers
    fresh.fake.posts.clear()
    bomb = gzip.compress(b'{"model": "in-chat", "pad": "' + b"x" * 100_000 + b'"}')  # 4096 bytes allowed here
    error_of(await fresh.harness.request("POST", "/v1/chat/completions", fresh.read, content=bomb,
                                         headers={"content-encoding": "gzip"}), 413, "body_too_large")
    error_of(await fresh.harness.request("POST", "/v1/chat/completions", fresh.read, content=plain,
                                         headers={"content-encoding": "br"}), 415, "unsupported_content_encoding")
    error_of(await fresh.harness.request("POST", "/v1/chat/completions", fresh.read, content=b"\x1f\x8bnot gzip",
                                         headers={"content-encoding": "gzip"}), 400, "invalid_body")
    assert fresh.fake.posts == []


async def test_a_limited_keys_rate_limit_headers_are_not_doubled_by_the_upstreams(fresh: Served) -> None:
    """The upstream's `x-ratelimit-remaining-requests` (for modeldex's own key) went out beside the key's:
    two headers of one name, which httpx reads as "99, 9"."""
    key = fresh.harness.key(f"limited-{next(_KEY_NUMBERS)}", rate_limit="50/m")
    response = await fresh.harness.request("POST", "/v1/chat/completions", key,
                                           json={"model": "in-chat", "messages": []})
    assert response.status_code == 200, response.text
    assert response.headers.get_list("x-ratelimit-remaining-requests") == ["49"]
    assert response.headers["openai-processing-ms"] == "7"  # the upstream's other headers still come back
    unlimited = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                            json={"model": "in-chat", "messages": []})
    assert unlimited.headers.get_list("x-ratelimit-remaining-requests") == ["99"]


async def test_a_large_answer_streamed_on_keeps_its_length(fresh: Served) -> None:
    """An answer past what is read whole (8 MiB) streams on; it keeps the upstream's Content-Length, so an
    upstream breaking off midway closes the client's connection short of it (which clients raise), where a
    chunked answer could only end as if complete (tests/test_gateway.py shows that over a real server)."""
    fresh.fake.chat_mode = "huge"
    response = await fresh.harness.request("POST", "/v1/chat/completions", fresh.read,
                                           json={"model": "in-chat", "messages": []})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content)) and len(response.content) > 10 << 20
