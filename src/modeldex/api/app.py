"""The application granian serves (RSGI): what every request goes through, around two routers.

Request ids, the client address, the header-size limit, metrics, the access log and the last-resort 500
live here. Models routes go to the hot path (`models.py`), answered in one call to the server; anything
else to Starlette (`routes.py`) through the ASGI bridge (`bridge.py`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from modeldex.api import errors, paths
from modeldex.api.admin import AdminRoutes
from modeldex.api.bridge import ASGIApp, Message, asgi_scope, serve_asgi
from modeldex.api.clients import ClientAddress
from modeldex.api.models import ModelsRoutes, error_answer
from modeldex.api.render import RenderedCatalog
from modeldex.api.routes import REQUEST_ID_SCOPE_KEY, build_routes_app
from modeldex.catalog.live import LiveCatalog
from modeldex.discovery.poller import Poller
from modeldex.catalog.seed import seed_models
from modeldex.config import ServerSettings
from modeldex.ops import metrics
from modeldex.ops.access_log import AccessLog
from modeldex.ops.ratelimit import MemoryBuckets, RateLimiter, RedisBuckets, parse_limit
from modeldex.store import CatalogStore, open_store

log = logging.getLogger("modeldex.server")
HEADERS_SCOPE_KEY = "modeldex.headers"  # the RSGI headers, for the Models routes behind CORS
_ROUTE_LABELS = {"/healthz": "health", "/readyz": "ready", "/openapi.json": "openapi", "/metrics": "metrics"}


class RequestIds:
    """OpenAI's shape, `req_` and 32 hex digits: a random prefix per process and 64 random bits per
    request from a generator seeded by the OS, so ids are unique and say nothing about traffic, without a
    system call per request."""

    def __init__(self) -> None:
        self._prefix = "req_" + os.urandom(8).hex()
        self._bits = random.Random(os.urandom(32)).getrandbits

    def __call__(self) -> str:
        return f"{self._prefix}{self._bits(64):016x}"


def route_label(path: str) -> str:
    if path.startswith("/v1/admin/"):
        return "admin"
    return _ROUTE_LABELS.get(path, "other")


def models_label(kind: str, method: str) -> str:
    return kind if kind == "list" else "delete" if method == "DELETE" else "retrieve"


class ModeldexApp:
    def __init__(self, settings: ServerSettings, store: CatalogStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self.live: LiveCatalog[RenderedCatalog] | None = None
        self.models: ModelsRoutes | None = None
        self.poller: Poller | None = None
        self.client_address = ClientAddress(settings.forwarded_allow_ips)
        buckets = RedisBuckets(settings.redis_url) if settings.redis_url else MemoryBuckets()
        self.limiter = RateLimiter(buckets, parse_limit(settings.rate_limit), parse_limit(settings.auth_failure_limit))
        self.access_log = AccessLog(json=settings.log_format == "json") if settings.access_log else None
        self.request_ids = RequestIds()
        self.routes: ASGIApp = build_routes_app()  # until start(): health and the OpenAPI document only
        self.cors: ASGIApp | None = None
        if settings.cors_origins:  # off by default: browsers get no cross-origin access unless configured
            from starlette.middleware.cors import CORSMiddleware

            self.cors = CORSMiddleware(self._asgi_route, allow_origins=list(settings.cors_origins),
                                       allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE"],
                                       allow_headers=["authorization", "content-type", "if-match", "if-none-match"],
                                       expose_headers=["x-request-id", "etag", "x-ratelimit-limit-requests",
                                                       "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                                                       "retry-after", "retry-after-ms"])

    def start(self) -> None:
        """Open the store and load the first view; then keep it fresh in the background."""
        if self._store is None:
            self._store = open_store(self.settings.database_url, seed=seed_models())
        self.live = LiveCatalog(self._store, RenderedCatalog, interval=self.settings.refresh_interval,
                                on_check=self._report_catalog)
        self.live.start()
        self._report_catalog()
        metrics.start_flushing()
        store = self._store
        metrics.add_collector(lambda registry: registry.register(
            metrics.UpstreamCollector(lambda: store.upstream_health(time.time()))))
        self.poller = Poller(self._store, on_change=self.live.refresh)  # upstreams: off the request path
        self.poller.start()
        self.models = ModelsRoutes(self.live, self._store, self.limiter, metadata_by_default=self.settings.metadata)
        admin = AdminRoutes(self.live, self._store, self.limiter)
        self.routes = build_routes_app(admin.routes(), self.live, self.settings)
        log.info("serving catalog version %d (%d models)", self.live.version, len(self.live.current.models))

    def _report_catalog(self) -> None:
        live = self.live
        if live is not None:
            metrics.catalog_state(len(live.current.models), live.version, live.confirmed_at, live.ready)

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        if self.live is not None:
            self.live.stop()
        if self._store is not None:
            self._store.close()
        if self.access_log is not None:
            self.access_log.close()

    # --- RSGI: granian calls these -------------------------------------------------------------------

    def __rsgi_init__(self, _loop: Any) -> None:
        try:
            self.start()
        except Exception:
            log.exception("startup failed")
            raise

    def __rsgi_del__(self, loop: Any) -> None:
        self.stop()
        try:  # the loop has stopped serving by now; it still runs the Redis client's goodbye
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(self.limiter.buckets.close())
        except Exception:
            log.warning("closing the rate-limit store failed", exc_info=True)

    def _headers_too_large(self, headers: Any) -> bool:
        size = 0
        for name, value in headers.items():
            size += len(name) + len(value) + 4
        return size > self.settings.max_header_bytes

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return  # no websockets here
        started = time.perf_counter()
        request_id = self.request_ids()
        method, path, headers = scope.method, scope.path, scope.headers
        client = self.client_address(scope.client, headers)
        status, label, key_name, answered = 500, "other", None, False
        try:
            normalized = paths.normalize(path)
            route = self.models.route(normalized) if self.models is not None and self.cors is None else None
            if self._headers_too_large(headers):
                status, response_headers, body, _ = error_answer(
                    errors.headers_too_large(self.settings.max_header_bytes), request_id)
                protocol.response_bytes(status, response_headers, body)
                answered = True
            elif route is not None:
                assert self.models is not None
                label = models_label(route[0], method)
                status, response_headers, body, key_name = await self.models.answer(
                    method, route, path, scope.query_string, headers, client, request_id)
                if status == 304:
                    protocol.response_empty(304, response_headers)
                else:
                    protocol.response_bytes(status, response_headers, body)
                answered = True
            else:
                label = route_label(normalized)
                extra = {REQUEST_ID_SCOPE_KEY: request_id, "modeldex.client": client, HEADERS_SCOPE_KEY: headers,
                         "modeldex.route": label}
                asgi = asgi_scope(scope, normalized, client, extra)
                exchange = await serve_asgi(self.cors or self.routes, asgi, protocol, request_id)
                answered = exchange.status is not None
                status = exchange.status or 500
                label, key_name = asgi["modeldex.route"], asgi.get("modeldex.key")
                if not answered:
                    raise RuntimeError("the ASGI app returned without answering")
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            if not answered:
                status, response_headers, body, _ = error_answer(errors.server_error(request_id), request_id)
                protocol.response_bytes(status, response_headers, body)
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe(label, status, elapsed)
            if self.access_log is not None:
                self.access_log.record(request_id, method, path, label, status, elapsed * 1000, key_name, client)

    async def _asgi_route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Behind CORS (which is ASGI middleware): Models routes to the hot path, the rest to Starlette."""
        route = self.models.route(scope["path"]) if self.models is not None else None
        if route is None:
            await self.routes(scope, receive, send)
            return
        assert self.models is not None
        scope["modeldex.route"] = models_label(route[0], scope["method"])
        status, headers, body, scope["modeldex.key"] = await self.models.answer(
            scope["method"], route, scope["path"], scope["query_string"].decode("latin-1"),
            scope[HEADERS_SCOPE_KEY], scope["modeldex.client"], scope[REQUEST_ID_SCOPE_KEY])
        start: Message = {"type": "http.response.start", "status": status,
                          "headers": [(name.encode(), value.encode("latin-1")) for name, value in headers]}
        await send(start)
        await send({"type": "http.response.body", "body": body})


def create_app() -> ModeldexApp:
    """The factory each server worker calls; settings arrive through the environment."""
    return ModeldexApp(ServerSettings.from_env())
