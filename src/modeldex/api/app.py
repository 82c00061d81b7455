"""The application: what every request goes through, and the one dispatch that sends it to the Models hot
path (`model_routes.py`) or to the Starlette side app (`side_app.py`).

Request ids, the client address, the header-size limit, CORS, metrics, the access log and the last-resort
500 live here, for every route. granian serves it over RSGI (`__rsgi__`: an answer is one call to the
server); it is also an ASGI app (`__call__`), which is how the in-process tests drive it, through the
same dispatch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
from starlette.routing import BaseRoute

from modeldex.api import errors, paths
from modeldex.api.admin import AdminRoutes
from modeldex.api.admin_base import AdminEndpoints, merged
from modeldex.api.admin_identity import identity_routes
from modeldex.api.admin_routes import route_table
from modeldex.api.admin_upstreams import upstream_routes
from modeldex.api.asgi_bridge import ASGIApp, Message, asgi_scope, serve_asgi
from modeldex.api.callers import Callers
from modeldex.api.client_address import ClientAddress
from modeldex.api.cors import Cors
from modeldex.api.inference import InferenceRoutes, Served
from modeldex.api.model_routes import (
    Answer,
    HeaderLookup,
    Headers,
    LabelledAnswer,
    ModelRoutes,
    NotNow,
    error_answer,
    labelled,
    models_label,
)
from modeldex.api.render import RenderedCatalog
from modeldex.api.side_app import REQUEST_ID_SCOPE_KEY, build_side_app, metrics_route
from modeldex.api.worker_signals import stop_signals_kept
from modeldex.catalog.callers import Caller
from modeldex.catalog.errors import StoreUnavailable
from modeldex.catalog.limits import parse_limit
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.retention import parse_retention
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.config import ServerSettings
from modeldex.console.app import Console, ConsoleStore, RateLimited, SignInRefused
from modeldex.discovery.poller import Poller
from modeldex.gateway.client import Timeouts, UpstreamClient
from modeldex.gateway.downstream import AsgiDownstream, Downstream, RsgiDownstream
from modeldex.gateway.endpoints import Endpoint
from modeldex.gateway.forward import Forwarder
from modeldex.gateway.health import RouteHealth, SharedHealth
from modeldex.identity.credentials import IssuerTokens, Snapshot
from modeldex.identity.keysets import KeySets
from modeldex.ops import metrics
from modeldex.ops.access_log import MAX_PATH, AccessLog
from modeldex.ops.compaction import Compactor
from modeldex.ops.ratelimit import Buckets, FailOpen, MemoryBuckets, RateLimiter, RedisBuckets
from modeldex.ops.traffic import UNKNOWN_MODEL, SharedTraffic, Traffic, TrafficReport, report

log = logging.getLogger("modeldex.server")
_ROUTE_LABELS = {"/healthz": "health", "/readyz": "ready", "/openapi.json": "openapi", "/metrics": "metrics"}
_NO_ISSUERS: Snapshot = ({}, ())
# What the app answers itself: (status, headers, body, caller name, route label).
OwnAnswer = LabelledAnswer


def request_ids() -> Iterator[str]:
    """New request ids, one a `next()`: OpenAI's shape, `req_` and 32 hex digits of the OS's randomness, so
    ids are unique and say nothing about traffic. They are made 4,096 at a time in three C calls (random
    bytes, hex with a separator, one replace and a split), and handed out by a C iterator: no Python frame
    a request. A method taking one off a list cost 550 instructions a request, against 2,500 slicing a
    random pool and adding a prefix (callgrind); `next()` on the iterator is 17 ns where its bound
    `__next__` (a method-wrapper, whose call CPython 3.11 does not specialise) was 31 (timeit)."""

    def batch() -> list[str]:
        return ("req_" + os.urandom(16 * 4096).hex(" ", 16).replace(" ", " req_")).split(" ")

    return itertools.chain.from_iterable(iter(batch, None))


def header_bytes(headers: HeaderLookup) -> int:
    """The request's header lines' size as `--max-header-bytes` counts it: names and values, plus ": " and
    CRLF a line. Names and values joined: 0.29 µs against 0.54 for a loop over items() on granian's headers
    (bench/hotpath_profile.py); one join of both lists, 200 instructions less than two, and 6,000 less than
    items() made into a dict for the lookups (callgrind). granian's keys() lists a repeated name once and
    values() every value: when they differ in number, the lines are counted one by one."""
    names, values = headers.keys(), headers.values()
    if len(values) != len(names):
        return sum(len(name) + len(value) + 4 for name, value in headers.items())
    return len("".join(names + values)) + 4 * len(values)


def route_label(path: str) -> str:
    if path.startswith("/v1/admin/"):
        return "admin"
    if path == "/console" or path.startswith("/console/"):
        return "console"
    return _ROUTE_LABELS.get(path, "other")


class Deferred:
    """A Models request whose answer needs a wait (a caller to resolve, a rate limit, a delete)."""

    __slots__ = ("not_now", "route")

    def __init__(self, route: tuple[str, str | None], not_now: NotNow) -> None:
        self.route = route
        self.not_now = not_now


class Inference:
    """A request to an inference route (`POST /v1/chat/completions`, ...): the gateway answers it."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint


class AsgiHeaders:
    """ASGI's header pairs with the lookups the dispatch uses (granian's RSGI headers have the same)."""

    __slots__ = ("_first", "_pairs")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._pairs = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]
        self._first: dict[str, str] = {}
        for name, value in self._pairs:
            self._first.setdefault(name, value)

    def get(self, name: str, default: None = None) -> str | None:
        return self._first.get(name, default)

    def items(self) -> list[tuple[str, str]]:
        return self._pairs

    def keys(self) -> list[str]:
        return [name for name, _ in self._pairs]

    def values(self) -> list[str]:
        return [value for _, value in self._pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, name: object) -> bool:
        return name in self._first


class ModeldexApp:
    def __init__(self, settings: ServerSettings, store: ConsoleStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self.live: LiveCatalog[RenderedCatalog] | None = None
        self.models: ModelRoutes | None = None
        self.remembered_lane: ModelRoutes | None = None  # the Models routes, where __rsgi__ answers them first
        self.inference: InferenceRoutes | None = None
        self.shared_health: SharedHealth | None = None
        self.upstream_client = UpstreamClient(Timeouts(
            connect=settings.upstream_connect_timeout, first_byte=settings.upstream_first_byte_timeout,
            idle=settings.upstream_idle_timeout, total=settings.upstream_total_timeout))
        self.poller: Poller | None = None
        self.compactor: Compactor | None = None
        self.client_address = ClientAddress(settings.forwarded_allow_ips)
        buckets: Buckets = MemoryBuckets()
        self.shared_buckets: FailOpen | None = None
        if settings.redis_url:  # never a reason to fail a request: counted here while Redis is away
            buckets = self.shared_buckets = FailOpen(RedisBuckets(settings.redis_url, timeout=settings.redis_timeout))
        self.limiter = RateLimiter(buckets, parse_limit(settings.rate_limit), parse_limit(settings.auth_failure_limit))
        # Tokens from the identity providers of the catalog version served, tried after the key table.
        self.tokens = IssuerTokens(self._issuer_snapshot, KeySets(
            min_interval=min(30.0, settings.jwks_max_age), max_interval=settings.jwks_max_age,
            unknown_kid_interval=settings.jwks_min_refresh))
        self.callers = Callers(self.limiter, other_credentials=(self.tokens,))
        self.access_log = AccessLog(json=settings.log_format == "json") if settings.access_log else None
        self.traffic = Traffic()  # inference requests over the last hour, for the console
        self.shared_traffic: SharedTraffic | None = None
        self.request_ids = request_ids()
        self._max_header_bytes = settings.max_header_bytes
        self.side_app: ASGIApp = build_side_app()  # until start(): health and the OpenAPI document only
        # Off by default: browsers get no cross-origin access unless configured.
        self.cors = Cors(settings.cors_origins) if settings.cors_origins else None

    def start(self) -> None:
        """Open the store and load the first view; then keep it fresh in the background."""
        if self._store is None:
            from modeldex.store import open_store  # the composition root: the only place a store is chosen

            self._store = open_store(self.settings.database_url, seed=seed_models(),
                                     timeout_s=self.settings.database_timeout)
        store = self._store
        self.live = LiveCatalog(store, RenderedCatalog, interval=self.settings.refresh_interval,
                                on_check=self._report_catalog)
        self.live.start()
        self._report_catalog()
        metrics.start_flushing()
        metrics.add_collector("upstreams", lambda registry: registry.register(
            metrics.UpstreamCollector(lambda: store.upstream_health(time.time()))))
        self.poller = Poller(store, on_change=self.live.refresh)  # upstreams: off the request path
        self.poller.start()
        kept = parse_retention(self.settings.change_retention)
        if kept is not None:
            self.compactor = Compactor(store, kept)
            self.compactor.start()
        self.models = ModelRoutes(self.live, self.callers, self.catalog_for,
                                  metadata_by_default=self.settings.metadata)
        # With CORS on, remembered answers take the allowed-origin headers too: through _answer().
        self.remembered_lane = self.models if self.cors is None else None
        self.route_health = RouteHealth()
        directory = os.environ.get(metrics.MULTIPROC_ENV)  # `serve`'s per-run directory, shared by its workers
        self.shared_health = SharedHealth(self.route_health, directory) if directory else None
        if self.shared_health is not None:
            self.shared_health.start()
        self.shared_traffic = SharedTraffic(self.traffic, directory) if directory else None
        if self.shared_traffic is not None:
            self.shared_traffic.start()
        inference_health = self.shared_health.report if self.shared_health is not None else self.route_health.report
        forwarder = Forwarder(self.upstream_client, self.route_health, attempts=self.settings.upstream_attempts)
        self.inference = InferenceRoutes(self.live, self.callers, forwarder, self.settings.max_inference_body_bytes,
                                         self.settings.body_timeout)
        endpoints = AdminEndpoints(self.live, self.callers, self.catalog_for)
        admin = endpoints.routes(merged(upstream_routes(store, inference_health), route_table(),
                                        identity_routes(self.tokens), AdminRoutes().table()))
        routes: list[BaseRoute] = [metrics_route(self.live, self.callers, self.settings), *admin]
        if self.settings.console:
            routes += Console(self.live, self._console_caller, self.catalog_for, store, tls=self.settings.tls,
                              gateway_health=inference_health, traffic=self.traffic_report,
                              charge=self._console_charge).routes()
        rate_limits = self.shared_buckets.check if self.shared_buckets is not None else None
        self.side_app = build_side_app(routes, self.live, self.settings, rate_limits, self.callers)
        log.info("serving catalog version %d (%d models)", self.live.version, len(self.live.current.models))

    def catalog_for(self, caller: Caller) -> Catalog:
        """The catalog service acting for `caller`; after a write, this worker serves it at once."""
        assert self._store is not None
        return Catalog(self._store, actor=caller.actor, after_write=self._refresh)

    async def _console_caller(self, token: str, client: str) -> Caller:
        """Who a credential given to the console's sign-in stands for: the same resolution as every route,
        failed attempts counted against the address alike."""
        assert self.live is not None
        try:
            return await self.callers.caller(self.live.current.keys, f"Bearer {token}", client)
        except errors.ApiError as exc:
            raise SignInRefused(exc.message, exc.status, exc.headers) from None

    async def _console_charge(self, caller: Caller) -> None:
        """A console page counts against the signed-in key's rate limit, as its admin API calls do."""
        if self.callers.limited(caller):
            try:
                await self.callers.charge(caller)
            except errors.ApiError as exc:
                raise RateLimited(exc.message) from None

    def traffic_report(self) -> TrafficReport:
        """Inference traffic over the last hour, every worker's added up."""
        if self.shared_traffic is not None:
            rows, workers = self.shared_traffic.rows()
            return report(rows, workers=workers)
        return report(self.traffic.snapshot())

    def _refresh(self) -> None:
        if self.live is not None:
            with contextlib.suppress(StoreUnavailable):  # the refresher catches up later
                self.live.refresh()

    def _report_catalog(self) -> None:
        live = self.live
        if live is not None:
            metrics.catalog_state(len(live.current.models), live.version, live.confirmed_at, live.ready)
            self.tokens.prefetch()  # new issuers' keys, fetched before their first token

    def _issuer_snapshot(self) -> Snapshot:
        live = self.live
        if live is None:
            return _NO_ISSUERS
        current = live.current
        return current.issuers, current.groups

    def stop(self) -> None:
        self.tokens.close()
        if self.shared_health is not None:
            self.shared_health.stop()
        if self.shared_traffic is not None:
            self.shared_traffic.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.compactor is not None:
            self.compactor.stop()
        if self.live is not None:
            self.live.stop()
        if self._store is not None:
            self._store.close()
        if self.access_log is not None:
            self.access_log.close()

    # --- the dispatch ----------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, query: str, headers: HeaderLookup, client: str,
                request_id: str, headers_fit: bool) -> OwnAnswer | Deferred | Inference | None:
        """The answer to a request the app gives itself (the Models routes, CORS preflights, oversized
        headers: `headers_fit` is False); `Deferred` when it needs to wait for something (`_answer_deferred`),
        None when the side app answers it. `path` is decoded, dot segments resolved. Never suspends."""
        cors = self.cors
        if not headers_fit:
            status, response_headers, body, _ = error_answer(
                errors.headers_too_large(self.settings.max_header_bytes), request_id)
            if cors is not None:  # so a browser shows the 431's message, not a bare network error
                response_headers.extend(cors.response_headers(headers))
            return status, response_headers, body, None, "other"
        if cors is not None and cors.is_preflight(method, headers):
            status, response_headers, body = cors.preflight(headers)
            response_headers.append(("x-request-id", request_id))
            return status, response_headers, body, None, route_label(path)
        models = self.models
        if models is None:
            return None
        ready = models.remembered(method, path, query, headers, client)
        if ready is not None:
            remembered = labelled(ready, request_id)
            if cors is not None:
                remembered[1].extend(cors.response_headers(headers))
            return remembered
        route = models.route(path)
        if route is None:
            return self._inference_route(method, path)
        answer = models.answer_now(method, route, path, query, headers, client, request_id)
        if isinstance(answer, NotNow):
            return Deferred(route, answer)
        if cors is None:
            return (*answer, models_label(route[0], method))
        return self._own(answer, route, method, headers)

    # --- the inference gateway: its own branch, off the Models path ----------------------------------------

    def _inference_route(self, method: str, path: str) -> Inference | None:
        """POSTs to the inference routes; other methods there are not ours (OpenAI's `GET /v1/chat/completions`
        lists stored completions): the side app's 404."""
        inference = self.inference
        if inference is None or method != "POST":
            return None
        endpoint = inference.route(path)
        return None if endpoint is None else Inference(endpoint)

    async def _infer(self, call: Inference, method: str, headers: HeaderLookup, client: str, request_id: str,
                     started: float, downstream: Downstream) -> Served:
        assert self.inference is not None
        authorization = headers.get("authorization")
        if authorization is None and call.endpoint.protocol == "anthropic":
            api_key = headers.get("x-api-key")  # how Anthropic's SDKs send a key
            authorization = f"Bearer {api_key}" if api_key else None
        cors = self.cors.response_headers(headers) if self.cors is not None else []
        return await self.inference.serve(call.endpoint, method, list(headers.items()), authorization, client,
                                          request_id, started, downstream, cors)

    def _inference_finished(self, request_id: str, path: str, label: str, served: Served, started: float,
                            client: str) -> None:
        elapsed = time.perf_counter() - started
        metrics.observe(label, served.status, elapsed)
        outcome = served.outcome
        model = served.model
        if model is not None and outcome is None and self.live is not None \
                and model not in self.live.current.models and model not in self.live.current.aliases:
            # Refused before it reached an upstream, naming no model of the catalog: a client's string, of
            # any length and number (a million 1 MB names held for the hour, seen), counted under one name.
            model = UNKNOWN_MODEL
        self.traffic.record(model, served.caller, served.status,
                            outcome.prompt_tokens if outcome is not None else None,
                            outcome.completion_tokens if outcome is not None else None)
        if self.access_log is not None:
            fields: dict[str, object] = {"model": served.model[:MAX_PATH] if served.model else None}
            if outcome is not None:
                first_byte = None if outcome.first_byte_ms is None else round(outcome.first_byte_ms, 2)
                fields.update(upstream=outcome.upstream, upstream_model=outcome.upstream_model,
                              attempts=outcome.attempts, ttfb_ms=first_byte,
                              prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                              error=outcome.error)
            self.access_log.record_inference(request_id, path, served.status, elapsed * 1000, served.caller,
                                             client, fields)

    def _caller_name(self, headers: HeaderLookup) -> str | None:
        """Whose valid key a request the side app answered 404 carried (unknown routes, such as inference
        routes modeldex does not serve): named in the access log. Nothing is counted or refused here."""
        if self.live is None:
            return None
        identified = self.callers.identify(self.live.current.keys, headers.get("authorization"))
        return identified.name if isinstance(identified, Caller) else None

    async def _answer_deferred(self, deferred: Deferred, method: str, query: str, headers: HeaderLookup,
                               client: str, request_id: str) -> OwnAnswer:
        assert self.models is not None
        answer = await self.models.answer(method, deferred.route, query, headers, client, request_id,
                                          deferred.not_now)
        return self._own(answer, deferred.route, method, headers)

    def _own(self, answer: Answer, route: tuple[str, str | None], method: str, headers: HeaderLookup
             ) -> OwnAnswer:
        status, response_headers, body, caller_name = answer
        if self.cors is not None:
            response_headers.extend(self.cors.response_headers(headers))
        return status, response_headers, body, caller_name, models_label(route[0], method)

    def _side_scope_extras(self, request_id: str, client: str, label: str) -> dict[str, Any]:
        return {REQUEST_ID_SCOPE_KEY: request_id, "modeldex.client": client, "modeldex.route": label}

    def _finished(self, request_id: str, method: str, path: str, label: str, status: int, started: float,
                  caller_name: str | None, client: str) -> None:
        ended = time.perf_counter()
        metrics.observe(label, status, ended - started)
        if self.access_log is not None:
            self.access_log.record(request_id, method, path, label, status, started, ended, caller_name, client)

    # --- RSGI: granian calls these -------------------------------------------------------------------

    def __rsgi_init__(self, loop: Any) -> None:
        try:
            with stop_signals_kept(loop):
                self.start()
            if self.access_log is not None:
                self.access_log.format_on(loop)
            if not loop.is_running():
                # The admin routes run their store calls in anyio's worker threads; the first call imports
                # anyio's asyncio backend and starts a thread. Done here, not on the first write: that took
                # 0.46 s on an idle 2-core machine and 3 s under load, longer than replicas may take to agree.
                loop.run_until_complete(anyio.to_thread.run_sync(int))
        except Exception:
            log.exception("startup failed")
            raise

    def __rsgi_del__(self, loop: Any) -> None:
        self.stop()
        try:  # the loop has stopped serving by now; it still runs the Redis client's goodbye
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(self.limiter.buckets.close())
                loop.run_until_complete(self.upstream_client.close())
        except Exception:
            log.warning("closing the rate-limit store failed", exc_info=True)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        # No `scope.proto` check (a getter call a request): `serve` starts granian with websockets off, so
        # every scope is HTTP. A websocket scope, from a granian started otherwise, ends in `except`.
        started = time.perf_counter()
        request_id = next(self.request_ids)
        method, path, headers, peer = scope.method, scope.path, scope.headers, scope.client
        known = self.client_address.known_hosts
        client = (known.get(peer) if known is not None else None) or self.client_address(peer, headers)
        status, label, caller_name, answered, logged = 500, "other", None, False, False
        try:
            headers_fit = header_bytes(headers) <= self._max_header_bytes
            lane = self.remembered_lane
            # No `"/." not in path` here: remembered answers are filed under resolved paths, which hold no
            # dot segment, so a path with one is never found and goes on to `paths.normalize` below.
            if lane is not None and headers_fit:
                # A request answered before (most of the hot path's), answered here rather than through
                # _answer(), _finished() and metrics.observe() (labelled() and _finished() written out):
                # modeldex's own instructions for a retrieve went from 33,850 to 30,570 (bench/instructions.py).
                ready = lane.remembered(method, path, scope.query_string, headers, client)
                if ready is not None:
                    status, content_type, tail, body, caller_name, label, record_duration, log_parts = ready
                    protocol.response_bytes(status, [content_type, ("x-request-id", request_id), *tail], body)
                    answered = logged = True
                    ended = time.perf_counter()
                    record_duration(ended - started)
                    if self.access_log is not None:  # the method is GET or HEAD: remembered() takes no other
                        self.access_log.record_parts(request_id, method, log_parts, started, ended, client)
                    return
            normalized = paths.normalize(path) if "/." in path else path  # no call for the usual path
            own = self._answer(method, normalized, scope.query_string, headers, client, request_id, headers_fit)
            if own.__class__ is not tuple:  # an answer here and now is the common case: asked first
                if isinstance(own, Inference):
                    label = own.endpoint.label
                    served = await self._infer(own, method, headers, client, request_id, started,
                                               RsgiDownstream(protocol, headers.get("content-length")))
                    answered = logged = True
                    self._inference_finished(request_id, path, label, served, started, client)
                    return
                if isinstance(own, Deferred):
                    own = await self._answer_deferred(own, method, scope.query_string, headers, client,
                                                      request_id)
            if own is not None:
                status, response_headers, body, caller_name, label = own
                if status == 304:
                    protocol.response_empty(304, response_headers)
                else:
                    protocol.response_bytes(status, response_headers, body)
                answered = True
            else:
                label = route_label(normalized)
                asgi = asgi_scope(scope, normalized, client, self._side_scope_extras(request_id, client, label))
                cors_headers = self.cors.response_headers(headers) if self.cors is not None else []
                exchange = await serve_asgi(self.side_app, asgi, protocol, request_id, cors_headers)
                answered = exchange.status is not None
                status = exchange.status or 500
                label, caller_name = asgi["modeldex.route"], asgi.get("modeldex.key")
                if caller_name is None and status == 404:
                    caller_name = self._caller_name(headers)
                if not answered:
                    raise RuntimeError("the side app returned without answering")
        except Exception:
            if scope.proto != "http":
                logged = True  # a websocket: not ours, and no request to log
                return
            log.exception("unhandled error in request %s", request_id)
            if not answered:
                status, response_headers, body, _ = error_answer(errors.server_error(request_id), request_id)
                protocol.response_bytes(status, response_headers, body)
        finally:
            if not logged:
                self._finished(request_id, method, path, label, status, started, caller_name, client)

    # --- ASGI: the same dispatch, for in-process tests (httpx.ASGITransport) and ASGI servers ----------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(self, receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = next(self.request_ids)
        method, path = scope["method"], scope["path"]
        headers = AsgiHeaders(scope["headers"])
        host, port = scope.get("client") or ("unknown", 0)
        client = self.client_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", headers)
        status, label, caller_name, answered, logged = 500, "other", None, False, False

        async def send_answer(answer_status: int, answer_headers: Headers, body: bytes) -> None:
            nonlocal answered
            await send({"type": "http.response.start", "status": answer_status,
                        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer_headers]})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            answered = True

        try:
            normalized = paths.normalize(path)
            query = scope.get("query_string", b"").decode("latin-1")
            own = self._answer(method, normalized, query, headers, client, request_id,
                               header_bytes(headers) <= self._max_header_bytes)
            if isinstance(own, Inference):
                label = own.endpoint.label
                served = await self._infer(own, method, headers, client, request_id, started,
                                           AsgiDownstream(receive, send))
                answered = logged = True
                self._inference_finished(request_id, path, label, served, started, client)
                return
            if isinstance(own, Deferred):
                own = await self._answer_deferred(own, method, query, headers, client, request_id)
            if own is not None:
                status, response_headers, body, caller_name, label = own
                await send_answer(status, response_headers, body)
            else:
                label = route_label(normalized)
                side_scope = {**scope, "path": normalized, "client": (client, 0),
                              **self._side_scope_extras(request_id, client, label)}
                extra = [(b"x-request-id", request_id.encode())]
                if self.cors is not None:
                    extra += [(n.encode(), v.encode()) for n, v in self.cors.response_headers(headers)]

                async def side_send(message: Message) -> None:
                    nonlocal status, answered
                    if message["type"] == "http.response.start":
                        status, answered = message["status"], True
                        names = {name.lower() for name, _ in message.get("headers", [])}
                        added = [(n, v) for n, v in extra if n != b"x-request-id" or n not in names]
                        message = {**message, "headers": [*message.get("headers", []), *added]}
                    await send(message)

                await self.side_app(side_scope, receive, side_send)
                label, caller_name = side_scope["modeldex.route"], side_scope.get("modeldex.key")
                if caller_name is None and status == 404:
                    caller_name = self._caller_name(headers)
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            if not answered:
                status, response_headers, body, _ = error_answer(errors.server_error(request_id), request_id)
                await send_answer(status, response_headers, body)
        finally:
            if not logged:
                self._finished(request_id, method, path, label, status, started, caller_name, client)


async def _lifespan(app: ModeldexApp, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                app.start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            app.stop()
            await app.upstream_client.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app() -> ModeldexApp:
    """The factory each server worker calls; settings arrive through the environment."""
    return ModeldexApp(ServerSettings.from_env())
