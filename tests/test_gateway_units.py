"""The gateway's parts on their own: reading the model from a body and rewriting it, the routing table,
the order routes are tried in, cutting a stream at event boundaries, and routes in catalog files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import pytest

from modeldex.catalog.entities import Alias, Model, new_model, parse
from modeldex.catalog.errors import CatalogError, InvalidInput
from modeldex.catalog.service import Catalog
from modeldex.catalog.upstreams import Upstream
from modeldex.gateway.client import KEEPALIVE_S, Timeouts, UpstreamClient
from modeldex.gateway.errors import redact, stream_error_event
from modeldex.gateway.forward import Outcome, _take_usage, _whole_events
from modeldex.gateway.health import RouteHealth
from modeldex.gateway.request import (
    BadRequest,
    DecodedTooLarge,
    UnsupportedEncoding,
    decoded_body,
    parse_json,
    parse_multipart,
    passed_back,
    upstream_headers,
)
from modeldex.gateway.routing import NoRoute, RoutingTable, Target, attempt_order
from modeldex.store import open_store


def multipart(fields: list[tuple[str, bytes, str | None]], boundary: str = "b0undary") -> tuple[bytes, str]:
    parts = []
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_the_model_of_a_multipart_upload_is_found_and_rewritten_in_place() -> None:
    body, content_type = multipart([("file", b'name="model"\r\n\r\nnot-this', "a.wav"), ("model", b"whisper-x", None),
                                    ("language", b"en", None)])
    parsed = parse_multipart(body, content_type)
    assert parsed.model == "whisper-x"
    rewritten = parsed.with_model("upstream-whisper")
    assert rewritten == body.replace(b"\r\n\r\nwhisper-x\r\n", b"\r\n\r\nupstream-whisper\r\n")
    assert parsed.with_model("whisper-x") is body
    without, content_type = multipart([("file", b"x", "a.wav")])
    with pytest.raises(BadRequest):
        parse_multipart(without, content_type)
    with pytest.raises(BadRequest):
        parse_multipart(body, "application/json")


@pytest.mark.parametrize("second", ['name="model"', 'name="Model"', "name=model", 'name="model"; filename="m.txt"'])
def test_a_multipart_upload_naming_model_twice_is_refused(second: str) -> None:
    """Form parsers differ on which of two `model` fields they keep (Starlette's the last): forwarding such a
    body would let the upstream serve a model other than the one the key's policy was checked against."""
    body, content_type = multipart([("model", b"allowed", None), ("file", b"RIFF", "a.wav")])
    body = body.replace(b"--b0undary--", f"--b0undary\r\nContent-Disposition: form-data; {second}\r\n\r\n"
                        "hidden\r\n--b0undary--".encode())
    with pytest.raises(BadRequest, match="more than once"):
        parse_multipart(body, content_type)


@pytest.mark.parametrize("body", [b"{nope", b"[1]", b'{"model": 3}', b'{"model": ""}', b"{}"])
def test_a_json_body_without_a_model_string_is_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(body)


def test_a_json_body_keeps_everything_but_the_model() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}], "model": "alias", "n": 2, "stream": true}'
    parsed = parse_json(body)
    assert parsed.stream and parsed.with_model("alias") is body
    assert json.loads(parsed.with_model("real")) == {**json.loads(body), "model": "real"}
    with_usage = json.loads(parsed.with_model("real", add_usage=True))
    assert with_usage["stream_options"] == {"include_usage": True} and with_usage["model"] == "real"


def test_headers_going_upstream_and_coming_back() -> None:
    sent = upstream_headers([("authorization", "Bearer sk-caller"), ("x-api-key", "sk-caller"),
                             ("connection", "keep-alive, X-Hop"), ("x-hop", "1"),
                             ("content-type", "application/json"), ("anthropic-version", "2023-06-01"),
                             ("x-request-id", "client-made")], "req_1", "anthropic", "sk-upstream")
    assert sent == {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-request-id": "req_1",
                    "x-api-key": "sk-upstream"}
    back = passed_back({"X-RateLimit-Remaining-Requests": "9", "Retry-After": "2", "Set-Cookie": "a=b",
                        "openai-processing-ms": "5", "server": "uvicorn", "X-Should-Retry": "false"})
    assert back == [("x-ratelimit-remaining-requests", "9"), ("retry-after", "2"), ("openai-processing-ms", "5"),
                    ("x-should-retry", "false")]
    assert redact(b'{"error": "bad key sk-upstream-123"}', "sk-upstream-123") == b'{"error": "bad key [redacted]"}'


def upstream(name: str, **fields: object) -> Upstream:
    return parse(Upstream, {"name": name, "base_url": f"http://{name}:8000/v1", **fields})


def test_the_routing_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A_KEY", "sk-a\n")  # as a Kubernetes secret made from a file has it: sent without the newline
    monkeypatch.delenv("MISSING_KEY", raising=False)
    monkeypatch.setenv("ODD_KEY", "sk-two words")
    upstreams = {u.name: u for u in (
        upstream("a", api_key_env="A_KEY", protocols=["openai", "anthropic=http://a:8000/anthropic/v1"]),
        upstream("lab", prefix="lab/"), upstream("locked", api_key_env="MISSING_KEY"),
        upstream("odd", api_key_env="ODD_KEY"))}
    models = {m.id: m for m in (
        new_model("routed", routes=[{"upstream": "a", "model": "a-id", "weight": 3}, {"upstream": "locked"}]),
        Model.model_validate({"id": "lab/m1", "source": "lab"}), new_model("plain"), new_model("seeded"),
        new_model("only-locked", routes=[{"upstream": "locked"}]), new_model("odd-one", routes=[{"upstream": "odd"}]))}
    builtin = {"builtin": upstream("builtin")}
    table = RoutingTable(models, {"nick": Alias(id="nick", target="routed")}, upstreams, builtin, {"seeded": "builtin"})
    assert table.targets("nick", "openai") == [Target("a", "http://a:8000/v1", "a-id", 3, "sk-a")]
    assert table.targets("routed", "anthropic") == [Target("a", "http://a:8000/anthropic/v1", "a-id", 3, "sk-a")]
    assert table.targets("lab/m1", "openai") == [Target("lab", "http://lab:8000/v1", "m1", 1, None)]
    assert table.targets("seeded", "openai") == [Target("builtin", "http://builtin:8000/v1", "seeded", 1, None)]
    for model_id, protocol, code, words in (("plain", "openai", "no_route", "routes add plain"),
                                            ("only-locked", "openai", "upstream_key_missing", "set MISSING_KEY"),
                                            ("odd-one", "openai", "upstream_key_invalid", "ODD_KEY holds an API key with"),
                                            ("lab/m1", "anthropic", "protocol_not_served", "--protocol anthropic")):
        with pytest.raises(NoRoute) as caught:
            table.targets(model_id, protocol)
        assert caught.value.code == code and words in caught.value.message
        assert "two words" not in caught.value.message  # the key is never quoted
    # An upstream stored under a built-in's name replaces it.
    replaced = RoutingTable(models, {}, {**upstreams, "builtin": upstream("builtin", base_url="http://mine/v1")},
                            builtin, {"seeded": "builtin"})
    assert replaced.targets("seeded", "openai")[0].base_url == "http://mine/v1"


def test_routes_are_tried_by_weight_healthy_first() -> None:
    targets = [Target("heavy", "u", "m", 9, None), Target("light", "u", "m", 1, None), Target("down", "u", "m", 100, None)]
    health = RouteHealth()
    health.failed("down", "HTTP 503", retry_after=60)
    chooser = random.Random(7)
    firsts = [attempt_order(targets, health, chooser)[0].upstream for _ in range(2000)]
    assert 0.85 < firsts.count("heavy") / 2000 < 0.95 and "down" not in firsts
    assert attempt_order(targets, health, chooser)[-1].upstream == "down"  # resting: tried last, not never
    health.succeeded("down")
    assert health.healthy("down")


def test_streams_are_cut_at_event_boundaries_and_usage_taken() -> None:
    assert _whole_events(b"data: 1\n\ndata: 2\n\ndata: 3") == (b"data: 1\n\ndata: 2\n\n", b"data: 3")
    assert _whole_events(b"data: 1\r\n\r\ndata: {") == (b"data: 1\r\n\r\n", b"data: {")
    assert _whole_events(b"data: partial") == (b"", b"data: partial")
    events = (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    outcome = Outcome()
    assert _take_usage(events, outcome, drop=True) == (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
                                                      b"data: [DONE]\n\n")
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (4, 2)
    assert _take_usage(events, Outcome(), drop=False) is events
    assert stream_error_event("anthropic", "gone", "upstream_error").startswith(b"event: error\ndata: ")
    # Anthropic's stream error carries the type and code its error answers do (a timeout is timeout_error).
    for code, kind in (("upstream_timeout", "timeout_error"), ("upstream_error", "api_error")):
        event = json.loads(stream_error_event("anthropic", "gone", code).split(b"data: ", 1)[1])
        assert event == {"type": "error", "error": {"type": kind, "message": "gone", "details": {"error_code": code}}}
    assert json.loads(stream_error_event("openai", "gone", "upstream_error")[6:])["error"]["code"] == "upstream_error"


def test_usage_is_taken_from_responses_and_anthropic_streams() -> None:
    """The Responses API's stream has its usage in `response.completed`'s `response`, Anthropic's the input
    count in `message_start`'s `message` (and the output in `message_delta`): the access log and the token
    metrics had no prompt tokens for either (nor completion tokens for Responses)."""
    responses = (b'event: response.created\ndata: {"type":"response.created","response":{"usage":null}}\n\n'
                 b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1",'
                 b'"usage":{"input_tokens":7,"output_tokens":4,"total_tokens":11}}}\n\n')
    outcome = Outcome()
    assert _take_usage(responses, outcome, drop=False) is responses
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (7, 4)
    anthropic = (b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1", "usage": '
                 b'{"input_tokens": 12, "output_tokens": 1}}}\n\n')
    delta = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    outcome = Outcome()
    _take_usage(anthropic, outcome, drop=False)
    _take_usage(delta, outcome, drop=False)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (12, 9)


def test_a_compressed_request_body_is_decoded_within_its_limit() -> None:
    import gzip
    import zlib

    plain = b'{"model": "m"}'
    assert decoded_body(plain, "identity", 100) is plain
    assert decoded_body(gzip.compress(plain) + gzip.compress(plain), "gzip", 100) == plain * 2  # two members
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decoded_body(raw.compress(plain) + raw.flush(), "deflate", 100) == plain  # raw, as some clients send it
    assert decoded_body(gzip.compress(zlib.compress(plain)), "deflate, gzip", 100) == plain
    with pytest.raises(DecodedTooLarge):
        decoded_body(gzip.compress(b"x" * 101), "gzip", 100)
    with pytest.raises(BadRequest):
        decoded_body(gzip.compress(plain)[:-4], "gzip", 100)  # cut short
    with pytest.raises(UnsupportedEncoding):
        decoded_body(plain, "zstd", 100)


def test_routes_in_a_catalog_file_and_their_rules(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/catalog.db")
    catalog = Catalog(store)
    try:
        document = {"upstreams": [{"name": "vllm", "base_url": "http://vllm:8000/v1", "routing_only": True}],
                    "models": [{"id": "llama", "routes": [{"upstream": "vllm", "model": "meta/llama", "weight": 2}]}]}
        catalog.apply(document)
        exported = catalog.export()
        assert exported["models"][0]["routes"] == [{"upstream": "vllm", "model": "meta/llama", "weight": 2}]
        assert exported["upstreams"][0]["routing_only"] is True
        version = catalog.version()
        with pytest.raises(InvalidInput):
            catalog.apply({"models": [{"id": "x", "routes": [{"upstream": "nowhere"}]}]})
        with pytest.raises(CatalogError):  # an upstream a route names cannot go
            catalog.delete("upstream", "vllm")
        assert catalog.version() == version  # a failed write leaves the catalog as it was
        with pytest.raises(InvalidInput):
            catalog.add_route("llama", "vllm", "meta/llama", weight=0)
    finally:
        store.close()


def test_gateway_metrics_are_added_up_per_label_set_at_flush() -> None:
    """The flush adds up pending requests by label set before touching a sample: the figures must be those
    of one update per request."""
    from types import SimpleNamespace

    from modeldex.ops import metrics

    labels = ("units-model", "units-upstream")
    requests = metrics.GATEWAY_REQUESTS.labels("inference:chat/completions", *labels, "200")
    errors, latency = metrics.GATEWAY_ERRORS.labels(*labels), metrics.GATEWAY_LATENCY.labels(*labels)
    tokens_out = metrics.GATEWAY_TOKENS.labels(*labels, "out")
    before = (requests._value.get(), errors._value.get(), latency._sum.get(), tokens_out._value.get(),
              [bucket.get() for bucket in latency._buckets])
    for index in range(10):
        outcome = SimpleNamespace(first_byte_ms=1.0, upstream=labels[1], prompt_tokens=2, completion_tokens=3,
                                  error="upstream_error" if index < 4 else None)
        metrics.gateway_request("inference:chat/completions", labels[0], outcome, 200, 0.002 if index % 2 else 20.0)
    metrics.flush()
    assert requests._value.get() - before[0] == 10
    assert errors._value.get() - before[1] == 4
    assert latency._sum.get() - before[2] == pytest.approx(5 * 0.002 + 5 * 20.0)
    assert tokens_out._value.get() - before[3] == 30
    added = [bucket.get() - was for bucket, was in zip(latency._buckets, before[4], strict=True)]
    bounds = list(latency._upper_bounds)
    assert added[bounds.index(0.005)] == 5 and added[bounds.index(30.0)] == 5 and sum(added) == 10


def test_an_idle_upstream_connection_is_not_reused_once_the_upstream_may_have_closed_it() -> None:
    """uvicorn (vLLM, LiteLLM) closes an idle connection after 5 s; a request sent on it as it closes fails
    with nothing answered (a 502 seen against LiteLLM). The gateway does not reuse one idle for 4 s or more."""
    async def scenario() -> int:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while await reader.readuntil(b"\r\n\r\n"):  # GETs: a request is one header block
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
                    await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(Timeouts())
        for pause in (0.0, 0.5, KEEPALIVE_S + 0.3):  # the second request reuses the connection, the third not
            await asyncio.sleep(pause)
            async with client.session().get(f"http://127.0.0.1:{port}/v1/models") as response:
                assert response.status == 200 and await response.read() == b"{}"
        await client.session().close()
        server.close()
        return connections

    assert KEEPALIVE_S < 5
    assert asyncio.run(scenario()) == 2
