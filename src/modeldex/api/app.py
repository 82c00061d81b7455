"""The ASGI application: request ids, the access log and the last-resort 500, around two routers.

Models routes go to the hot path (`models.py`); anything else to the Starlette app (`routes.py`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from modeldex.api import errors, paths
from modeldex.api.admin import AdminRoutes
from modeldex.api.models import ModelsRoutes, send_json
from modeldex.api.render import RenderedCatalog
from modeldex.api.routes import REQUEST_ID_SCOPE_KEY, build_routes_app
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.seed import seed_models
from modeldex.config import ServerSettings
from modeldex.logs import ACCESS_LOGGER
from modeldex.store import CatalogStore, open_store

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("modeldex.server")
access_log = logging.getLogger(ACCESS_LOGGER)
MAX_LOGGED_PATH = 256


def new_request_id() -> bytes:
    """OpenAI's shape: `req_` and 32 hex digits."""
    return b"req_" + os.urandom(16).hex().encode()


class ModeldexApp:
    def __init__(self, settings: ServerSettings, store: CatalogStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self.live: LiveCatalog[RenderedCatalog] | None = None
        self.models: ModelsRoutes | None = None
        self.routes = build_routes_app()  # until start(): health and the OpenAPI document only

    def start(self) -> None:
        """Open the store and load the first view; then keep it fresh in the background."""
        if self._store is None:
            self._store = open_store(self.settings.database_url, seed=seed_models())
        self.live = LiveCatalog(self._store, RenderedCatalog, interval=self.settings.refresh_interval)
        self.live.start()
        self.models = ModelsRoutes(self.live, self._store, metadata_by_default=self.settings.metadata)
        self.routes = build_routes_app(AdminRoutes(self.live, self._store).routes(), self.live)
        log.info("serving catalog version %d (%d models)", self.live.version,
                 len(self.live.current.models))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
        if self._store is not None:
            self._store.close()

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
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        status, key_name = 500, None
        response_started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        try:
            route = self.models.route(raw_path) if self.models is not None else None
            if route is not None:
                assert self.models is not None
                status, key_name = await self.models.handle(scope, send, request_id, route)
            else:
                normalized = paths.normalize(raw_path)
                if normalized != raw_path:
                    scope["path"] = unquote(normalized)
                scope[REQUEST_ID_SCOPE_KEY] = request_id.decode()
                await self.routes(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in request %s", request_id.decode())
            if not response_started:
                error = errors.server_error(request_id.decode())
                await send_json(send, error.status, error.body(), request_id)
                status = 500
        finally:
            if self.settings.access_log:
                elapsed_ms = (time.perf_counter() - started) * 1000
                access_log.info(
                    "%s %s %s %d %.2fms key=%s",
                    request_id.decode(), scope["method"], raw_path[:MAX_LOGGED_PATH], status, elapsed_ms,
                    key_name or "-",
                )


def create_app() -> ModeldexApp:
    """The factory each server worker calls; settings arrive through the environment."""
    return ModeldexApp(ServerSettings.from_env())
