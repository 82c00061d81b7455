"""`modeldex check` against servers that misbehave, in-process (httpx.MockTransport, no server, no port):
whatever comes back, the scorecard says what it was and the run ends, with no traceback and in bounded
time. tests/test_check.py grades real servers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner

from modeldex.cli.main import cli
from modeldex.conformance import scorecard
from modeldex.conformance.checks import CHECKS
from modeldex.conformance.probe import MAX_ANSWER_BYTES, Probe

LISTED = {"id": "m1", "object": "model", "created": 1, "owned_by": "x"}
NOT_FOUND = {"error": {"message": "no", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
DEEP = b"[" * 100_000 + b"]" * 100_000  # past Python's recursion limit for json.loads


def server(list_answers: Iterator[httpx.Response] | None = None, listed: dict[str, object] | None = None,
           chat: Callable[[], httpx.Response] | None = None) -> httpx.MockTransport:
    """A server that answers every list with `listed` (or, in turn, `list_answers`), retrieves it, 404s
    the rest in OpenAI's envelope, and answers chat with `chat`."""
    item = listed or LISTED

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models" and request.method == "GET":
            answer = next(list_answers, None) if list_answers is not None else None
            return answer or httpx.Response(200, json={"object": "list", "data": [item]})
        if path.startswith("/v1/models/") and request.method == "GET" and "no-such" not in path:
            return httpx.Response(200, json=item)
        if path == "/v1/chat/completions" and chat is not None:
            return chat()
        return httpx.Response(404, json=NOT_FOUND)

    return httpx.MockTransport(handle)


def graded(transport: httpx.MockTransport, timeout: float = 5.0) -> dict[str, tuple[str, str]]:
    probe = Probe("http://target", "sk-test", timeout=timeout, transport=transport)
    try:
        results = scorecard.run(probe)
    finally:
        probe.close()
    assert len(results) == len(CHECKS)
    return {result.name: (result.status, result.got) for result in results}


@pytest.mark.parametrize("second", [
    httpx.Response(200, json={"object": "list", "data": None}),  # was: TypeError, a traceback
    httpx.Response(200, json={"object": "list", "data": ["m1"]}),  # was: AttributeError
    httpx.Response(200, json=["m1"]),
    httpx.Response(200, content=DEEP, headers={"content-type": "application/json"}),  # was: RecursionError
])
def test_a_second_list_unlike_the_first_fails_the_order_check(second: httpx.Response) -> None:
    seen = graded(server(iter([httpx.Response(200, json={"object": "list", "data": [LISTED]}), second])))
    assert seen["list shape"][0] == "pass"
    assert seen["list order is stable"][0] == "fail"


def test_json_nested_past_the_recursion_limit_is_judged_not_json() -> None:
    transport = server(chat=lambda: httpx.Response(200, content=DEEP, headers={"content-type": "application/json"}))
    seen = graded(transport)
    assert seen["chat completion"][0] == "fail" and seen["chat completion"][1].startswith("not a chat.completion")
    streamed = server(chat=lambda: httpx.Response(200, content=b"data: " + DEEP + b"\n\ndata: [DONE]\n\n",
                                                  headers={"content-type": "text/event-stream"}))
    assert graded(streamed)["chat completion, streamed"] == ("fail", "events are not chat.completion.chunk objects")


def test_an_id_curl_cannot_send_raw_fails_the_retrieve_check() -> None:
    seen = graded(server(listed={**LISTED, "id": "a/b\nc"}))
    status, got = seen["every listed id retrieves"]
    assert status == "fail" and "'a/b\\nc' (raw): cannot be sent in a URL" in got


def test_an_answer_must_end_within_the_timeout_and_a_size() -> None:
    """httpx's timeout is per read: a stream of keep-alive comments held the check forever."""

    def keepalives() -> Iterator[bytes]:
        while True:
            time.sleep(0.05)
            yield b": keep-alive\n\n"

    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 2**20

    start = time.monotonic()
    seen = graded(server(chat=lambda: httpx.Response(200, content=keepalives(),
                                                     headers={"content-type": "text/event-stream"})), timeout=0.5)
    assert time.monotonic() - start < 10
    assert seen["chat completion"] == ("fail", "no answer: ReadTimeout: the answer did not end within 0.5 s")
    seen = graded(server(chat=lambda: httpx.Response(200, content=endless())))
    assert seen["chat completion"] == (
        "fail", f"no answer: ReadError: the answer went on past {MAX_ANSWER_BYTES // 2**20} MiB")


def test_a_check_that_raises_is_a_failure_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: object) -> None:
        raise KeyError("surprise")

    checks = list(CHECKS)
    name = checks[3][0]
    checks[3] = (name, broken)  # type: ignore[assignment]
    monkeypatch.setattr(scorecard, "CHECKS", checks)
    seen = graded(server())
    assert name == "401 without a key"  # not the function's name, "missing key"
    assert seen[name][0] == "fail" and "KeyError: 'surprise'" in seen[name][1]


def test_a_gzipped_answer_is_read_as_the_server_meant_it() -> None:
    import gzip

    body = gzip.compress(json.dumps({"object": "list", "data": [LISTED]}).encode())
    transport = server(iter([httpx.Response(200, content=body, headers={"content-encoding": "gzip",
                                                                        "content-type": "application/json"})]))
    assert graded(transport)["list shape"][0] == "pass"


@pytest.mark.parametrize(("args", "message"), [
    (["http://"], "not a URL modeldex check can call"),
    (["http://127.0.0.1:99999"], "Port out of range"),
    (["http://[::1"], "not a URL modeldex check can call"),
    (["http://127.0.0.1:9/\n"], "not a URL modeldex check can call"),
    (["http://127.0.0.1:9", "--api-key", "sk-é"], "keys are printable ASCII"),  # was a UnicodeEncodeError
])
def test_what_cannot_be_called_is_a_usage_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["check", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # not a traceback


def test_a_long_list_says_how_many_ids_were_retrieved() -> None:
    """Only the first MAX_RETRIEVED ids are retrieved: a pass says so rather than claim every one."""
    from modeldex.conformance.checks import MAX_RETRIEVED

    items = [{**LISTED, "id": f"m{i}"} for i in range(MAX_RETRIEVED + 5)]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": items})
        model_id = request.url.path.removeprefix("/v1/models/")
        return httpx.Response(200, json={**LISTED, "id": model_id})

    status, got = graded(httpx.MockTransport(handle))["every listed id retrieves"]
    assert status == "pass"
    assert got == f"{MAX_RETRIEVED} retrieves, each the listed object (the first {MAX_RETRIEVED} of {len(items)} ids)"


def test_a_failed_delete_check_removes_its_throwaway_model() -> None:
    """`--writes` makes a throwaway model through the admin API, then deletes it as clients do; when that
    delete failed, the model was left in the catalog checked. It is removed through the admin API now."""
    made: set[str] = set()

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/admin/models" and request.method == "POST":
            made.add(json.loads(request.content)["id"])
            return httpx.Response(201, json={})
        if path.startswith("/v1/admin/models/") and request.method == "DELETE":
            made.discard(path.rsplit("/", 1)[1])
            return httpx.Response(200, json={})
        if path.startswith("/v1/models/") and request.method == "DELETE":
            return httpx.Response(405, json=NOT_FOUND)  # this target's delete is broken
        return server().handle_request(request)

    probe = Probe("http://target", "sk-test", timeout=5, transport=httpx.MockTransport(handle))
    try:
        results = {result.name: result for result in scorecard.run(probe, writes=True)}
    finally:
        probe.close()
    deleted = results["delete a model (--writes)"]
    assert deleted.status == "fail" and deleted.got.endswith("; the throwaway model was removed through the admin API")
    assert made == set()
