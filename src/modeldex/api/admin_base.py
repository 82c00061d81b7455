"""What every admin route shares: the admin caller, the catalog acting for it, JSON in and out, and
domain errors as API errors. Admin routes (admin.py, admin_upstreams.py) are built on `AdminEndpoints`.

Admin callers only. Entities carry a revision: reads answer it as an `ETag`, writes honour `If-Match` and
answer 412 when it is stale, so two operators never silently overwrite each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modeldex.api import errors
from modeldex.api.callers import Callers
from modeldex.api.errors import ApiError
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.callers import Caller
from modeldex.catalog.errors import (
    AlreadyExists,
    CatalogError,
    Conflict,
    InvalidInput,
    NotFound,
    PlanChanged,
    PreconditionFailed,
    StoreUnavailable,
)
from modeldex.catalog.live import LiveCatalog
from modeldex.catalog.service import Catalog
from modeldex.config import ServerSettings
from modeldex.gateway.downstream import BodyRefused, declared_length, read_chunks

MAX_BODY_BYTES = 4 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]
Operation = Callable[[Request, Catalog], Awaitable[Response]]
# Admin routes by path (in matching order), then by method. One Starlette route per path, so a wrong
# method's 405 lists every method the path has, not just those of the first route that matched.
RouteTable = dict[str, dict[str, Operation]]


def json_response(data: Any, status: int = 200, etag: int | None = None) -> Response:
    headers = {"cache-control": "no-store"}
    if etag is not None:
        headers["etag"] = f'"{etag}"'
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def raw_json_response(body: bytes, status: int = 200) -> Response:
    """A JSON answer already serialized (off the event loop, when it is big)."""
    return Response(body, status_code=status, media_type="application/json", headers={"cache-control": "no-store"})


def domain_error(exc: CatalogError) -> ApiError:
    if isinstance(exc, InvalidInput):
        return ApiError(400, exc.message, param=exc.field, code="invalid_value")
    if isinstance(exc, NotFound):
        code = "model_not_found" if exc.kind == "model" else f"{exc.kind}_not_found"
        return ApiError(404, str(exc), param="model" if exc.kind == "model" else None, code=code)
    if isinstance(exc, AlreadyExists):
        return ApiError(409, str(exc), code="already_exists")
    if isinstance(exc, PreconditionFailed):
        return ApiError(412, str(exc), code="precondition_failed")
    if isinstance(exc, PlanChanged):
        return ApiError(412, str(exc), code="plan_changed")
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc), code="conflict")
    return ApiError(400, str(exc))


NO_REVISION = -1  # what an If-Match naming no revision is taken as: no entity is ever at it


def revisions_named(value: str | None) -> tuple[int, ...] | None:
    """The revisions an `If-Match` value names, in order (RFC 9110 allows a list); None when absent or `*`.
    A tag that is not a revision names none."""
    if value is None or value.strip() == "*":
        return None
    named = []
    for tag in value.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isascii() and tag.isdigit():
            named.append(int(tag))
    return tuple(named)


async def precondition(value: str | None, current: Callable[[], int]) -> int | None:
    """The revision a write is made conditional on, from an `If-Match` value: the one it names; of several,
    the current one (`current()`, read first) when it is among them: the write then checks it still is."""
    named = revisions_named(value)
    if named is None:
        return None
    if len(named) > 1:
        revision = await run_in_threadpool(current)
        if revision in named:
            return revision
    return named[0] if named else NO_REVISION


async def if_match(request: Request, current: Callable[[], int]) -> int | None:
    """`precondition` for the request's `If-Match` header."""
    return await precondition(request.headers.get("if-match"), current)


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it exceeds the server's limit (before it is all read), 408
    when it stalls, 400 when it ends early (a write cut short is not applied)."""
    limit = getattr(request.app.state, "max_body_bytes", MAX_BODY_BYTES)
    idle_timeout = getattr(request.app.state, "body_timeout", ServerSettings.body_timeout)
    try:
        return await read_chunks(request.stream(), limit, declared_length(request.headers.get("content-length")),
                                 idle_timeout)
    except BodyRefused as refusal:
        raise errors.body_refused(refusal, limit, idle_timeout) from None


async def json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


def with_revision(document: dict[str, Any], revision: int) -> dict[str, Any]:
    return {**document, "revision": revision}


def merged(*tables: RouteTable) -> RouteTable:
    """The tables as one; where two give a path the same method, the first wins."""
    result: RouteTable = {}
    for table in tables:
        for path, operations in table.items():
            for method, operation in operations.items():
                result.setdefault(path, {}).setdefault(method, operation)
    return result


class AdminEndpoints:
    """Makes admin route handlers: resolve the caller (admin scope only), charge its rate limit, run the
    operation on the catalog acting for it, and answer domain errors in the OpenAI envelope."""

    def __init__(self, live: LiveCatalog[RenderedCatalog], callers: Callers,
                 catalog_for: Callable[[Caller], Catalog]) -> None:
        self.live = live
        self.callers = callers
        self.catalog_for = catalog_for

    async def admin(self, request: Request) -> tuple[Caller, list[tuple[str, str]]]:
        """The admin caller of the request, and the rate-limit headers its answer carries. Leaves the
        caller's name in the scope for the access log."""
        caller = await self.callers.caller(self.live.current.keys, request.headers.get("authorization"),
                                           request.scope.get("modeldex.client", "unknown"))
        request.scope["modeldex.key"] = caller.name
        limit_headers = await self.callers.charge(caller) if self.callers.limited(caller) else []
        if not caller.is_admin:
            raise errors.insufficient_scope("the admin API")
        return caller, limit_headers

    def endpoint(self, operation: Operation) -> Handler:
        """A handler for `operation`; the catalog it gets refreshes this worker after a write, so the
        change is served from the next request on."""

        async def handler(request: Request) -> Response:
            caller, limit_headers = await self.admin(request)
            try:
                response = await operation(request, self.catalog_for(caller))
            except CatalogError as exc:
                raise domain_error(exc) from None
            except StoreUnavailable:
                raise errors.store_unavailable() from None
            for name, value in limit_headers:
                response.headers[name] = value
            return response

        return handler

    def routes(self, table: RouteTable) -> list[Route]:
        """One Starlette route per path of `table`, choosing the operation by method (HEAD as GET)."""
        routes = []
        for path, operations in table.items():
            handlers = {method: self.endpoint(operation) for method, operation in operations.items()}
            if "GET" in handlers:
                handlers.setdefault("HEAD", handlers["GET"])

            async def by_method(request: Request, handlers: dict[str, Handler] = handlers) -> Response:
                return await handlers[request.method](request)

            routes.append(Route(path, by_method, methods=list(handlers)))
        return routes
