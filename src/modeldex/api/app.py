"""The ASGI application: what every request goes through, around two routers.

Request ids, the client address, the header-size limit, metrics, the access log and the last-resort 500
live here. Models routes go to the hot path (`models.py`); anything else to Starlette (`routes.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from modeldex.api import errors, paths
from modeldex.api.admin import AdminRoutes
from modeldex.api.clients import ClientAddress
from modeldex.api.models import ModelsRoutes, send_json
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

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

log = logging.getLogger("modeldex.server")
RAW_PATH_SCOPE_KEY = "modeldex.raw_path"  # decoded once per request, in _http
_ROUTE_LABELS = {"/healthz": "health", "/readyz": "ready", "/openapi.json": "openapi", "/metrics": "metrics"}


def new_request_id() -> bytes:
    """OpenAI's shape: `req_` and 32 hex digits."""
    return b"req_" + os.urandom(16).hex().encode()


def route_label(path: str) -> str:
    if path.startswith("/v1/admin/"):
        return "admin"
    return _ROUTE_LABELS.get(path, "other")


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
        self.routes: ASGIApp = build_routes_app()  # until start(): health and the OpenAPI document only
        self.cors: ASGIApp | None = None
        if settings.cors_origins:  # off by default: browsers get no cross-origin access unless configured
            from starlette.middleware.cors import CORSMiddleware

            self.cors = CORSMiddleware(self._route, allow_origins=list(settings.cors_origins),
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

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await asyncio.shield(self.limiter.buckets.close())
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _headers_too_large(self, scope: dict[str, Any]) -> bool:
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
        return size > self.settings.max_header_bytes

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        scope[RAW_PATH_SCOPE_KEY] = raw_path
        client = self.client_address(scope)
        scope["modeldex.client"] = client
        outcome = _Outcome()
        sender = outcome.tracking(send, request_id)
        try:
            if self._headers_too_large(scope):
                error = errors.headers_too_large(self.settings.max_header_bytes)
                await send_json(sender, error.status, error.body(), request_id)
            elif self.cors is not None:
                await self.cors(scope, receive, sender)
            else:
                await self._route(scope, receive, sender)
        except Exception:
            log.exception("unhandled error in request %s", request_id.decode())
            if not outcome.started:
                error = errors.server_error(request_id.decode())
                await send_json(sender, error.status, error.body(), request_id)
        finally:
            elapsed = time.perf_counter() - started
            label = scope.get("modeldex.route", "other")
            metrics.observe(label, outcome.status, elapsed)
            if self.access_log is not None:
                self.access_log.record(request_id.decode(), scope["method"], raw_path, label, outcome.status,
                                       elapsed * 1000, scope.get("modeldex.key"), client)

    async def _route(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Models routes to the hot path, the rest to Starlette. Records the route label in the scope."""
        raw_path: str = scope[RAW_PATH_SCOPE_KEY]
        route = self.models.route(raw_path) if self.models is not None else None
        if route is not None:
            assert self.models is not None
            scope["modeldex.route"] = (route[0] if route[0] == "list"
                                       else "delete" if scope["method"] == "DELETE" else "retrieve")
            await self.models.handle(scope, send, route)
            return
        normalized = paths.normalize(raw_path)
        if normalized != raw_path:
            scope["path"] = unquote(normalized)
        scope["modeldex.route"] = route_label(scope["path"])
        await self.routes(scope, receive, send)


class _Outcome:
    """What the access log and metrics need to know about the response, captured as it is sent."""

    __slots__ = ("status", "started")

    def __init__(self) -> None:
        self.status = 500
        self.started = False

    def tracking(self, send: Send, request_id: bytes) -> Send:
        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.started = True
                self.status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id))
            await send(message)

        return tracking_send


def create_app() -> ModeldexApp:
    """The factory each server worker calls; settings arrive through the environment."""
    return ModeldexApp(ServerSettings.from_env())
