"""The OpenAI Models routes, on a hand-written hot path.

`GET /v1/models`, `GET /v1/models/{model_id}` and `DELETE /v1/models/{model_id}` are what clients call
constantly, so they skip the framework: route on the path, check the key against the in-memory key
table, pick the view of the caller's access policy, and answer bytes rendered once per catalog version.
The answer is a plain (status, headers, body) that the app hands to the server in one call.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qsl

from modeldex.api import errors
from modeldex.api.admin_base import domain_error, precondition
from modeldex.api.callers import Callers
from modeldex.api.errors import ApiError
from modeldex.api.render import RenderedCatalog, deleted_object
from modeldex.catalog.callers import Caller
from modeldex.catalog.entities import MAX_MODEL_ID_LENGTH
from modeldex.catalog.errors import Conflict, NotFound, PreconditionFailed, StoreUnavailable
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.service import Catalog
from modeldex.ops import metrics
from modeldex.ops.access_log import LineParts, line_parts

Headers = list[tuple[str, str]]
Answer = tuple[int, Headers, bytes, "str | None"]  # status, headers, body, and the caller's name for the log


class HeaderLookup(Protocol):
    """Request headers by lower-case name: granian's RSGI headers, or a dict."""

    def get(self, name: str, default: None = None) -> str | None: ...

    def items(self) -> list[tuple[str, str]]: ...

    def keys(self) -> list[str]: ...

    def values(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def __contains__(self, name: object) -> bool: ...


MAX_REMEMBERED_404S = 4096
MAX_READY_ANSWERS = 4096
# Requests longer than this (path and headers of the answer's key, in characters) are answered, never
# remembered: an id has at most MAX_MODEL_ID_LENGTH characters and a key's header 66. A read key asking
# for 4,096 ids of 60 KB each grew a worker from 91 to 575 MB in 2 s, held until the catalog changed.
MAX_REMEMBERED_REQUEST = 1024
LIST_PATH = "/v1/models"
ITEM_PREFIX = "/v1/models/"
LIST_METHODS = ("GET", "HEAD")
ITEM_METHODS = ("GET", "HEAD", "DELETE")
JSON = ("content-type", "application/json")
ERROR_JSON = ("content-type", errors.CONTENT_TYPE)  # OpenAI's label for its errors (errors.py)
# Answers depend on the key: browsers may keep them but must revalidate; shared caches must not store.
_CACHE_CONTROL = ("cache-control", "private, no-cache")
_VARY = ("vary", "Authorization")
_LIST_VARY = ("vary", "Authorization, Accept-Encoding")
_GZIP = ("content-encoding", "gzip")
# Lists at least this long go compressed to clients that accept gzip (the openai SDK and browsers do):
# below a packet, compression saves no round trip.
GZIP_MIN_BYTES = 1400


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip (`gzip`, `*`, with a q-value above 0)."""
    if not accept_encoding:
        return False
    for part in accept_encoding.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            if not q.startswith("q="):
                return True
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
    return False


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison: `W/` prefixes do not matter."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def wants_metadata(query_string: str) -> bool:
    """`?expand=metadata` (also `expand[]=metadata` or a comma list) asks for metadata."""
    return any(name in ("expand", "expand[]") and "metadata" in value.split(",")
               for name, value in parse_qsl(query_string))


def error_answer(error: ApiError, request_id: str, extra_headers: Headers | None = None,
                 key_name: str | None = None) -> Answer:
    headers = [ERROR_JSON, ("x-request-id", request_id), *error.headers]
    if extra_headers:
        headers.extend(extra_headers)
    return error.status, headers, error.body(), key_name


# An answer that is the same for every plain GET of one path with one Authorization header at one catalog
# version: status, its content type, the headers after the request id, body, the caller's name, the route
# label, where its requests' durations go (`metrics.recorder` of the label and status), and its log lines'
# parts (`access_log.line_parts`).
Ready = tuple[int, tuple[str, str], tuple[tuple[str, str], ...], bytes, "str | None", str, Callable[[float], None],
              LineParts]
# An answer with its route label, for the log and the metrics.
LabelledAnswer = tuple[int, Headers, bytes, "str | None", str]


def labelled(ready: Ready, request_id: str) -> LabelledAnswer:
    """A remembered answer given to one request: its headers with the request's id."""
    status, content_type, tail, body, caller_name, label, _, _ = ready
    return status, [content_type, ("x-request-id", request_id), *tail], body, caller_name, label


def models_label(kind: str, method: str) -> str:
    return kind if kind == "list" else "delete" if method == "DELETE" else "retrieve"


AnswerKey = tuple[str, "str | None", "str | None"]


def encoding_key(headers: HeaderLookup) -> str:
    """The Accept-Encoding header as an answer's key part: "" when there is none (both mean no gzip,
    `accepts_gzip`), so it never reads as the None of an answer that does not vary by it."""
    return headers.get("accept-encoding") or ""


def answer_key(path: str, headers: HeaderLookup, by_encoding: bool) -> AnswerKey:
    """What a remembered answer is filed under: the path, the Authorization header and, for an answer that
    differs by it (`by_encoding`: a list long enough to go compressed), the Accept-Encoding header
    (`encoding_key`). None in its place: the same answer for any encoding. `remembered()` looks up the same:
    change both."""
    return path, headers.get("authorization"), encoding_key(headers) if by_encoding else None


class NotNow:
    """`answer_now` could not answer without waiting; what it found of the caller, for `answer`."""

    __slots__ = ("identified",)

    def __init__(self, identified: Caller | str | None) -> None:
        self.identified = identified


class ModelRoutes:
    def __init__(self, live: LiveCatalog[RenderedCatalog], callers: Callers,
                 catalog_for: Callable[[Caller], Catalog], metadata_by_default: bool = False) -> None:
        self.live = live
        self.callers = callers
        self.catalog_for = catalog_for  # the catalog service, acting for a caller
        self.metadata_by_default = metadata_by_default
        self._suspects = callers.limiter.suspects  # kept: one attribute lookup less in `remembered`
        self._not_found_bodies: dict[str, bytes] = {}
        # Answers already worked out for this catalog version, by (path, Authorization header): a client
        # repeating a request costs one lookup, not the caller, view, body and header steps again (1.5 µs
        # of the 4.5 µs modeldex spent on a retrieve, measured with bench/hotpath_profile.py). Only
        # answers that depend on nothing else are kept: no rate limit, no query, no If-None-Match (and for
        # a list long enough to go compressed, the Accept-Encoding header is part of the key: `answer_key`).
        self._ready_for: RenderedCatalog | None = None
        self._ready: dict[AnswerKey, Ready] = {}
        # Answers to callers whose credential can lapse before the catalog changes (a token expires, or
        # its key leaves the provider's set), with the check that it still stands.
        self._lapsing: dict[AnswerKey, tuple[Ready, Callable[[], bool]]] = {}

    def route(self, path: str) -> tuple[str, str | None] | None:
        """('list', None), ('item', model_id) or None when the path (decoded, dot segments resolved:
        `paths.normalize`) is not a Models route."""
        if path == LIST_PATH:
            return ("list", None)
        if path.startswith(ITEM_PREFIX) and len(path) > len(ITEM_PREFIX):
            return ("item", path[len(ITEM_PREFIX):])
        return None

    def answer_now(self, method: str, route: tuple[str, str | None], path: str, query: str,
                   headers: HeaderLookup, client: str, request_id: str) -> Answer | NotNow:
        """The answer, when it needs nothing to wait for: a GET or HEAD by a known caller that is not
        rate-limited, from an address with no recent failures (the common case, without a coroutine).
        Otherwise `answer` it is, given what was found here (`NotNow`)."""
        rendered = self.live.current
        callers = self.callers
        authorization = headers.get("authorization")
        allowed = LIST_METHODS if route[0] == "list" else ITEM_METHODS
        if method not in allowed:
            return error_answer(errors.method_not_allowed(method, path, allowed), request_id)
        caller = callers.identify(rendered.keys, authorization)
        if not isinstance(caller, Caller):
            refusal = callers.refusal_now(caller, client)
            if refusal is None:
                return NotNow(caller)
            answer = error_answer(refusal, request_id)
        elif method == "DELETE" or client in callers.limiter.suspects or callers.limited(caller):
            return NotNow(caller)
        else:
            answer = self._read(rendered, caller, route, query, headers, request_id, [])
        if (method == "GET" or method == "HEAD") and not query and "if-none-match" not in headers:
            lapses = caller.still_valid if isinstance(caller, Caller) else None
            by_encoding = _LIST_VARY in answer[1]  # the answer's Vary names Accept-Encoding
            self._remember(rendered, answer_key(path, headers, by_encoding), answer, models_label(route[0], method),
                           lapses)
        return answer

    def remembered(self, method: str, path: str, query: str, headers: HeaderLookup, client: str) -> Ready | None:
        """The answer remembered for this request (see `_ready`), or None: `answer_now` it is. `path` is
        decoded; one with dot segments is never found (answers are filed under resolved paths, `_remember`).
        The caller adds the request id (`labelled`)."""
        if (method != "GET" and method != "HEAD") or query or self._ready_for is not self.live.current:
            return None
        # answer_key(), written out for an answer the same for any encoding (a model, a list too short to go
        # compressed, an error): the call cost 380 instructions a request, and the list's Accept-Encoding
        # lookup ~1,000 more where it made no difference (bench/instructions.py).
        authorization = headers.get("authorization")
        ready = self._ready.get((path, authorization, None))
        if ready is None:
            ready = self._remembered_otherwise(path, authorization, headers)
            if ready is None:
                return None
        # `in`, not get(): 90–220 instructions a request fewer on granian's headers (bench/instructions.py).
        if "if-none-match" in headers or client in self._suspects:
            return None
        return ready

    def _remembered_otherwise(self, path: str, authorization: str | None, headers: HeaderLookup) -> Ready | None:
        """An answer filed under the request's Accept-Encoding (a list long enough to go compressed), or one to
        a caller whose credential can lapse, while it stands."""
        requests: list[AnswerKey] = [(path, authorization, None)]
        if path == LIST_PATH:
            by_encoding = (path, authorization, encoding_key(headers))
            ready = self._ready.get(by_encoding)
            if ready is not None:
                return ready
            requests.append(by_encoding)
        if not self._lapsing:
            return None
        for request in requests:
            lapsing = self._lapsing.get(request)
            if lapsing is not None:
                return lapsing[0] if lapsing[1]() else None
        return None

    def _remember(self, rendered: RenderedCatalog, request: AnswerKey, answer: Answer,
                  label: str, lapses: Callable[[], bool] | None = None) -> None:
        if sum(len(part) for part in request if part is not None) > MAX_REMEMBERED_REQUEST:
            return
        if rendered is not self._ready_for or len(self._ready) + len(self._lapsing) >= MAX_READY_ANSWERS:
            self._ready_for, self._ready, self._lapsing = rendered, {}, {}
        status, headers, body, caller_name = answer
        # Every answer starts with its content type and the request id; the headers after those are kept.
        ready = (status, headers[0], tuple(headers[2:]), body, caller_name, label, metrics.recorder(label, status),
                 line_parts(request[0], label, status, caller_name))
        if lapses is None:
            self._ready[request] = ready
        else:  # a caller whose credential can lapse within a version: asked each time (answers to keys are not)
            self._lapsing[request] = (ready, lapses)

    async def answer(self, method: str, route: tuple[str, str | None], query: str, headers: HeaderLookup,
                     client: str, request_id: str, not_now: NotNow) -> Answer:
        """Answer what `answer_now` could not (its method already checked), whatever it takes: resolving the
        caller it found (401, 429), its rate limit, a delete. The credential is not parsed again."""
        key_name: str | None = None
        limit_headers: Headers = []
        try:
            rendered = self.live.current
            caller = await self.callers.resolve(not_now.identified, client)
            key_name = caller.name
            if self.callers.limited(caller):
                limit_headers = await self.callers.charge(caller)
            if method == "DELETE":
                assert route[1] is not None
                return await self._delete(rendered, caller, route[1], headers, request_id, limit_headers)
            return self._read(rendered, caller, route, query, headers, request_id, limit_headers)
        except ApiError as error:
            return error_answer(error, request_id, limit_headers, key_name)

    def _read(self, rendered: RenderedCatalog, caller: Caller, route: tuple[str, str | None], query: str,
              headers: HeaderLookup, request_id: str, limit_headers: Headers) -> Answer:
        """A list or a model, as the caller's policy sees it, from bytes rendered for this version."""
        kind, model_id = route
        view = rendered.view(caller.policy)
        expanded = self.metadata_by_default or bool(query and wants_metadata(query))
        if expanded:
            bodies, list_body, etag = view.expanded()
        else:
            bodies, list_body, etag = view.bodies, view.list_body, view.etag
        body = list_body if kind == "list" else bodies.get(model_id)  # type: ignore[arg-type]
        if body is None:
            return self._not_found(model_id or "", request_id, limit_headers, caller.name)
        vary, compressed = _VARY, False
        if kind == "list" and len(body) >= GZIP_MIN_BYTES:  # a list this long has a compressed form too
            vary = _LIST_VARY
            if accepts_gzip(headers.get("accept-encoding")):
                body, etag, compressed = view.gzipped(expanded), etag[:-1] + '-gzip"', True
        if etag_matches(headers.get("if-none-match"), etag):
            return 304, [("x-request-id", request_id), ("etag", etag), _CACHE_CONTROL, vary,
                         *limit_headers], b"", caller.name
        response_headers = [JSON, ("x-request-id", request_id), ("etag", etag), _CACHE_CONTROL, vary]
        if compressed:
            response_headers.append(_GZIP)
        if limit_headers:
            response_headers.extend(limit_headers)
        return 200, response_headers, body, caller.name

    def _not_found(self, model_id: str, request_id: str, limit_headers: Headers, caller_name: str) -> Answer:
        """The 404, its body remembered per id: a client that keeps asking for a model that is not there
        costs a lookup, not an error built anew (1.6 µs, measured). Bounded; forgotten when full."""
        body = self._not_found_bodies.get(model_id)
        if body is None and len(model_id) > MAX_MODEL_ID_LENGTH:  # no model's id: answered, not remembered
            body = errors.model_not_found(model_id).body()
        elif body is None:
            if len(self._not_found_bodies) >= MAX_REMEMBERED_404S:
                self._not_found_bodies.clear()
            body = self._not_found_bodies[model_id] = errors.model_not_found(model_id).body()
        return 404, [ERROR_JSON, ("x-request-id", request_id), *limit_headers], body, caller_name

    async def _delete(self, rendered: RenderedCatalog, caller: Caller, model_id: str, headers: HeaderLookup,
                      request_id: str, limit_headers: Headers) -> Answer:
        """Delete a model the caller sees, as GET shows it: one its policy hides, or shut down, is not there
        (404, as GET says); an alias is refused (409: GET shows the model it names, which this would not
        delete). `If-Match` names the model's revision (the admin API's ETag): a stale one is 412."""
        if not caller.is_admin:
            raise errors.insufficient_scope("deleting a model")
        if rendered.view(caller.policy).bodies.get(model_id) is None:
            raise errors.model_not_found(model_id)
        alias = rendered.aliases.get(model_id)
        if alias is not None:
            raise ApiError(409, f"'{model_id}' is an alias of '{alias.target}': delete the alias (DELETE "
                           f"/v1/admin/aliases/{model_id}) or the model '{alias.target}'", code="conflict")
        catalog = self.catalog_for(caller)
        try:  # the service refreshes this worker's copy after the write: read-your-writes
            revision = await precondition(headers.get("if-match"), lambda: catalog.get("model", model_id)[1])
            await asyncio.to_thread(catalog.delete, "model", model_id, revision)
        except NotFound:
            raise errors.model_not_found(model_id) from None
        except (PreconditionFailed, Conflict) as exc:  # 412 and 409, as the admin API answers them
            raise domain_error(exc) from None
        except StoreUnavailable:
            raise errors.store_unavailable() from None
        return 200, [JSON, ("x-request-id", request_id), *limit_headers], deleted_object(model_id), caller.name
