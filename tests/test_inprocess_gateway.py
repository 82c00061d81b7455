"""The gateway in-process, over ASGI (the same dispatch as granian's RSGI path, with the ASGI downstream):
forwarding and streaming to the hostile fake upstream, CORS on inference answers, and the edges of what
a request may be. tests/test_gateway.py has the same contract against a real server."""

from __future__ import annotations

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
