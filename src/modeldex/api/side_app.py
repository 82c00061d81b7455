"""The Starlette side app: every route that is not the Models hot path (health, readiness, metrics, the
OpenAPI document, the admin API), and the OpenAI-style answers for unknown routes, wrong methods and
unexpected failures. The app (app.py) dispatches here through the ASGI bridge."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modeldex.api import errors
from modeldex.api.callers import Callers
from modeldex.api.errors import ApiError
from modeldex.api.openapi import openapi_json
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.callers import Caller, Scope
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.policy import ALL_MODELS
from modeldex.config import ServerSettings
from modeldex.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modeldex.ops.metrics import exposition

REQUEST_ID_SCOPE_KEY = "modeldex.request_id"


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def healthz(_request: Request) -> Response:
    return _json(b'{"status":"ok"}')


async def openapi(_request: Request) -> Response:
    return _json(openapi_json())


def _error_response(error: ApiError) -> Response:
    headers = dict(error.headers)
    return Response(error.body(), status_code=error.status, media_type=errors.CONTENT_TYPE, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 405:
        allowed = tuple((exc.headers or {}).get("Allow", "GET").split(", "))
        return _error_response(errors.method_not_allowed(method, path, allowed))
    if exc.status_code == 404:
        return _error_response(errors.invalid_url(method, path))
    return _error_response(ApiError(exc.status_code, exc.detail))


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc)


async def _unexpected(request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after answering, so the app's outer handler logs the traceback.
    return _error_response(errors.server_error(request.scope.get(REQUEST_ID_SCOPE_KEY, "unknown")))


RateLimitCheck = Callable[[], Awaitable[dict[str, Any]]]


def readiness(live: LiveCatalog[Any] | None, rate_limits: RateLimitCheck | None = None,
              callers: Callers | None = None) -> Route:
    """`/readyz`: 200 once the catalog is loaded and the store answers; 503 (and why) otherwise. With
    shared rate-limit buckets (Redis), also how they are: still 200 when Redis is away, since every request
    is still answered (limits are counted per process then), but `rate_limits` says `degraded`.

    Probes need no key. The catalog version served is for admin callers only: unauthenticated, it would
    tell anyone how often the catalog changes, hidden models included."""

    async def readyz(request: Request) -> Response:
        if live is None:
            return _error_response(ApiError(503, "not ready: the catalog is not loaded yet", type="server_error",
                                            code="not_ready"))
        authorization = request.headers.get("authorization")
        admin = False
        if authorization is not None and callers is not None:
            caller = await callers.caller(live.current.keys, authorization,
                                          request.scope.get("modeldex.client", "unknown"))
            request.scope["modeldex.key"] = caller.name
            admin = caller.is_admin
        if not live.ready:
            served = (f"; serving catalog version {live.version} from memory" if admin
                      else "; serving the catalog from memory")
            return _error_response(ApiError(503, f"not ready: {live.last_error}{served}", type="server_error",
                                            code="not_ready"))
        ready: dict[str, Any] = {"status": "ready", "version": live.version} if admin else {"status": "ready"}
        if rate_limits is not None:
            ready["rate_limits"] = await rate_limits()
        return _json(orjson.dumps(ready))

    return Route("/readyz", readyz, methods=["GET"])


class MetricsToken:
    """`--metrics-token` as a credential: a caller on /metrics and nowhere else."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._caller = Caller("metrics-token", Scope.READ, ALL_MODELS, "unlimited", credential="metrics_token")

    def caller(self, token: str) -> Caller | None:
        return self._caller if hmac.compare_digest(token.encode(), self._token) else None


def metrics_route(live: LiveCatalog[RenderedCatalog], callers: Callers, settings: ServerSettings) -> Route:
    """`/metrics`, for Prometheus: needs the metrics token or an admin caller, unless made public. Callers
    are resolved as on every route, so a blocked address is refused before any token is compared."""
    metrics_token = MetricsToken(settings.metrics_token) if settings.metrics_token else None

    async def metrics_endpoint(request: Request) -> Response:
        if not settings.public_metrics:
            authorization = request.headers.get("authorization")
            try:
                caller = await callers.caller(live.current.keys, authorization,
                                              request.scope.get("modeldex.client", "unknown"), also=metrics_token)
            except errors.ApiError as exc:
                if exc.status == 401 and not authorization:
                    raise errors.missing_metrics_credential() from None
                raise
            request.scope["modeldex.key"] = caller.name
            if caller.credential != "metrics_token" and not caller.is_admin:
                raise errors.insufficient_scope("reading metrics")
        return Response(await run_in_threadpool(exposition), media_type=METRICS_CONTENT_TYPE)

    return Route("/metrics", metrics_endpoint, methods=["GET"])


def build_side_app(routes: Sequence[BaseRoute] = (), live: LiveCatalog[Any] | None = None,
                   settings: ServerSettings | None = None, rate_limits: RateLimitCheck | None = None,
                   callers: Callers | None = None) -> Starlette:
    """The side app; before the catalog is loaded (no `live`), health and the OpenAPI document only."""
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            readiness(live, rate_limits, callers),
            Route("/openapi.json", openapi, methods=["GET"]),
            *routes,
        ],
        exception_handlers={HTTPException: _http_exception, ApiError: _api_error, Exception: _unexpected},
    )
    # No redirect from `/healthz/` to `/healthz`: Starlette builds its Location from the client's Host
    # header, always `http://`, with no body. A path with a trailing slash is a 404 in the envelope, as
    # `/v1/models/` is on the Models routes.
    app.router.redirect_slashes = False
    if settings is not None:
        app.state.max_body_bytes = settings.max_body_bytes
        app.state.body_timeout = settings.body_timeout
    return app
