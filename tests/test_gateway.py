"""The inference gateway, end to end: a real server forwarding to real upstreams (the hostile fake of
tests/fake_upstream.py, two of them for failover), called with the official `openai` and `anthropic` SDKs.

One server for the module (timeouts shortened so that stalls show in a second); each test sets what the
upstreams do and reads what they received.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from .conftest import LazyModule, Server, create_key, run_cli, wait_until
from .fake_upstream import FakeUpstream

if TYPE_CHECKING:
    import anthropic
else:
    anthropic = LazyModule("anthropic")  # imported by the tests that use it, not at collection

UPSTREAM_KEY = "sk-upstream-secret-4f9d2c7a1b"
SECOND_KEY = "sk-second-secret-8e1f3a5b7c"


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.db_url = f"sqlite:///{tmp}/catalog.db"
        self.first = FakeUpstream()
        self.second = FakeUpstream()
        self.lab = FakeUpstream([{"id": "lab-model", "object": "model", "owned_by": "lab"}])
        self.admin = create_key(self.db_url, "admin", "admin")
        self.reader = create_key(self.db_url, "reader", "read")
        cli = self.cli
        cli("upstreams", "add", "first", "--base-url", self.first.base_url, "--api-key-env", "FIRST_UPSTREAM_KEY",
            "--routing-only", "--protocol", "openai", "--protocol",
            f"anthropic=http://127.0.0.1:{self.first.port}/anthropic/v1")
        cli("upstreams", "add", "second", "--base-url", self.second.base_url, "--api-key-env", "SECOND_UPSTREAM_KEY",
            "--routing-only")
        cli("upstreams", "add", "keyless", "--base-url", self.second.base_url, "--api-key-env", "UNSET_UPSTREAM_KEY",
            "--routing-only")
        cli("upstreams", "add", "lab", "--base-url", self.lab.base_url, "--prefix", "lab/")  # polled, no key
        cli("upstreams", "sync-now", "lab")
        cli("models", "add", "chat-model")
        cli("routes", "add", "chat-model", "first", "--upstream-model", "upstream-chat-v1")
        cli("aliases", "add", "chat-latest", "chat-model")
        cli("models", "add", "two-routes")
        cli("routes", "add", "two-routes", "first", "--upstream-model", "on-first", "--weight", "1000")
        cli("routes", "add", "two-routes", "second", "--upstream-model", "on-second")
        cli("upstreams", "add", "by-name", "--base-url", f"http://localhost:{self.first.port}/v1", "--routing-only")
        cli("models", "add", "by-name-model")
        cli("routes", "add", "by-name-model", "by-name")
        cli("models", "add", "openai-only")
        cli("routes", "add", "openai-only", "second")
        cli("models", "add", "no-route")
        cli("models", "add", "needs-key")
        cli("routes", "add", "needs-key", "keyless")
        cli("models", "add", "secret-model")
        cli("routes", "add", "secret-model", "first")
        cli("routes", "add", "MiniMax-M2", "first")  # the seeded model, routed here (the built-in route replaced)
        self.limited = create_key(self.db_url, "limited", "read")
        cli("keys", "update", "limited", "--rate-limit", "2/m")
        self.narrow = create_key(self.db_url, "narrow", "read")
        cli("keys", "update", "narrow", "--pattern", "chat-*")

    def cli(self, *args: str) -> str:
        return run_cli(self.db_url, *args).stdout

    def reset(self) -> None:
        for fake in (self.first, self.second, self.lab):
            fake.chat_mode, fake.drip, fake.events, fake.retry_after = "ok", 0.0, 5, "1"
            fake.posts.clear()
            fake.disconnects = 0
            fake.disconnected.clear()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    setup = Setup(tmp_path_factory.mktemp("gateway"))
    yield setup
    setup.first.close()
    setup.second.close()
    setup.lab.close()


@pytest.fixture(scope="module")
def server(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FIRST_UPSTREAM_KEY", UPSTREAM_KEY)
    mp.setenv("SECOND_UPSTREAM_KEY", SECOND_KEY)
    mp.delenv("UNSET_UPSTREAM_KEY", raising=False)
    mp.delenv("MINIMAX_API_KEY", raising=False)
    server = Server(setup.db_url, tmp_path_factory.mktemp("gateway-log") / "server.log",
                    "--upstream-first-byte-timeout", "1.5", "--upstream-idle-timeout", "1")
    mp.undo()
    yield server
    server.stop()


@pytest.fixture
def gw(setup: Setup, server: Server) -> Iterator[tuple[Setup, Server]]:
    setup.reset()
    yield setup, server


def test_chat_completion_goes_to_the_routed_upstream_with_its_key(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    raw = client.chat.completions.with_raw_response.create(
        model="chat-latest", messages=[{"role": "user", "content": "hi"}], temperature=0.5)
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from fake"
    assert completion.model == "upstream-chat-v1"  # the upstream was asked for its own id (alias resolved)
    [(path, headers, body)] = setup.first.posts
    assert path == "/v1/chat/completions"
    sent = json.loads(body)
    assert sent == {"model": "upstream-chat-v1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
    # The caller's modeldex key never goes upstream; the upstream's own key does.
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert setup.reader not in json.dumps(headers)
    assert "set-cookie" not in raw.headers  # the upstream's cookie stays between it and modeldex...
    for _ in range(2):  # ...and never goes back to it (with another caller's request): an upstream by host name
        client.chat.completions.create(model="by-name-model", messages=[{"role": "user", "content": "again"}])
    assert "cookie" not in {name.lower() for name in setup.first.posts[-1][1]}, setup.first.posts[-1][1]
    assert headers["x-request-id"] == raw.headers["x-request-id"]
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    assert raw.headers["openai-processing-ms"] == "7"
    assert "x-internal-secret" not in raw.headers
    assert float(raw.headers["x-modeldex-overhead-duration-ms"]) >= 0


def test_streamed_chat_arrives_event_by_event(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    setup.first.events = 6
    client = server.client(setup.reader)
    with client.chat.completions.with_streaming_response.create(
            model="chat-model", messages=[{"role": "user", "content": "hi"}], stream=True) as response:
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "t0 t1 t2 t3 t4 t5 "
    sent = json.loads(setup.first.posts[0][2])
    # modeldex asks for the usage event to count tokens, and drops it: the client did not ask for it.
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [c for c in chunks if not c.choices] == []
    # The access log is written in batches (every 20 ms, by a thread): wait for this request's line.
    logged = wait_until(lambda: f"{response.headers['x-request-id']} POST /v1/chat/completions 200" in server.log(), 10)
    assert logged is not None
    line = next(e for e in server.log().splitlines() if response.headers["x-request-id"] in e)
    assert "prompt_tokens=3 completion_tokens=6" in line
    # A client that asks for it gets it.
    chunks = list(client.chat.completions.create(model="chat-model", messages=[], stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_stream_events_are_not_buffered(gw: tuple[Setup, Server]) -> None:
    """With 0.3 s between the upstream's events, the client has each one before the next is sent."""
    setup, server = gw
    setup.first.events, setup.first.drip = 4, 0.3
    client = server.client(setup.reader)
    seen: list[tuple[str, int]] = []
    stream = client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}],
                                            stream=True)
    for chunk in stream:
        # How many events the upstream had sent when this one arrived: exactly up to this one.
        seen.append((chunk.choices[0].delta.content or "", len(setup.first.posts)))
        if len(seen) == 1:
            first_at = time.monotonic()
    assert [content for content, _ in seen] == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert time.monotonic() - first_at >= 0.8  # the later events came as sent, not all at the end


def test_embeddings_and_audio_upload(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    embedding = client.embeddings.create(model="chat-model", input="hello")
    assert embedding.data[0].embedding == [0.1, 0.2, 0.3]
    audio = b"RIFF0000WAVE" + bytes(range(256)) * 1200  # 300 KB: read in chunks, not in one call (downstream.py)
    transcript = client.audio.transcriptions.create(model="chat-model", file=("a.wav", io.BytesIO(audio)))
    assert transcript.text == "transcribed by ?"  # the fake cannot read multipart; what it got is below
    paths = [p for p, _, _ in setup.first.posts]
    assert paths == ["/v1/embeddings", "/v1/audio/transcriptions"]
    upload = setup.first.posts[1][2]
    assert b'name="model"\r\n\r\nupstream-chat-v1\r\n' in upload and b"RIFF0000WAVE" in upload and audio in upload
    assert b"chat-model" not in upload
    # A second model field is refused, not forwarded: an upstream's form parser may read the other one (the
    # one the key's policy was not checked against).
    for second in ("model", "Model"):
        response = server.http.post(server.base_url + "/v1/audio/transcriptions",
                                    headers={"Authorization": f"Bearer {setup.reader}"},
                                    files=[("model", (None, b"chat-model")), (second, (None, b"other-model")),
                                           ("file", ("a.wav", b"RIFF0000WAVE"))])
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == "The model field appears more than once; send it once."
    assert len(setup.first.posts) == 2


def test_a_discovered_model_goes_to_the_upstream_that_listed_it(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    assert client.chat.completions.create(model="lab/lab-model", messages=[]).model == "lab-model"
    [(path, headers, body)] = setup.lab.posts
    assert path == "/v1/chat/completions" and json.loads(body)["model"] == "lab-model"  # the prefix removed
    assert "authorization" not in headers  # the upstream has no key; the caller's never goes
    rows = [row.split() for row in setup.cli("routes", "list").splitlines()]
    assert rows[0] == ["MODEL", "UPSTREAM", "UPSTREAM", "MODEL", "WEIGHT"]
    assert ["lab/lab-model", "lab", "lab-model", "discovered"] in rows
    assert ["two-routes", "first", "on-first", "1000"] in rows


def test_routes_through_the_admin_api(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    remote = ("--url", server.base_url, "--api-key", setup.admin)
    run_cli(setup.db_url, "models", "add", "via-admin", *remote)
    run_cli(setup.db_url, "routes", "add", "via-admin", "second", "--upstream-model", "admin-routed", *remote)
    assert server.client(setup.reader).chat.completions.create(model="via-admin", messages=[]).model == "admin-routed"
    listed = server.get("/v1/admin/routes", setup.admin).json()["data"]
    assert {"model": "via-admin", "upstream": "second", "upstream_model": "admin-routed", "weight": 1} in listed
    refused = server.http.post(server.base_url + "/v1/admin/routes", headers={"Authorization": f"Bearer {setup.admin}"},
                               json={"model": "via-admin", "upstream": "nowhere"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "upstream"
    run_cli(setup.db_url, "routes", "remove", "via-admin", "second", *remote)
    with pytest.raises(openai.InternalServerError) as caught:
        server.client(setup.reader).chat.completions.create(model="via-admin", messages=[])
    assert caught.value.code == "no_route"
    removed = server.http.delete(server.base_url + "/v1/admin/upstreams/first",
                                 headers={"Authorization": f"Bearer {setup.admin}"})
    assert removed.status_code == 409 and "remove those routes first" in removed.json()["error"]["message"]


def test_responses_and_a_10_mb_answer(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    raw = client.responses.with_raw_response.create(model="chat-model", input="hi")
    assert raw.http_response.json()["model"] == "upstream-chat-v1"
    assert setup.first.posts[0][0] == "/v1/responses"
    setup.first.chat_mode = "huge"
    response = server.http.post(server.base_url + "/v1/chat/completions", json={"model": "chat-model", "messages": []},
                                headers={"Authorization": f"Bearer {setup.reader}"}, timeout=30)
    assert response.status_code == 200 and len(response.json()["padding"]) == 10 * 1024 * 1024


def test_a_large_answer_cut_short_is_not_answered_as_complete(gw: tuple[Setup, Server]) -> None:
    """Past 8 MiB an answer streams on; it went out chunked, so an upstream that broke off after 1 of its
    10 MB ended the client's answer cleanly: a 200 with a truncated body (an embeddings list, an audio
    file). With the upstream's length kept, the client sees its connection close short of it."""
    setup, server = gw
    setup.first.chat_mode = "huge-cut"
    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|without sending complete"):
        server.http.post(server.base_url + "/v1/chat/completions", json={"model": "chat-model", "messages": []},
                         headers={"Authorization": f"Bearer {setup.reader}"}, timeout=30)


def test_a_key_that_cannot_see_a_model_cannot_call_it(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    narrow = server.client(setup.narrow)
    with pytest.raises(openai.NotFoundError) as caught:
        narrow.chat.completions.create(model="secret-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    retrieve = server.get("/v1/models/secret-model", setup.narrow)
    assert retrieve.status_code == 404 and caught.value.response.json() == retrieve.json()
    with pytest.raises(openai.NotFoundError):
        narrow.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert setup.first.posts == []  # no upstream was contacted
    assert server.client(setup.reader).chat.completions.create(
        model="secret-model", messages=[{"role": "user", "content": "x"}]).model == "secret-model"


def test_credentials_are_checked_as_on_the_models_routes(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    with pytest.raises(openai.AuthenticationError):
        server.client("sk-wrong").chat.completions.create(model="chat-model", messages=[])
    limited = server.client(setup.limited)
    for _ in range(2):
        limited.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as caught:
        limited.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "rate_limit_exceeded" and "limited" in caught.value.message
    assert len(setup.first.posts) == 2


def test_a_model_without_a_usable_route_is_a_503_naming_what_is_missing(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="no-route", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503 and caught.value.code == "no_route"
    assert "modeldex routes add no-route UPSTREAM" in caught.value.message
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="needs-key", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503 and caught.value.code == "upstream_key_missing"
    assert "set UNSET_UPSTREAM_KEY" in caught.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="", messages=[])
    assert bad.value.code == "missing_model"


def test_the_builtin_minimax_upstream_is_inert_until_its_key_is_set(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="MiniMax-M3", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503 and caught.value.code == "upstream_key_missing"
    assert "upstream `minimax` needs its API key: set MINIMAX_API_KEY" in caught.value.message
    # A seeded model given a route of its own elsewhere is served there meanwhile.
    assert client.chat.completions.create(model="MiniMax-M2", messages=[{"role": "user", "content": "x"}]).model == \
        "MiniMax-M2"
    # The same over Anthropic's protocol, which the built-in upstream speaks too.
    claude = anthropic.Anthropic(api_key=setup.reader, base_url=server.base_url, max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as refused:
        claude.messages.create(model="MiniMax-M3", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "set MINIMAX_API_KEY" in refused.value.message


def test_upstream_errors_come_back_with_the_sdk_error_classes(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    messages = [{"role": "user", "content": "x"}]
    setup.first.chat_mode, setup.first.retry_after = "429", "7"
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    setup.first.chat_mode = "5xx"
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert failed.value.status_code == 502
    setup.first.chat_mode = "huge-error"
    with pytest.raises(openai.InternalServerError) as huge:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert huge.value.status_code == 502 and huge.value.code == "upstream_error"
    # Error pages that are not JSON come back in the envelope, with the upstream's status and retry-after,
    # never its text (a traceback, a proxy's HTML); a 200 that is not the JSON it claims is a 502.
    setup.first.chat_mode = "chunked"  # a completion without a declared length is passed on whole
    assert client.chat.completions.create(model="chat-model", messages=messages).model == "upstream-chat-v1"
    for mode, status in (("html-error", 503), ("traceback-500", 500), ("not-json", 502), ("chunked-cut", 502)):
        setup.first.chat_mode = mode
        with pytest.raises(openai.InternalServerError) as wrapped:
            client.chat.completions.create(model="chat-model", messages=messages)
        assert (wrapped.value.status_code, wrapped.value.code) == (status, "upstream_error"), mode
        assert wrapped.value.response.headers["content-type"] == "application/json", mode
        assert "Traceback" not in wrapped.value.response.text and "<html>" not in wrapped.value.response.text
        assert set(wrapped.value.response.json()["error"]) == {"message", "type", "param", "code"}
        if mode == "html-error":
            assert wrapped.value.response.headers["retry-after"] == "3"
    setup.first.chat_mode = "stall"
    with pytest.raises(openai.InternalServerError) as stalled:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert stalled.value.status_code == 504 and stalled.value.code == "upstream_timeout"
    assert setup.first.disconnected.wait(2)  # the stalled upstream request was given up, its connection closed


def test_no_upstream_key_reaches_the_client(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    messages = [{"role": "user", "content": "x"}]
    setup.first.chat_mode = "echo-key"
    with pytest.raises(openai.BadRequestError) as echoed:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert UPSTREAM_KEY not in echoed.value.response.text and "[redacted]" in echoed.value.message
    setup.first.chat_mode = "unauthorized"
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="chat-model", messages=messages)
    assert refused.value.status_code == 502 and refused.value.code == "upstream_auth_failed"
    assert UPSTREAM_KEY not in refused.value.response.text
    # The access log is written in batches: wait for both requests' lines (a fixed 0.5 s may not be enough on a
    # loaded machine, and then the log was checked before they were in it).
    request_ids = [echoed.value.response.headers["x-request-id"], refused.value.response.headers["x-request-id"]]
    assert wait_until(lambda: all(request_id in server.log() for request_id in request_ids), 10) is not None
    assert UPSTREAM_KEY not in server.log() and SECOND_KEY not in server.log()


def test_failover_to_the_second_route(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    messages = [{"role": "user", "content": "x"}]
    setup.first.chat_mode = "5xx"
    answered = {client.chat.completions.create(model="two-routes", messages=messages).model for _ in range(6)}
    assert answered == {"on-second"}  # every request answered, by the healthy one
    assert len(setup.first.posts) >= 1  # the failing one was tried, then rested
    assert len(setup.first.posts) < 6
    assert all(headers["authorization"] == f"Bearer {SECOND_KEY}" for _, headers, _ in setup.second.posts)
    # The outcomes show in the upstream's health, beside what polling reports.
    inference = server.get("/v1/admin/upstreams/first", setup.admin).json()["health"]["inference"]
    assert inference["failures"] >= 1 and inference["last_error"] == "HTTP 502" and inference["healthy"] is False
    listed = {u["name"]: u for u in server.get("/v1/admin/upstreams", setup.admin).json()["data"]}
    second = listed["second"]["health"]["inference"]
    assert (second["failures"], second["healthy"], second["last_error"]) == (0, True, None), second
    assert second["successes"] >= 6 and time.time() - second["last_success_at"] < 60, second
    assert listed["keyless"]["health"]["inference"] == {  # never called (its key is not set): all idle
        "healthy": True, "failures": 0, "last_error": None, "last_error_at": None, "last_success_at": None,
        "successes": 0, "errors": 0, "workers": 0}
    setup.first.chat_mode, setup.second.chat_mode = "ok", "429"
    answered = {client.chat.completions.create(model="two-routes", messages=messages).model for _ in range(4)}
    assert answered == {"on-first"}


def test_a_stream_cut_short_ends_with_an_error_event(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = server.client(setup.reader)
    for mode in ("close-mid-stream", "stall-mid-stream"):
        setup.first.chat_mode = mode
        received = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}],
                                                        stream=True):
                received.append(chunk.choices[0].delta.content)
        assert received == ["t0 ", "t1 "], mode
        assert "upstream" in str(caught.value.message), mode
    # The answer ends with its error event: it once stayed open until a garbage collection freed granian's
    # stream (5-35 s), so a client reading to the end (curl, a plain SSE reader) hung.
    setup.first.chat_mode = "close-between-events"
    started = time.monotonic()
    with httpx.Client(timeout=30) as http, http.stream(
            "POST", server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {setup.reader}"},
            json={"model": "chat-model", "messages": [], "stream": True}) as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1].startswith('data: {"error":') and len(events) == 3
    assert time.monotonic() - started < 3
    assert setup.first.disconnected.wait(2)  # the stalled upstream's connection was closed, not pooled


def test_client_going_away_cancels_the_upstream_request(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    setup.first.events, setup.first.drip = 50, 0.2
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {setup.reader}"},
            json={"model": "chat-model", "messages": [], "stream": True}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    assert setup.first.disconnected.wait(2), "the upstream did not see its connection close"
    # Before the first token too: the client gives up while the upstream has not answered at all.
    setup.reset()
    setup.first.chat_mode = "stall"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {setup.reader}"},
                   json={"model": "chat-model", "messages": []}, timeout=0.3)
    assert setup.first.disconnected.wait(1), "the upstream did not see its connection close"


def test_anthropic_messages_go_to_the_upstreams_anthropic_url(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = anthropic.Anthropic(api_key=setup.reader, base_url=server.base_url, max_retries=0)
    message = client.messages.create(model="chat-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "hello from fake"
    [(path, headers, body)] = setup.first.posts
    assert path == "/anthropic/v1/messages"
    assert headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in headers
    assert json.loads(body)["model"] == "upstream-chat-v1"
    with pytest.raises(anthropic.InternalServerError) as caught:  # `second` speaks OpenAI's API only
        client.messages.create(model="openai-only", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and "does not speak the anthropic API" in caught.value.message
    assert caught.value.error_code == "protocol_not_served"  # Anthropic's envelope: error.details.error_code
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "api_error"


def test_anthropic_routes_answer_errors_in_anthropics_envelope(gw: tuple[Setup, Server]) -> None:
    """Before a stream starts, modeldex's own errors on /v1/messages and /v1/messages/count_tokens are
    `{"type": "error", "error": {"type", "message"}}`, as Anthropic's clients parse them."""
    setup, server = gw

    def client(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0)

    def create(key: str, model: str = "chat-model") -> object:
        return client(key).messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}])

    def check(error: anthropic.APIStatusError, status: int, kind: str, code: str) -> None:
        assert error.status_code == status, error
        assert error.body["type"] == "error", error.body  # type: ignore[index]
        assert error.type == kind and error.error_code == code, error.body
        assert error.api_message and error.api_message == error.body["error"]["message"]  # type: ignore[index]
        assert error.body["request_id"] == error.response.headers["x-request-id"]  # type: ignore[index]
        assert "param" not in error.body["error"]  # type: ignore[index]  # not OpenAI's envelope

    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        create("mdx_wrong_" + "x" * 40)
    check(unauthenticated.value, 401, "authentication_error", "invalid_api_key")
    with pytest.raises(anthropic.NotFoundError) as hidden:  # `narrow` sees chat-* only
        create(setup.narrow, "secret-model")
    check(hidden.value, 404, "not_found_error", "model_not_found")
    assert not setup.first.posts  # refused before any upstream was contacted
    with pytest.raises(anthropic.NotFoundError) as counted:
        client(setup.narrow).messages.count_tokens(model="secret-model", messages=[{"role": "user", "content": "hi"}])
    check(counted.value, 404, "not_found_error", "model_not_found")
    with pytest.raises(anthropic.InternalServerError) as unrouted:
        create(setup.reader, "no-route")
    check(unrouted.value, 503, "api_error", "no_route")
    setup.first.chat_mode = "unauthorized"  # the upstream refuses modeldex's key: modeldex's own 502
    with pytest.raises(anthropic.InternalServerError) as refused:
        create(setup.reader)
    check(refused.value, 502, "api_error", "upstream_auth_failed")
    assert UPSTREAM_KEY not in json.dumps(refused.value.body)
    setup.first.chat_mode = "stall"
    with pytest.raises(anthropic.InternalServerError) as stalled:
        create(setup.reader)
    check(stalled.value, 504, "timeout_error", "upstream_timeout")
    setup.first.chat_mode = "ok"
    with pytest.raises(anthropic.RateLimitError) as limited:  # `limited` may make 2 requests a minute
        for _ in range(3):
            create(setup.limited)
    check(limited.value, 429, "rate_limit_error", "rate_limit_exceeded")
    with pytest.raises(anthropic.RateLimitError) as limited_count:
        client(setup.limited).messages.count_tokens(model="chat-model", messages=[{"role": "user", "content": "hi"}])
    check(limited_count.value, 429, "rate_limit_error", "rate_limit_exceeded")
    # The OpenAI routes keep OpenAI's envelope.
    with pytest.raises(openai.NotFoundError) as openai_hidden:
        server.client(setup.narrow).chat.completions.create(model="secret-model", messages=[])
    assert openai_hidden.value.code == "model_not_found" and openai_hidden.value.param == "model"


def test_anthropic_streams_and_their_error_event(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    client = anthropic.Anthropic(api_key=setup.reader, base_url=server.base_url, max_retries=0)
    with client.messages.stream(model="chat-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "t0 t1 t2 t3 t4 "
    setup.first.chat_mode = "stall-mid-stream"  # silent past the idle timeout after two deltas
    received = []
    with pytest.raises(anthropic.APIError) as caught, client.messages.stream(
            model="chat-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        received.extend(stream.text_stream)
    assert received == ["t0 ", "t1 "] and "idle timeout" in str(caught.value)


def test_access_log_and_metrics_name_model_and_upstream(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    server.client(setup.reader).chat.completions.create(model="chat-latest", messages=[{"role": "user", "content": "x"}])
    line = wait_until(lambda: "model=chat-latest upstream=first" in server.log(), 10)  # written in batches
    assert line is not None, server.log()[-2000:]
    logged = next(entry for entry in server.log().splitlines() if "model=chat-latest upstream=first" in entry)
    assert "key=reader" in logged and "upstream_model=upstream-chat-v1" in logged and "ttfb_ms=" in logged
    assert "prompt_tokens=5 completion_tokens=3" in logged
    scrape = server.get("/metrics", setup.admin).text
    counted = [line for line in scrape.splitlines() if line.startswith("modeldex_gateway_requests_total{")
               and all(label in line for label in ('model="chat-latest"', 'upstream="first"', 'status="200"',
                                                   'route="inference:chat/completions"'))]
    assert len(counted) == 1 and float(counted[0].rsplit(" ", 1)[1]) >= 1
    assert "modeldex_gateway_first_byte_seconds" in scrape


def test_other_methods_and_paths(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    response = server.get("/v1/chat/completions", setup.reader)  # OpenAI's lists stored completions: not ours
    assert response.status_code == 404 and response.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"
    response = server.http.post(server.base_url + "/v1/no/such/route", headers={"Authorization": f"Bearer {setup.reader}"})
    assert response.status_code == 404 and response.json()["error"]["message"] == "Invalid URL (POST /v1/no/such/route)"
    logged = wait_until(lambda: f"{response.headers['x-request-id']} POST /v1/no/such/route 404" in server.log(), 10)
    assert logged is not None
    line = next(e for e in server.log().splitlines() if response.headers["x-request-id"] in e)
    assert "key=reader" in line  # the access log names the caller


def test_concurrent_streams_do_not_mix(gw: tuple[Setup, Server]) -> None:
    setup, server = gw
    setup.first.events, setup.first.drip = 5, 0.05
    client = server.client(setup.reader)
    results: list[str] = []

    def run() -> None:
        stream = client.chat.completions.create(model="chat-model", messages=[], stream=True)
        results.append("".join(c.choices[0].delta.content or "" for c in stream))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["t0 t1 t2 t3 t4 "] * 8
