"""The graded checks: what an OpenAI-compatible Models endpoint must answer for the clients people use.

Each check sends a few requests and returns one `Result`: pass, fail (a client breaks), warn (a client
copes, but worse), or skip (not applicable here), with what was sent, what came back, and which client
it matters to. Read-only unless the run allows writes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from modeldex.conformance.probe import Probe, model_path

Status = Literal["pass", "fail", "warn", "skip"]
MODEL_FIELDS = {"id": str, "object": str, "created": int, "owned_by": str}
MAX_RETRIEVED = 200  # listed ids retrieved one by one, at most
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


@dataclass
class Result:
    name: str
    status: Status
    sent: str
    got: str
    why: str

    def document(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What the checks share: the probe, the model to call, and what the list answered."""

    probe: Probe
    model: str | None = None
    writes: bool = False
    listed: list[dict[str, Any]] = field(default_factory=list)


def _summary(response: httpx.Response) -> str:
    body = " ".join(response.text.split())  # one line, whatever the server's HTML looked like
    body = body if len(body) <= 300 else body[:300] + "..."
    return f"{response.status_code} {response.headers.get('content-type', '(no content type)')}: {body}"


def _json(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON the checks can judge (nested past Python's recursion
    limit included: `[[[[...` from a broken server is a finding, not a crash)."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def envelope_problem(response: httpx.Response, status: int | tuple[int, ...]) -> str | None:
    """What is wrong with an error answer, judged by OpenAI's: the status, JSON, and
    `{"error": {"message", "type", "param", "code"}}` (the SDKs read exactly these)."""
    wanted = (status,) if isinstance(status, int) else status
    if response.status_code not in wanted:
        return f"status {response.status_code}, not {' or '.join(map(str, wanted))}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return "the error is not JSON"
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no OpenAI error envelope {\"error\": {...}}"
    missing = sorted({"message", "type", "param", "code"} - set(error))
    if missing:
        return f"the error lacks {', '.join(missing)}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "the error has no message"
    return None


def _model_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "an entry is not an object"
    for name, kind in MODEL_FIELDS.items():
        if not isinstance(item.get(name), kind) or (kind is int and isinstance(item.get(name), bool)):
            return f"{item.get('id', '?')!r}: {name} is not a {kind.__name__}"
    if item["object"] != "model":
        return f"{item['id']!r}: object is {item['object']!r}, not 'model'"
    return None


Check = Callable[[Context], Result]
CHECKS: list[tuple[str, Check]] = []  # (the name its result has, the check), in the order they run


def check(name: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS.append((name, function))
        return function
    return register


@check("list shape")
def list_shape(ctx: Context) -> Result:
    why = "every client starts here: the openai SDK's models.list(), LangChain, Open WebUI's model picker"
    sent = ctx.probe.describe("GET", "/models")
    response = ctx.probe.request("GET", "/models")
    body = _json(response)
    problem = None
    if response.status_code != 200:
        problem = f"status {response.status_code}"
    elif not response.headers.get("content-type", "").startswith("application/json"):
        problem = "not JSON"
    elif not isinstance(body, dict) or body.get("object") != "list" or not isinstance(body.get("data"), list):
        problem = "not {\"object\": \"list\", \"data\": [...]}"
    else:
        problem = next((p for p in map(_model_problem, body["data"]) if p), None)
    if problem is not None:
        return Result("list shape", "fail", sent, f"{problem}; {_summary(response)}", why)
    ctx.listed = body["data"]
    if not ctx.listed:
        return Result("list shape", "warn", sent, "200 with an empty list",
                      "an empty list looks like success to clients that then have nothing to call (Portkey #1371)")
    count = f"{len(ctx.listed)} model{'' if len(ctx.listed) == 1 else 's'}"
    return Result("list shape", "pass", sent, f"200, {count}, each with id, object, created, owned_by", why)


@check("list order is stable")
def list_order(ctx: Context) -> Result:
    why = "model pickers and caches that compare lists see changes that are not there when the order moves"
    sent = ctx.probe.describe("GET", "/models", note=" (twice)")
    if not ctx.listed:
        return Result("list order is stable", "skip", sent, "no list to compare", why)
    again = _json(ctx.probe.request("GET", "/models"))
    first = [item["id"] for item in ctx.listed]
    data = again.get("data") if isinstance(again, dict) else None
    second = [item.get("id") if isinstance(item, dict) else None for item in data] if isinstance(data, list) else None
    if second is None:
        return Result("list order is stable", "fail", sent, "the second list is not {\"object\": \"list\", "
                      "\"data\": [...]}", why)
    if first != second:
        return Result("list order is stable", "fail", sent, "two lists in a row differ in order or content", why)
    return Result("list order is stable", "pass", sent, "the same order twice", why)


@check("every listed id retrieves")
def retrieve_listed(ctx: Context) -> Result:
    why = ("the openai SDK's models.retrieve() sends '/' as %2F, curl sends it raw; ids with '/', ':' or '@' that "
           "list but 404 break both (LiteLLM #37271, Ollama #10139, #13715)")
    sent = "GET /models/ID for every listed id (percent-encoded, and raw where it has '/', ':' or '@')"
    if not ctx.listed:
        return Result("every listed id retrieves", "skip", sent, "nothing listed", why)
    failures: list[str] = []
    checked = 0
    for item in ctx.listed[:MAX_RETRIEVED]:
        forms = [True] + ([False] if any(ch in item["id"] for ch in "/:@") else [])
        for encoded in forms:
            checked += 1
            form = "encoded" if encoded else "raw"
            try:
                response = ctx.probe.request("GET", model_path(item["id"], encoded))
            except httpx.InvalidURL as exc:  # raw, a control character or space: curl cannot send it either
                failures.append(f"{item['id']!r} ({form}): cannot be sent in a URL ({exc})")
                continue
            body = _json(response)
            same = isinstance(body, dict) and all(body.get(k) == item.get(k) for k in MODEL_FIELDS)
            if response.status_code != 200 or not same:
                failures.append(f"{item['id']!r} ({form}): {response.status_code}"
                                + ("" if response.status_code != 200 else ", a different object"))
    if failures:
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        return Result("every listed id retrieves", "fail", sent, shown, why)
    sampled = f" (the first {MAX_RETRIEVED} of {len(ctx.listed)} ids)" if len(ctx.listed) > MAX_RETRIEVED else ""
    return Result("every listed id retrieves", "pass", sent, f"{checked} retrieves, each the listed object{sampled}",
                  why)


@check("401 without a key")
def missing_key(ctx: Context) -> Result:
    why = "without a key the SDKs raise AuthenticationError only on a 401 in the envelope"
    sent = ctx.probe.describe("GET", "/models", key=None)
    response = ctx.probe.request("GET", "/models", key=None)
    problem = envelope_problem(response, 401)
    if problem is not None:
        return Result("401 without a key", "fail", sent, f"{problem}; {_summary(response)}", why)
    code = response.json()["error"]["code"]
    if code is not None:
        return Result("401 without a key", "warn", sent, f"401 with code {code!r}; OpenAI answers code null", why)
    return Result("401 without a key", "pass", sent, "401 in the envelope, code null", why)


@check("401 with a wrong key")
def wrong_key(ctx: Context) -> Result:
    why = ("the SDKs map code invalid_api_key to AuthenticationError; a key echoed in full ends up in every "
           "client's logs")
    wrong = "sk-modeldex-check-" + secrets.token_hex(16)
    sent = ctx.probe.describe("GET", "/models", key=wrong)
    response = ctx.probe.request("GET", "/models", key=wrong)
    problem = envelope_problem(response, 401)
    if problem is not None:
        return Result("401 with a wrong key", "fail", sent, f"{problem}; {_summary(response)}", why)
    error = response.json()["error"]
    if wrong in response.text:
        return Result("401 with a wrong key", "fail", sent, "the whole key is echoed back", why)
    if error["code"] != "invalid_api_key":
        return Result("401 with a wrong key", "warn", sent, f"code {error['code']!r}, not 'invalid_api_key'", why)
    return Result("401 with a wrong key", "pass", sent, "401, code invalid_api_key, the key masked", why)


@check("WWW-Authenticate on 401")
def www_authenticate(ctx: Context) -> Result:
    why = "HTTP says a 401 names its scheme in WWW-Authenticate; generic HTTP clients and proxies look for it"
    sent = ctx.probe.describe("GET", "/models", key=None)
    response = ctx.probe.request("GET", "/models", key=None)
    challenge = response.headers.get("www-authenticate")
    if response.status_code != 401:
        return Result("WWW-Authenticate on 401", "skip", sent, f"status {response.status_code}", why)
    if challenge is None or not challenge.lower().startswith("bearer"):
        return Result("WWW-Authenticate on 401", "warn", sent, f"www-authenticate: {challenge}", why)
    return Result("WWW-Authenticate on 401", "pass", sent, f"www-authenticate: {challenge}", why)


@check("404 for an unknown model")
def unknown_model(ctx: Context) -> Result:
    why = "the SDKs raise NotFoundError with .code model_not_found; agents use it to fall back to another model"
    missing = "modeldex-check-no-such-model-" + secrets.token_hex(4)
    sent = ctx.probe.describe("GET", model_path(missing))
    response = ctx.probe.request("GET", model_path(missing))
    problem = envelope_problem(response, 404)
    if problem is not None:
        return Result("404 for an unknown model", "fail", sent, f"{problem}; {_summary(response)}", why)
    error = response.json()["error"]
    if error["code"] != "model_not_found":
        return Result("404 for an unknown model", "fail", sent, f"code {error['code']!r}, not 'model_not_found'", why)
    if error["param"] is None:
        return Result("404 for an unknown model", "warn", sent, "param is null; it names the parameter: 'model'", why)
    return Result("404 for an unknown model", "pass", sent, f"404 model_not_found, param {error['param']!r}", why)


@check("unknown route in the envelope")
def unknown_route(ctx: Context) -> Result:
    why = "a framework's {\"detail\": ...} on an unknown path makes the SDKs raise errors without a message"
    path = "/modeldex-check-no-such-route"
    sent = ctx.probe.describe("GET", path)
    response = ctx.probe.request("GET", path)
    problem = envelope_problem(response, 404)
    if problem is not None:
        return Result("unknown route in the envelope", "fail", sent, f"{problem}; {_summary(response)}", why)
    return Result("unknown route in the envelope", "pass", sent, "404 in the envelope", why)


@check("wrong method in the envelope")
def wrong_method(ctx: Context) -> Result:
    why = "a wrong method answered with HTML or a bare status leaves SDK users with no message to act on"
    sent = ctx.probe.describe("PUT", "/models")
    response = ctx.probe.request("PUT", "/models", json={})
    problem = envelope_problem(response, (404, 405))
    if problem is not None:
        return Result("wrong method in the envelope", "fail", sent, f"{problem}; {_summary(response)}", why)
    return Result("wrong method in the envelope", "pass", sent, f"{response.status_code} in the envelope", why)


@check("x-request-id")
def request_ids(ctx: Context) -> Result:
    why = "the openai SDK exposes x-request-id as ._request_id; support and logs join on it"
    sent = ctx.probe.describe("GET", "/models") + "; and an error"
    answers = [ctx.probe.request("GET", "/models"), ctx.probe.request("GET", "/models", key=None)]
    missing = [str(r.status_code) for r in answers if not r.headers.get("x-request-id")]
    if missing:
        return Result("x-request-id", "warn", sent, f"no x-request-id on the {', '.join(missing)} answer", why)
    ids = {r.headers["x-request-id"] for r in answers}
    if len(ids) != len(answers):
        return Result("x-request-id", "fail", sent, "two requests got the same id", why)
    return Result("x-request-id", "pass", sent, "a distinct x-request-id on each answer", why)


@check("rate-limit headers")
def rate_limit_headers(ctx: Context) -> Result:
    why = "the SDKs back off by x-ratelimit-* and retry-after; half a set misleads them"
    sent = ctx.probe.describe("GET", "/models")
    response = ctx.probe.request("GET", "/models")
    present = [name for name in RATE_HEADERS if name in response.headers]
    if not present:
        return Result("rate-limit headers", "skip", sent, "no limit announced for this key", why)
    if len(present) != len(RATE_HEADERS):
        missing = sorted(set(RATE_HEADERS) - set(present))
        return Result("rate-limit headers", "fail", sent, f"missing {', '.join(missing)}", why)
    return Result("rate-limit headers", "pass", sent, ", ".join(f"{n}: {response.headers[n]}" for n in present), why)


@check("ETag and 304")
def conditional_get(ctx: Context) -> Result:
    why = "with an ETag, clients that poll the list revalidate in one round trip instead of downloading it again"
    sent = ctx.probe.describe("GET", "/models", note=", then again with If-None-Match")
    response = ctx.probe.request("GET", "/models")
    etag = response.headers.get("etag")
    if response.status_code != 200:
        return Result("ETag and 304", "skip", sent, f"status {response.status_code}", why)
    if etag is None:
        return Result("ETag and 304", "warn", sent, "no ETag", why)
    again = ctx.probe.request("GET", "/models", headers={"If-None-Match": etag})
    if again.status_code != 304 or again.content:
        return Result("ETag and 304", "fail", sent, f"If-None-Match {etag} answered {again.status_code}", why)
    return Result("ETag and 304", "pass", sent, f"ETag {etag}, then 304 with no body", why)


@check("HEAD")
def head(ctx: Context) -> Result:
    why = "monitors and proxies check endpoints with HEAD"
    sent = ctx.probe.describe("HEAD", "/models")
    response = ctx.probe.request("HEAD", "/models")
    if response.status_code >= 500:
        return Result("HEAD", "fail", sent, f"status {response.status_code}", why)
    if response.status_code != 200 or response.content:
        return Result("HEAD", "warn", sent, f"status {response.status_code}, {len(response.content)} body bytes", why)
    return Result("HEAD", "pass", sent, "200 with no body", why)


def _chat(ctx: Context, name: str, why: str, stream: bool) -> tuple[str, httpx.Response | Result]:
    """Send the one-token chat completion both chat checks make: what was sent, and the answer, or the
    check's result already when there is nothing to judge (no model, no inference route, an error)."""
    model = ctx.model or (ctx.listed[0]["id"] if ctx.listed else None)
    note = f" (model {model!r}{', stream' if stream else ''}, max_tokens 1)"
    sent = ctx.probe.describe("POST", "/chat/completions", note=note)
    if model is None:
        return sent, Result(name, "skip", sent, "no model to call", why)
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
    if stream:
        body["stream"] = True
    response = ctx.probe.request("POST", "/chat/completions", json=body)
    if response.status_code in (404, 405) and "model_not_found" not in response.text:
        return sent, Result(name, "skip", sent, f"{response.status_code}: the server does not route inference", why)
    if response.status_code != 200:  # a 429 or 503 is the upstream's state, not the protocol's
        return sent, Result(name, "warn" if response.status_code in (429, 503) else "fail", sent,
                            _summary(response), why)
    return sent, response


@check("chat completion")
def chat_completion(ctx: Context) -> Result:
    name, why = "chat completion", "a server that lists models should let clients call them: every chat UI sends this next"
    sent, response = _chat(ctx, name, why, stream=False)
    if isinstance(response, Result):
        return response
    answer = _json(response)
    if not isinstance(answer, dict) or answer.get("object") != "chat.completion" or not answer.get("choices"):
        return Result(name, "fail", sent, f"not a chat.completion; {_summary(response)}", why)
    return Result(name, "pass", sent, f"200 chat.completion from {answer.get('model')!r}", why)


@check("chat completion, streamed")
def chat_stream(ctx: Context) -> Result:
    name = "chat completion, streamed"
    why = "chat UIs stream: events must arrive as data: lines of chat.completion.chunk, ending with [DONE]"
    sent, response = _chat(ctx, name, why, stream=True)
    if isinstance(response, Result):
        return response
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return Result(name, "fail", sent, f"content type {response.headers.get('content-type')}", why)
    events = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        return Result(name, "fail", sent, "the stream does not end with data: [DONE]", why)
    chunks = [_loads(event) for event in events[:-1]]
    if not chunks or not all(isinstance(c, dict) and c.get("object") == "chat.completion.chunk" for c in chunks):
        return Result(name, "fail", sent, "events are not chat.completion.chunk objects", why)
    return Result(name, "pass", sent, f"{len(chunks)} chunks, then [DONE]", why)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


@check("delete a model (--writes)")
def delete_model(ctx: Context) -> Result:
    why = "DELETE /v1/models/ID is how OpenAI clients remove a fine-tuned model: {id, object, deleted}"
    throwaway = "modeldex-check-throwaway-" + secrets.token_hex(4)
    sent = (f"POST {ctx.probe.base}/admin/models (a throwaway model), then "
            + ctx.probe.describe("DELETE", model_path(throwaway)))
    if not ctx.writes:
        return Result("delete a model (--writes)", "skip", sent, "read-only run: pass --writes", why)
    created = ctx.probe.request("POST", "/admin/models", json={"id": throwaway, "owned_by": "modeldex-check"})
    if created.status_code != 201:
        return Result("delete a model (--writes)", "skip", sent,
                      f"could not make a throwaway model through modeldex's admin API ({created.status_code})", why)
    try:
        response = ctx.probe.request("DELETE", model_path(throwaway))
        body = _json(response)
        if response.status_code != 200 or body != {"id": throwaway, "object": "model", "deleted": True}:
            return Result("delete a model (--writes)", "fail", sent,
                          _summary(response) + _removed(ctx, throwaway), why)
        gone = ctx.probe.request("GET", model_path(throwaway))
    except httpx.HTTPError as exc:
        return Result("delete a model (--writes)", "fail", sent,
                      f"no answer: {type(exc).__name__}: {exc}" + _removed(ctx, throwaway), why)
    if gone.status_code != 404:
        return Result("delete a model (--writes)", "fail", sent,
                      f"still retrievable after delete ({gone.status_code})" + _removed(ctx, throwaway), why)
    return Result("delete a model (--writes)", "pass", sent, "deleted, then 404", why)


def _removed(ctx: Context, throwaway: str) -> str:
    """After a failed delete, the throwaway model removed through the admin API that made it, so a check of a
    real catalog leaves nothing behind (it was left there); or what to remove by hand."""
    try:
        removed = ctx.probe.request("DELETE", f"/admin/models/{throwaway}")
    except httpx.HTTPError:
        removed = None
    if removed is not None and removed.status_code in (200, 404):
        return "; the throwaway model was removed through the admin API"
    return f"; the throwaway model {throwaway} is left in the catalog: remove it (modeldex models remove)"
